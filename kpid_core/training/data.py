"""Datasets for a trial: the bundled digits, Fashion-MNIST (IDX files, e.g. Debian's package),
CIFAR-10/100 and ImageFolder (ImageNet layout, or small/grey images) from a local directory, and
synthetic tensors for smoke tests.

``build_data(cfg.data, seed)`` returns train/val/test loaders. The split is a deterministic function
of the seed and can be saved (``DataBundle.save_split``) and passed back (``split=``) so that every
trial of a sweep trains and evaluates on exactly the same images. Nothing is ever downloaded.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from kpid_core.choices import AUGMENTS, DATASETS
from kpid_core.config import DataConfig, as_section
from kpid_core.errors import DataError, UnknownNameError
from kpid_core.training.holdout import holdout_split

__all__ = ["AUGMENTS", "DATASETS", "IMAGENET_MEAN", "IMAGENET_STD", "SMALL_MODEL_INPUT", "DataBundle", "build_data", "digits_arrays", "load_split"]

SMALL_MODEL_INPUT = 64  # side that grey 28-px images are resized to for RGB (torchvision) models
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)
_CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta"),
}
_SYNTHETIC_SIZE = (512, 10)  # images, classes


@dataclass
class DataBundle:
    """Loaders and facts about one dataset split. ``input_shape`` is (C, H, W) of one image;
    ``split`` holds the index lists (into the source train set) that define train/val(/test)."""

    train: DataLoader
    val: DataLoader
    test: DataLoader
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = ""
    split: dict[str, Any] = field(default_factory=dict)

    def save_split(self, path: str | os.PathLike) -> Path:
        """Write the split (JSON: dataset name, seed, index lists) so a sweep can share it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.split))
        os.replace(tmp, path)
        return path


def load_split(path: str | os.PathLike) -> dict[str, Any]:
    """Read a split written by :meth:`DataBundle.save_split`."""
    try:
        split = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read data split {str(path)!r}: {exc}") from None
    if not isinstance(split, dict) or "train" not in split or "val" not in split:
        raise DataError(f"data split {str(path)!r} is malformed (expects JSON with 'train' and 'val' index lists)")
    return split


