"""Small images held in memory as uint8, augmented a whole batch at a time.

Decoding or augmenting one 28-px image at a time in Python costs more than the convolution on it
(Fashion-MNIST: 60k images an epoch). :class:`InMemoryImages` keeps the images as one uint8 tensor
and implements ``__getitems__``, which ``DataLoader`` (and ``Subset``) call with a whole batch of
indices, so the padded random crop, the flip, the normalisation, the channel replication and the
resize run as a few tensor operations per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["InMemoryImages"]


class InMemoryImages(Dataset):
    """uint8 images ``(N, H, W)`` or ``(N, C, H, W)`` with int labels, served as normalised floats.

    Args:
        images: uint8 tensor of the images (grey images may omit the channel dim).
        labels: int64 tensor ``(N,)``.
        mean: per-channel mean of the pixel values in [0, 1] (one value for grey images).
        std: per-channel standard deviation, same shape as ``mean``.
        augment: random crop after zero padding of ``H // 7`` pixels (4 for 28 px) and horizontal flip.
        channels: output channel count; grey images are replicated to it (e.g. 3 for RGB models).
        size: output side in pixels; None = the images' own. Resized bilinearly after augmentation.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                 *, augment: bool = False, channels: int | None = None, size: int | None = None):
        if images.dim() == 3:
            images = images.unsqueeze(1)
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor (N, H, W) or (N, C, H, W)")
        self.images, self.labels = images, labels.long()
        c = images.shape[1]
        self.channels = channels or c
        if self.channels != c and c != 1:
            raise ValueError(f"cannot turn {c}-channel images into {self.channels} channels")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.augment = augment
        self.size = size or images.shape[-1]
        self.pad = max(1, images.shape[-1] // 7)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x, y = self.batch([i])
        return x[0], y[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.batch(indices)
        return list(zip(x, y))

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformed images and labels at ``indices`` as two batched tensors."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        x = self.images[idx].float().div_(255.0)
        if self.augment:
            x = self._crop_and_flip(x)
        x = (x - self.mean) / self.std
        if x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x.contiguous(), self.labels[idx]

    def _crop_and_flip(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        p = self.pad
        padded = F.pad(x, (p, p, p, p))  # zero = black, the background of these images
        oy = torch.randint(0, 2 * p + 1, (n,))
        ox = torch.randint(0, 2 * p + 1, (n,))
        rows = (oy[:, None] + torch.arange(h))[:, None, :, None]  # (n, 1, h, 1)
        cols = (ox[:, None] + torch.arange(w))[:, None, None, :]  # (n, 1, 1, w)
        flip = torch.rand(n) < 0.5
        cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
        b = torch.arange(n)[:, None, None, None]
        ch = torch.arange(x.shape[1])[None, :, None, None]
        return padded[b, ch, rows, cols]
