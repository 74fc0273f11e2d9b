"""The IDX file format (MNIST, Fashion-MNIST) and where Fashion-MNIST's four files are found.

IDX is LeCun's format: a 4-byte magic (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the data. MNIST-style files hold uint8 images (3 dims) or
uint8 labels (1 dim), optionally gzip-compressed. Every malformed file is a :class:`DataError` that
names the file, so a truncated download never surfaces as a NumPy traceback.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from kpid_core.errors import DataError

__all__ = [
    "FASHION_MNIST_APT",
    "FASHION_MNIST_ENV",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_SYSTEM_ROOT",
    "find_fashion_mnist",
    "read_idx",
]

FASHION_MNIST_ENV = "KPID_FASHION_MNIST"
FASHION_MNIST_SYSTEM_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_APT = "apt-get install -y dataset-fashion-mnist"
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_UINT8 = 0x08


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file of unsigned bytes (gzip or plain, told apart by its first bytes).

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        A uint8 array with the file's dimensions, e.g. (60000, 28, 28) for images, (60000,) for labels.

    Raises:
        DataError: the file is missing, truncated, not IDX, or not of unsigned bytes (names the file).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"missing IDX file {str(path)!r}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {str(path)!r}: corrupt or truncated gzip ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{str(path)!r} is not an IDX file (bad magic number)")
    if raw[2] != _UINT8:
        raise DataError(f"{str(path)!r}: IDX type code 0x{raw[2]:02x}, expected 0x08 (unsigned bytes)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{str(path)!r}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(f"{str(path)!r}: truncated or padded IDX file ({len(raw) - header} data bytes, "
                        f"the header {list(dims)} says {expected})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _file_in(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def find_fashion_mnist(root: str | os.PathLike | None = None) -> dict[str, Path]:
    """Locate Fashion-MNIST's four IDX files.

    Args:
        root: a directory holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``, either
            directly or in torchvision's layout ``ROOT/FashionMNIST/raw/``. None = the environment
            variable ``KPID_FASHION_MNIST``, else Debian's ``/usr/share/datasets/fashion-mnist``.

    Returns:
        ``{"train_images", "train_labels", "test_images", "test_labels"} -> path``.

    Raises:
        DataError: one line naming the root searched and how to install the data.
    """
    if root is None:
        root = os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_SYSTEM_ROOT
    base = Path(os.path.expanduser(str(root)))
    hint = (f"install it with `{FASHION_MNIST_APT}` (Debian/Ubuntu, as root), or set data.root or "
            f"${FASHION_MNIST_ENV} to a folder holding the four IDX files")
    for folder in (base, base / "FashionMNIST" / "raw"):
        found = {k: _file_in(folder, stem) for k, stem in FASHION_MNIST_FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
        if any(found.values()):
            missing = [FASHION_MNIST_FILES[k] for k, v in found.items() if v is None]
            raise DataError(f"fashion_mnist: {str(folder)!r} lacks {', '.join(missing)}[.gz]; {hint}")
    raise DataError(f"fashion_mnist: no IDX files in {str(base)!r} (nor in its FashionMNIST/raw/); {hint}")
