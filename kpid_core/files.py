"""Whole-file writes: a reader (a resumed trial, a parallel trial, the analysis) sees the old file or
the new one, never half of one.

Each helper writes a temporary file in the target's directory and moves it over the target with
:func:`os.replace`, which is atomic on one filesystem. The temporary name carries the process id, so
parallel writers of the same path (trials training the same cached teacher) never share one: the
last writer wins, with a whole file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_save", "atomic_write", "atomic_write_text", "output_dir", "storage_errors"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Write ``path`` by calling ``write(tmp)`` on a temporary path beside it, then replacing ``path``.

    Args:
        path: the file to write; its directory must exist.
        write: writes the whole content to the path it is given (e.g. ``df.to_csv``).

    Returns:
        ``path`` as a Path. If ``write`` raises, ``path`` is untouched and the temporary file removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` as a whole (see :func:`atomic_write`).

    Args:
        path: the file to write; its directory must exist.
        text: the full content.

    Returns:
        ``path`` as a Path.
    """
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` as a whole file (see :func:`atomic_write`): a kill mid-write leaves
    the previous checkpoint intact.

    Args:
        obj: what ``torch.save`` accepts (state dicts, tensors, plain containers).
        path: the file to write; its directory must exist.

    Returns:
        ``path`` as a Path.
    """
    import torch  # here: the text helpers serve callers that need no torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _storage_error(what: str | None, path: str | os.PathLike, exc: OSError) -> Exception:
    """``what: cannot write PATH: why`` for an output; ``cannot access PATH: why`` when ``what`` is
    None (a file that is not the output's)."""
    from kpid_core.errors import StorageError

    why = exc.strerror or exc.__class__.__name__
    head = f"{what}: cannot write" if what is not None else "cannot access"
    return StorageError(f"{head} {str(path)!r}: {why}")


def output_dir(path: str | os.PathLike, what: str) -> Path:
    """Create the output directory ``path`` (and its parents) and check that a file can be written in it.

    Args:
        path: the directory.
        what: the option or field it came from, named in the error (``--out``).

    Returns:
        ``path`` as a Path. Raises :class:`~kpid_core.errors.StorageError` (one line naming ``what``
        and the path) when it cannot be created or written; nothing in it is touched.
    """
    out = Path(path)
    probe = out / f".write-test.{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _storage_error(what, out, exc) from None
    return out


@contextlib.contextmanager
def storage_errors(what: str, path: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing under ``path`` (full disk, read-only, quota, permissions)
    into a one-line :class:`~kpid_core.errors.StorageError`.

    Args:
        what: the option or field ``path`` came from, named in the error.
        path: the output directory, named in the error when the error does not name a file.
    """
    try:
        yield
    except OSError as exc:
        # a file outside the output (a dataset image, a cache entry) is named, not blamed on ``what``
        ours = exc.filename is None or _is_under(exc.filename, path)
        raise _storage_error(what if ours else None, exc.filename or path, exc) from None


def _is_under(file: str | os.PathLike, folder: str | os.PathLike) -> bool:
    try:
        Path(os.path.abspath(file)).relative_to(os.path.abspath(folder))
        return True
    except ValueError:
        return False