def _tts(idx: np.ndarray, frac: float, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` (fraction ``frac`` to the second part), stratified by label when every class
    has two members and the second part can hold one of each; a plain seeded split otherwise."""
    lab = labels[idx]
    _, counts = np.unique(lab, return_counts=True)
    n_second = int(np.ceil(frac * len(idx)))
    ok = counts.min() >= 2 and len(counts) <= n_second <= len(idx) - len(counts)
    return holdout_split(idx, frac, lab if ok else None, seed)


def _split_indices(labels: np.ndarray, fractions: tuple[float, float], seed: int) -> tuple[list, list, list]:
    """Stratified split of ``range(len(labels))`` into (rest, val, test) with the given fractions."""
    idx = np.arange(len(labels))
    val_f, test_f = fractions
    test_idx: np.ndarray = np.array([], dtype=int)
    if test_f > 0:
        idx, test_idx = _tts(idx, test_f, labels, seed)
    val_idx: np.ndarray = np.array([], dtype=int)
    if val_f > 0:
        idx, val_idx = _tts(idx, val_f / (1.0 - test_f), labels, seed + 1)
    return sorted(idx.tolist()), sorted(val_idx.tolist()), sorted(test_idx.tolist())


def _check_split(split: Mapping, name: str, n: int) -> None:
    if split.get("dataset") not in (None, name) or split.get("n") not in (None, n):
        raise DataError(
            f"data split is for dataset {split.get('dataset')!r} with {split.get('n')} images, "
            f"but data.name={name!r} has {n}"
        )
    for key in ("train", "val", "test"):
        ids = split.get(key) or []
        if ids and (min(ids) < 0 or max(ids) >= n):
            raise DataError(f"data split index out of range for {name!r} ({n} images)")


class _Transformed(Dataset):
    """A view of a dataset through a transform (so train and val can share one source set)."""

    def __init__(self, base: Dataset, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i):
        x, y = self.base[i]
        return self.transform(x), y


def _loaders(train_ds, val_ds, test_ds, cfg, seed: int):
    bs = int(cfg.batch_size)
    nw = int(cfg.num_workers)
    g = torch.Generator()
    g.manual_seed(seed)
    pin = torch.cuda.is_available()
    extra = {"persistent_workers": True} if nw > 0 else {}
    train = DataLoader(train_ds, batch_size=bs, shuffle=True, generator=g, num_workers=nw,
                       pin_memory=pin, drop_last=False, **extra)
    val = DataLoader(val_ds, batch_size=bs * 2, shuffle=False, num_workers=nw, pin_memory=pin, **extra)
    test = DataLoader(test_ds, batch_size=bs * 2, shuffle=False, num_workers=nw, pin_memory=pin, **extra)
    return train, val, test


def _limit_train(split: dict, labels: np.ndarray, cfg, seed: int) -> dict:
    """Keep at most ``data.train_size`` training images (stratified by label, seeded): every dataset's
    split goes through it when it is drawn."""
    n = cfg.train_size
    if n is None or int(n) >= len(split["train"]):
        return split
    tr = np.asarray(split["train"])
    keep, _ = _tts(tr, 1.0 - int(n) / len(tr), labels, seed + 2)
    return {**split, "train": sorted(keep.tolist())}


# --- digits ----------------------------------------------------------------------------------------
_DIGITS_SHAPE = (1797, 65)  # 8x8 pixel values 0-16, then the label


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits: ``(images (1797, 8, 8) with values 0-16, labels (1797,))``.

    The same arrays as ``sklearn.datasets.load_digits()``'s ``images`` and ``target``, read straight
    from the file it reads (``sklearn/datasets/data/digits.csv.gz``, located without importing
    scikit-learn): importing scikit-learn costs about a second, paid by every process that loads
    digits — each trial of a sweep on them. Falls back to ``load_digits`` if that file is not where
    scikit-learn ships it.

    Returns:
        ``(images, labels)`` as float64 and int arrays.
    """
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, mode="rt", encoding="utf-8") as f:
                data = np.loadtxt(f, delimiter=",")
            if data.shape == _DIGITS_SHAPE:
                return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def _digits(cfg, seed: int, split: Mapping | None, channels: int | None) -> DataBundle:
    images, target = digits_arrays()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N,1,8,8) in [0,1]
    y = torch.tensor(target, dtype=torch.long)
    size = int(cfg.image_size or 16)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    n = len(y)
    if split is None:
        tr, va, te = _split_indices(target, (cfg.val_fraction, cfg.test_fraction), seed)
        split = _limit_train({"dataset": "digits", "seed": seed, "n": n, "train": tr, "val": va, "test": te},
                             target, cfg, seed)
    _check_split(split, "digits", n)
    tr = torch.tensor(split["train"], dtype=torch.long)
    # Normalise with statistics of the training images only (no peeking at val/test).
    mean, std = float(x[tr].mean()), float(x[tr].std())
    x = (x - mean) / std
    c = channels or 1
    if c != 1:
        x = x.expand(-1, c, -1, -1).contiguous()
    ds = TensorDataset(x, y)
    train, val, test = _loaders(Subset(ds, split["train"]), Subset(ds, split["val"]),
                                Subset(ds, split["test"]), cfg, seed)
    return DataBundle(train, val, test, 10, (c, size, size), (mean,) * c, (std,) * c, "digits", dict(split))


# --- synthetic -------------------------------------------------------------------------------------
def _synthetic(cfg, seed: int, split: Mapping | None, channels: int | None) -> DataBundle:
    """Random images whose class shifts the mean of one channel-row band: learnable, but only just."""
    n, k = _SYNTHETIC_SIZE
    c, size = channels or 3, int(cfg.image_size or 16)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    x = torch.randn(n, c, size, size, generator=g)
    band = torch.linspace(0, k, size).floor().clamp(max=k - 1).long()  # row -> class it signals
    x += 1.5 * (band.view(1, 1, size, 1) == y.view(n, 1, 1, 1)).float()
    if split is None:
        tr, va, te = _split_indices(y.numpy(), (cfg.val_fraction, cfg.test_fraction), seed)
        split = _limit_train({"dataset": "synthetic", "seed": seed, "n": n, "train": tr, "val": va, "test": te},
                             y.numpy(), cfg, seed)
    _check_split(split, "synthetic", n)
    ds = TensorDataset(x, y)
    train, val, test = _loaders(Subset(ds, split["train"]), Subset(ds, split["val"]),
                                Subset(ds, split["test"]), cfg, seed)
    return DataBundle(train, val, test, k, (c, size, size), (0.0,) * c, (1.0,) * c, "synthetic", dict(split))


# --- Fashion-MNIST ---------------------------------------------------------------------------------
def _pixel_stats(images: np.ndarray) -> tuple[tuple[float], tuple[float]]:
    """Mean and sample std of uint8 pixels scaled to [0, 1], from their 256-bin histogram (exact,
    without a float copy of the images)."""
    counts = np.bincount(images.ravel(), minlength=256).astype(np.float64)
    v = np.arange(256, dtype=np.float64) / 255.0
    n = counts.sum()
    mean = float(counts @ v / n)
    var = float(counts @ (v - mean) ** 2 / (n - 1))
    return (mean,), (math.sqrt(var),)


def _check_fashion_arrays(arrays: Mapping[str, np.ndarray], files: Mapping[str, Any]) -> None:
    """N images and N labels in each part, at least one image, labels in 0..9, one image size: a
    wrong file fails here in one line, not as an index error deep in training."""
    for part in ("train", "test"):
        xi, yi = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        where = f"fashion_mnist: {str(files[part + '_images'])!r} holds {xi.shape}, {str(files[part + '_labels'])!r}"
        if xi.ndim != 3 or yi.ndim != 1 or len(xi) != len(yi):
            raise DataError(f"{where} holds {yi.shape}: expected N images and N labels")
        if len(yi) == 0:
            raise DataError(f"{where} holds {yi.shape}: expected at least one image")
        if int(yi.min()) < 0 or int(yi.max()) > 9:
            raise DataError(f"fashion_mnist: {str(files[part + '_labels'])!r} holds labels "
                            f"{int(yi.min())}..{int(yi.max())}: expected the 10 classes 0..9")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataError(f"fashion_mnist: train images are {arrays['train_images'].shape[1:]} px, test images "
                        f"{arrays['test_images'].shape[1:]}: expected one size")


def _fashion_mnist(cfg, seed: int, split: Mapping | None, channels: int | None) -> DataBundle:
    """Fashion-MNIST from its IDX files: 60k train (val carved by seed) + the fixed 10k test set,
    held in memory as uint8; padded random crop + flip for training; the training images' own
    mean/std. One grey channel for flexible-input models; replicated to 3 and resized to
    :data:`SMALL_MODEL_INPUT` px for RGB models, unless ``data.image_size`` says otherwise."""
    from kpid_core.training.idx import find_fashion_mnist, read_idx
    from kpid_core.training.tensor_images import InMemoryImages

    if cfg.augment == "imagenet":
        raise DataError("data.augment=imagenet is for full-size photos; fashion_mnist takes small or none")
    files = find_fashion_mnist(cfg.root)
    arrays = {k: read_idx(p) for k, p in files.items()}
    _check_fashion_arrays(arrays, files)
    ytr = arrays["train_labels"].astype(np.int64)
    n = len(ytr)
    if split is None:
        tr, va, _ = _split_indices(ytr, (float(cfg.val_fraction), 0.0), seed)
        split = _limit_train({"dataset": "fashion_mnist", "seed": seed, "n": n, "train": tr, "val": va, "test": []},
                             ytr, cfg, seed)
    _check_split(split, "fashion_mnist", n)
    xtr = torch.from_numpy(arrays["train_images"].copy())
    mean, std = _pixel_stats(arrays["train_images"][split["train"]])
    c = channels or int(cfg.channels or 1)
    native = xtr.shape[-1]
    size = int(cfg.image_size or (SMALL_MODEL_INPUT if c == 3 else native))
    labels = torch.from_numpy(ytr)

    def view(images, lab, augment):
        return InMemoryImages(images, lab, mean, std, augment=augment, channels=c, size=size)

    xte = torch.from_numpy(arrays["test_images"].copy())
    yte = torch.from_numpy(arrays["test_labels"].astype(np.int64))
    train_ds = Subset(view(xtr, labels, cfg.augment != "none"), split["train"])
    val_ds = Subset(view(xtr, labels, False), split["val"])
    train, val, test = _loaders(train_ds, val_ds, view(xte, yte, False), cfg, seed)
    return DataBundle(train, val, test, 10, (c, size, size), mean * c, std * c, "fashion_mnist", dict(split))


# --- CIFAR -----------------------------------------------------------------------------------------
def _require_root(name: str, cfg, expect: str) -> Path:
    root = cfg.root
    if not root:
        raise DataError(f"data.root is required for dataset {name!r}; {name} expects {expect}")
    root = Path(os.path.expanduser(str(root)))
    if not root.is_dir():
        raise DataError(f"data.root {str(root)!r} does not exist; {name} expects {expect}")
    return root


def _unpickle(path: Path, name: str, expect: str) -> dict:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        raise DataError(f"{name}: missing {str(path)!r}; {name} expects {expect}") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a malformed file
        raise DataError(f"{name}: cannot read {str(path)!r} ({type(exc).__name__}); {name} expects {expect}") from None
    if not isinstance(d, dict):
        raise DataError(f"{name}: {str(path)!r} is not a CIFAR pickle; {name} expects {expect}")
    return d


def _cifar(name: str, cfg, seed: int, split: Mapping | None, channels: int | None) -> DataBundle:
    from kpid_core._tv import torchvision

    T = torchvision.transforms

    folder, train_files, test_files, meta = _CIFAR_LAYOUT[name]
    expect = f"ROOT/{folder}/{{{','.join(train_files + test_files)},{meta}}} (the python-pickle release)"
    if name == "cifar10":
        expect = f"ROOT/{folder}/{{data_batch_1..5,test_batch,batches.meta}} (the python-pickle release)"
    root = _require_root(name, cfg, expect) / folder
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def read(files):
        xs, ys = [], []
        for fn in files:
            d = _unpickle(root / fn, name, expect)
            if "data" not in d or label_key not in d:
                raise DataError(f"{name}: {str(root / fn)!r} lacks 'data'/{label_key!r}; {name} expects {expect}")
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.extend(int(v) for v in d[label_key])
        return np.concatenate(xs).transpose(0, 2, 3, 1), np.asarray(ys, dtype=np.int64)  # NHWC

    meta_d = _unpickle(root / meta, name, expect)
    classes = meta_d.get("label_names") or meta_d.get("fine_label_names") or []
    xtr, ytr = read(train_files)
    xte, yte = read(test_files)
    num_classes = len(classes) or int(max(ytr.max(), yte.max()) + 1)
    size = int(cfg.image_size or 32)
    norm = T.Normalize(_CIFAR_MEAN, _CIFAR_STD)
    base = [T.ToTensor()] + ([T.Resize(size, antialias=True)] if size != 32 else [])
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *base, norm])
    eval_tf = T.Compose([*base, norm])

    class _Arr(Dataset):
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            from PIL import Image

            return Image.fromarray(self.x[i]), int(self.y[i])

    n = len(ytr)
    if split is None:
        tr, va, _ = _split_indices(ytr, (float(cfg.val_fraction), 0.0), seed)
        split = _limit_train({"dataset": name, "seed": seed, "n": n, "train": tr, "val": va, "test": []}, ytr, cfg, seed)
    _check_split(split, name, n)
    src = _Arr(xtr, ytr)
    train_ds = Subset(_Transformed(src, train_tf), split["train"])
    val_ds = Subset(_Transformed(src, eval_tf), split["val"])
    test_ds = _Transformed(_Arr(xte, yte), eval_tf)
    train, val, test = _loaders(train_ds, val_ds, test_ds, cfg, seed)
    return DataBundle(train, val, test, num_classes, (3, size, size), _CIFAR_MEAN, _CIFAR_STD, name, dict(split))


# --- ImageFolder (ImageNet layout) -----------------------------------------------------------------
_GREY_MEAN, _GREY_STD = (0.449,), (0.226,)  # ImageNet's statistics averaged over R, G, B


def _pil_loader(mode: str):
    def load(path: str):
        from PIL import Image

        with _image_errors(path), open(path, "rb") as f:
            return Image.open(f).convert(mode)

    return load


@contextmanager
def _image_errors(path: str) -> Iterator[None]:
    """An unreadable image (truncated, not an image, no permission) as one DataError naming the file
    (PIL's UnidentifiedImageError is an OSError without a file name)."""
    from PIL import Image

    try:
        yield
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        why = getattr(exc, "strerror", None) or f"{exc.__class__.__name__}: {exc}"
        raise DataError(f"imagefolder: cannot read image {path!r} ({why}); remove or replace the file") from None


def _native_size(folder) -> int:
    """Side of the first training image (small-image folders keep their own size by default)."""
    from PIL import Image

    path = folder.samples[0][0]
    with _image_errors(path), Image.open(path) as im:
        return max(im.size)


def _folder_transforms(augment: str, size: int, mean, std):
    """(train, eval) transforms: ImageNet's RandomResizedCrop recipe, or the small-image one
    (padded random crop + flip at the native size), or none (resize only)."""
    from kpid_core._tv import torchvision

    T = torchvision.transforms
    norm = T.Normalize(mean, std)
    if augment == "imagenet":
        resize = max(size, round(size * 256 / 224))  # 256 for 224, the standard ratio
        return (T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), norm]),
                T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), norm]))
    fixed = [T.Resize((size, size), antialias=True)]
    eval_tf = T.Compose([*fixed, T.ToTensor(), norm])
    if augment == "none":
        return eval_tf, eval_tf
    pad = max(1, size // 7)
    return T.Compose([*fixed, T.RandomCrop(size, padding=pad), T.RandomHorizontalFlip(), T.ToTensor(), norm]), eval_tf


def _imagefolder(cfg, seed: int, split: Mapping | None, channels: int | None) -> DataBundle:
    from kpid_core._tv import torchvision

    expect = "ROOT/train/<class>/<image> and ROOT/val/<class>/<image> (ImageNet layout, same class folders)"
    root = _require_root("imagefolder", cfg, expect)
    for sub in ("train", "val"):
        if not (root / sub).is_dir():
            raise DataError(f"imagefolder: missing {str(root / sub)!r}; imagefolder expects {expect}")
    augment = cfg.augment or "imagenet"
    c = channels or int(cfg.channels or 3)
    loader = _pil_loader("L" if c == 1 else "RGB")
    try:
        src = torchvision.datasets.ImageFolder(str(root / "train"), loader=loader)
        test_src = torchvision.datasets.ImageFolder(str(root / "val"), loader=loader)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"imagefolder: {exc}; imagefolder expects {expect}") from None
    if test_src.classes != src.classes:
        raise DataError(f"imagefolder: ROOT/val class folders differ from ROOT/train; imagefolder expects {expect}")
    if len(src.classes) < 2:
        raise DataError(f"imagefolder: {len(src.classes)} class folder ({', '.join(src.classes)}) under ROOT/train: "
                        "a classifier needs at least 2 classes")
    size = int(cfg.image_size or (224 if augment == "imagenet" else _native_size(src)))
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if c == 3 else (_GREY_MEAN, _GREY_STD)
    train_tf, eval_tf = _folder_transforms(augment, size, mean, std)
    n = len(src)
    if split is None:
        tr, va, _ = _split_indices(np.asarray(src.targets), (float(cfg.val_fraction), 0.0), seed)
        split = _limit_train({"dataset": "imagefolder", "seed": seed, "n": n, "train": tr, "val": va, "test": []},
                             np.asarray(src.targets), cfg, seed)
    _check_split(split, "imagefolder", n)
    train_ds = Subset(_Transformed(_Untransformed(src), train_tf), split["train"])
    val_ds = Subset(_Transformed(_Untransformed(src), eval_tf), split["val"])
    test_ds = _Transformed(_Untransformed(test_src), eval_tf)
    train, val, test = _loaders(train_ds, val_ds, test_ds, cfg, seed)
    return DataBundle(train, val, test, len(src.classes), (c, size, size), mean, std, "imagefolder", dict(split))


class _Untransformed(Dataset):
    def __init__(self, folder):
        self.folder = folder

    def __len__(self):
        return len(self.folder.samples)

    def __getitem__(self, i):
        path, y = self.folder.samples[i]
        return self.folder.loader(path), y


def build_data(data_cfg: Any, seed: int = 0, *, split: Mapping | str | os.PathLike | None = None,
               channels: int | None = None) -> DataBundle:
    """Build the loaders of ``data_cfg.name``.

    Args:
        data_cfg: a ``DataConfig`` or a dict with the same keys.
        seed: draws the validation split (when ``split`` is None) and the loaders' shuffling.
        split: a split dict or a JSON file from :meth:`DataBundle.save_split` (the sweep's shared
            split); None = derive it from ``seed``.
        channels: the channel count the model needs (e.g. 3 for torchvision models; None = the
            data's own, ``data.channels``). Grey data (digits, fashion_mnist, synthetic,
            imagefolder) is replicated to it; CIFAR has 3 only.

    Returns:
        The train/val/test loaders with the data's facts (classes, input shape, split).

    Raises:
        UnknownNameError: an unknown ``data.name``.
        DataError: data that is missing, corrupt or does not fit the request (one line each).
    """
    data_cfg = as_section(DataConfig, data_cfg)
    name = data_cfg.name
    if name not in DATASETS:
        raise UnknownNameError(f"unknown dataset data.name={name!r}; valid datasets: {', '.join(DATASETS)}")
    if split is not None and not isinstance(split, Mapping):
        split = load_split(split)
    if name == "digits":
        return _digits(data_cfg, seed, split, channels)
    if name == "synthetic":
        return _synthetic(data_cfg, seed, split, channels)
    if name == "fashion_mnist":
        return _fashion_mnist(data_cfg, seed, split, channels)
    if name == "imagefolder":
        return _imagefolder(data_cfg, seed, split, channels)
    if channels not in (None, 3):
        raise DataError(f"dataset {name!r} has 3 channels; the model asks for {channels}")
    return _cifar(name, data_cfg, seed, split, channels)
