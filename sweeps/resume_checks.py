"""Before ``--resume``: the files a resumed sweep reads are checked once, up front, so that a corrupt
or truncated one (a full disk, a kill mid-copy, a hand edit) ends the run with one line naming it
instead of a traceback deep inside Optuna, Tune or a trial."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from kpid_core.errors import SpecError

__all__ = ["check_resumable", "check_shared"]


def _bad(path: Path, what: str, why: str, fix: str = "") -> SpecError:
    fix = fix or "restore it from a backup or start a new sweep with --name NEW_NAME"
    return SpecError(f"--resume: {what} {str(path)!r} is corrupt or truncated ({why}); {fix}")


def check_resumable(exp_dir: str | Path) -> None:
    """Check the Optuna study and Tune's experiment state of an experiment being resumed.

    Args:
        exp_dir: the experiment directory.

    Raises:
        SpecError: ``optuna.db`` is not a sound SQLite database, or an ``experiment_state-*.json``
            is not valid JSON; the message names the file.
    """
    exp = Path(exp_dir)
    db = exp / "optuna.db"
    if db.exists():
        try:
            # read-write, not ``mode=ro``: a driver killed mid-write leaves a hot journal, which SQLite
            # rolls back on the first read, as Optuna's own open would; a read-only connection cannot,
            # and reports "attempt to write a readonly database" for a sound study
            with closing(sqlite3.connect(f"file:{db}?mode=rw", uri=True)) as con:
                status = con.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise _bad(db, "the Optuna study", str(exc)) from None
        if status != "ok":
            raise _bad(db, "the Optuna study", str(status)[:120])
    for f in sorted(exp.glob("experiment_state-*.json")):
        try:
            json.loads(f.read_text())
        except ValueError as exc:
            raise _bad(f, "Tune's experiment state", str(exc)[:120]) from None


def check_shared(shared: Any) -> None:
    """Check that the shared artifacts of a resumed sweep load: the split, the teacher, every
    importance file (``torch.load(weights_only=True)``, as trials load them).

    Args:
        shared: what the preparation returned (the directory of ``shared.json``; other values, from a
            replaced preparation function, are not checked).

    Raises:
        SpecError: a file is missing, corrupt or truncated; the message names it.
    """
    if not isinstance(shared, str) or not (Path(shared) / "shared.json").is_file():
        return
    import torch

    from kpid_core.shared import SharedArtifacts

    art = SharedArtifacts.load(shared)
    fix = f"delete {str(Path(shared) / 'prepared.json')!r} to prepare the shared artifacts again"
    try:
        json.loads(art.split.read_text())
    except (OSError, ValueError) as exc:
        raise _bad(art.split, "the shared data split", exc.__class__.__name__, fix) from None
    for what, path in [("the shared teacher", art.teacher),
                       *((f"the shared importance ({m})", p) for m, p in art.importance.items())]:
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
            raise _bad(path, what, exc.__class__.__name__, fix) from None
