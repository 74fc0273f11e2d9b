"""Whole-file writes: a reader (a resumed trial, a parallel trial, the analysis) sees the old file or
the new one, never half of one.

Each helper writes a temporary file in the target's directory and moves it over the target with
:func:`os.replace`, which is atomic on one filesystem. The temporary name carries the process id, so
parallel writers of the same path (trials training the same cached teacher) never share one: the
last writer wins, with a whole file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_save", "atomic_write", "atomic_write_text"]


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
