"""Bounded waits on the sweep's own Ray tasks (the shared preparation, the baselines).

A task that no node can hold fails before it is submitted; one that does not start within
``start_s`` (its resources are held by something else), or whose heartbeat stops for ``stall_s``
(its process is frozen or its node is gone), is cancelled and ends the wait with one line naming what
it asked for and what the cluster has. The task proves it is alive by touching a heartbeat file in
its output directory (storage that every node mounts, as the sweep requires) every
:data:`HEARTBEAT_S` seconds from a thread of its own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpid_core.errors import KPIDError

__all__ = [
    "HEARTBEAT_FILE", "HEARTBEAT_S", "TaskWaitError", "TaskWaits", "check_placeable", "heartbeat", "submit",
    "wait_any",
]

HEARTBEAT_FILE = ".heartbeat"
HEARTBEAT_S = 2.0


class TaskWaitError(KPIDError):
    """A task could not be placed, did not start, or stopped responding; the message says which."""


@dataclass(frozen=True)
class TaskWaits:
    """The bounds (seconds) of a wait: ``start_s`` until the task runs, ``stall_s`` of heartbeat silence."""

    start_s: float = 600.0
    stall_s: float = 600.0


@dataclass
class _Pending:
    ref: Any
    what: str
    ask: dict[str, float]
    beat: Path
    since: float


def heartbeat(out_dir: str | os.PathLike, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` while a thread touches ``out_dir/.heartbeat`` (called inside the Ray task).

    Args:
        out_dir: the task's output directory (created if missing).
        fn: the work.
        *args: its arguments.

    Returns:
        What ``fn`` returned.
    """
    beat = Path(out_dir) / HEARTBEAT_FILE
    beat.parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def touch() -> None:
        while not stop.is_set():
            beat.touch()
            stop.wait(HEARTBEAT_S)

    t = threading.Thread(target=touch, daemon=True, name="kpid-heartbeat")
    t.start()
    try:
        return fn(*args)
    finally:
        stop.set()


def _ask_text(ask: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in ask.items() if v) or "no resources"


def _have_text(res: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(res.items()) if k in ("CPU", "GPU")) or "nothing"


def check_placeable(what: str, ask: dict[str, float]) -> None:
    """Raise :class:`TaskWaitError` unless some alive node of the cluster has every resource of ``ask``.

    Args:
        what: the task's name in the message.
        ask: its resources, ``{"CPU": c, "GPU": g}``.
    """
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if any(all(n["Resources"].get(k, 0.0) >= v for k, v in ask.items() if v) for n in nodes):
        return
    biggest = max(nodes, key=lambda n: (n["Resources"].get("GPU", 0), n["Resources"].get("CPU", 0)), default=None)
    raise TaskWaitError(f"{what}: asks for {_ask_text(ask)} but no node of the cluster has that (largest node: "
                        f"{_have_text(biggest['Resources']) if biggest else 'no node alive'})")


def submit(task: Any, args: tuple, *, what: str, ask: dict[str, float], out_dir: str | os.PathLike) -> _Pending:
    """Submit ``task.remote(*args)`` after checking that some node can hold ``ask``.

    Args:
        task: a ``ray.remote`` function whose body calls :func:`heartbeat` on ``out_dir``.
        args: its arguments.
        what: the task's name in messages (``baseline mobilenet_v3_small-0.5``).
        ask: its resources, ``{"CPU": c, "GPU": g}``.
        out_dir: where its heartbeat appears.

    Returns:
        The pending task, for :func:`wait_any`.
    """
    check_placeable(what, ask)
    beat = Path(out_dir) / HEARTBEAT_FILE
    beat.unlink(missing_ok=True)  # a previous run's heartbeat must not count as this one's start
    return _Pending(task.remote(*args), what, ask, beat, time.monotonic())


def _overdue(p: _Pending, waits: TaskWaits, now: float) -> str | None:
    try:
        age = time.time() - p.beat.stat().st_mtime
    except FileNotFoundError:
        if now - p.since > waits.start_s:
            return f"did not start within {waits.start_s:g} s"
        return None
    if age > waits.stall_s:
        return f"stopped responding (no heartbeat for {age:.0f} s, bound {waits.stall_s:g} s)"
    return None


def wait_any(pending: list[_Pending], waits: TaskWaits, poll_s: float = 1.0) -> tuple[_Pending, list[_Pending]]:
    """Wait until one of ``pending`` is done, checking the bounds every ``poll_s`` seconds.

    Args:
        pending: submitted tasks (:func:`submit`).
        waits: the bounds.
        poll_s: seconds between checks (short, so that a signal is handled promptly).

    Returns:
        ``(done, rest)``. Raises :class:`TaskWaitError` (after cancelling every pending task) when one
        of them broke a bound.
    """
    import ray

    by_ref = {p.ref: p for p in pending}
    while True:
        ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=poll_s)
        if ready:
            done = by_ref.pop(ready[0])
            return done, list(by_ref.values())
        now = time.monotonic()
        for p in by_ref.values():
            why = _overdue(p, waits, now)
            if why:
                for q in by_ref.values():
                    ray.cancel(q.ref, force=True)
                raise TaskWaitError(f"{p.what} {why}: it asked for {_ask_text(p.ask)}; the cluster has "
                                    f"{_have_text(ray.cluster_resources())} in all, "
                                    f"{_have_text(ray.available_resources())} free")
