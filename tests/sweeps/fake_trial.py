"""A stand-in with the signatures of ``kpid_core.trial.prepare_shared``/``run_trial`` (tests only).

Behaviour is steered per sweep by ``data.root`` = a directory holding ``behaviour.json``; the fake
writes markers there (prepare calls, trial starts), so tests can count what happened where.
Its accuracy is a deterministic function of the config, so searches have something to optimise.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kpid_core.errors import NonFiniteLossError


def _behaviour(cfg: dict) -> tuple[Path, dict]:
    root = Path(cfg["data"]["root"])
    f = root / "behaviour.json"
    return root, (json.loads(f.read_text()) if f.exists() else {})


def _mark(root: Path, kind: str, text: str = "") -> None:
    with open(root / f"{kind}.log", "a") as f:
        f.write(f"{os.getpid()} {text}\n")


def fake_prepare(cfg: dict, out_dir: Path, metrics: list[str]) -> dict:
    root, beh = _behaviour(cfg)
    _mark(root, "prepare", ",".join(metrics))
    time.sleep(float(beh.get("prepare_sleep", 0.0)))
    out_dir = Path(out_dir)
    for m in metrics:
        (out_dir / f"importance_{m}.json").write_text("{}")
    (out_dir / "teacher.json").write_text("{}")
    return {"dir": str(out_dir), "metrics": list(metrics)}


def fake_run_trial(cfg: dict, on_epoch: Callable | None = None, *, out_dir: Any = None, shared: Any = None,
                   checkpoint_dir: Any = None, resume_from: Any = None) -> dict:
    root, beh = _behaviour(cfg)
    assert shared and Path(shared["dir"], f"importance_{cfg['prune']['metric']}.json").exists()
    budget = float(cfg["prune"]["budget"])
    kd = float(cfg["distill"]["kd_weight"])
    epochs = int(cfg["train"]["epochs"])
    start = 0
    if resume_from is not None:
        start = json.loads(Path(resume_from, "state.json").read_text())["epoch"]
        _mark(root, "resume", f"{Path(out_dir).parent.name if out_dir else '?'} {start}")
    tid = Path(out_dir).parent.name if out_dir is not None else "?"
    _mark(root, "trial", f"{tid} budget={budget} start={start}")

    def acc_at(e: int) -> float:
        return min(0.99, 0.5 + 0.4 * budget + 0.02 * kd + 0.01 * e)

    # A trial resumed from its last epoch's checkpoint (the driver died after that report) trains no
    # epoch and still returns its final metrics, as the real ``fit`` does from its saved history.
    acc = acc_at(epochs)
    for e in range(start + 1, epochs + 1):
        time.sleep(float(beh.get("sleep", 0.0)))
        if cfg["train"]["lr"] >= float(beh.get("nan_lr", 1e9)):
            raise NonFiniteLossError(f"loss is nan at epoch {e}")
        acc = acc_at(e)
        if checkpoint_dir is not None:
            Path(checkpoint_dir, "state.json").write_text(json.dumps({"epoch": e}))
        if on_epoch is not None:
            on_epoch(e, {"epoch": e, "accuracy": acc, "loss": 1.0 / e, "macs": int(1e6 * budget),
                         "macs_ratio": budget, "budget": budget, "params": 1000})
    _mark(root, "done", tid)
    return {"accuracy": acc - 0.01, "val_accuracy": acc, "teacher_accuracy": 0.95, "macs": int(1e6 * budget),
            "macs_dense": 1_000_000, "macs_ratio": budget, "params": 1000, "params_dense": 2000,
            "budget": budget, "metric": cfg["prune"]["metric"], "status": "finished", "epochs_done": epochs,
            "times": {"teacher_s": 0.0, "importance_s": 0.0, "prune_s": 0.0, "finetune_s": 0.0,
                      "total_s": 0.0}, "config": cfg}


def thread_probe(cfg: dict, torch_first: bool = True) -> tuple[int | None, int | None, int, str, dict]:
    """(torch threads before, what use_allotted_threads set, torch threads after, OMP_NUM_THREADS, cfg).

    ``torch_first``: torch is imported before use_allotted_threads (else after it; "before" is then None).
    """
    import sys

    from sweeps.threads import cap_loader_workers, use_allotted_threads

    assert "torch" not in sys.modules, "a fresh worker: nothing imported torch yet"
    before = None
    if torch_first:
        import torch

        before = torch.get_num_threads()
    n = use_allotted_threads()
    import torch

    return before, n, torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS", ""), cap_loader_workers(cfg, n)


def hold(seconds: float) -> None:
    """A task that only holds its resources (another job on the cluster)."""
    time.sleep(seconds)


def freezing_prepare(cfg: dict, out_dir: Path, metrics: list[str]) -> dict:
    """A preparation whose process freezes (SIGSTOP) once its heartbeat has started: a hung task."""
    import signal

    time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGSTOP)
    return {}


def fake_baseline(cfg: dict, arch: str, width: float | None = None, on_epoch: Callable | None = None, *,
                  out_dir: Any = None, shared: Any = None, epochs: int | None = None) -> dict:
    """Stand-in for ``kpid_core.baseline.run_baseline``: marks its start and end, sleeps as told."""
    root, beh = _behaviour(cfg)
    assert shared and Path(shared["dir"], "teacher.json").exists()
    _mark(root, "baseline", arch)
    time.sleep(float(beh.get("baseline_sleep", 0.0)))
    _mark(root, "baseline_done", arch)
    w = float(width or 0.5)
    return {"accuracy": 0.7, "val_accuracy": 0.71, "teacher_accuracy": 0.95, "macs": int(1e6 * w),
            "macs_dense": 1_000_000, "macs_ratio": w, "params": 500, "params_dense": 2000, "budget": None,
            "metric": None, "status": "finished", "epochs_done": int(epochs or 1), "kind": "baseline",
            "arch": arch, "width": w}


# -- counting wrappers around the REAL kpid_core functions ---------------------------------------
def _count(kind: str) -> None:
    d = os.environ.get("KPID_TEST_MARKERS")
    if d:
        with open(Path(d) / f"{kind}.log", "a") as f:
            f.write(f"{os.getpid()}\n")


def counting_prepare(cfg: dict, out_dir: Path, metrics: list[str]) -> Any:
    """Real ``prepare_shared`` with markers for each preparation, teacher training and importance."""
    import kpid_core.trial as kt

    _patch_counters(kt)
    _count("prepare")
    return kt.prepare_shared(cfg, out_dir, metrics)


def counting_run_trial(cfg: dict, on_epoch: Callable | None = None, **kw: Any) -> dict:
    """Real ``run_trial`` with the same markers, so a test sees whether a trial re-did shared work."""
    import kpid_core.trial as kt

    _patch_counters(kt)
    _count("trial")
    return kt.run_trial(cfg, on_epoch, **kw)


def _patch_counters(kt: Any) -> None:
    """Count teacher trainings and importance computations where the trial looks them up: the shared
    preparation and the teacher (kpid_core.shared) and the prune phase's own scoring (kpid_core.prune_phase)."""
    if getattr(kt, "_counting", False):
        return
    import kpid_core.prune_phase as phase
    from kpid_core import shared

    orig_teacher, orig_imp = shared.get_teacher, shared.teacher_importance

    def get_teacher(*a: Any, **k: Any) -> Any:
        _count("teacher")
        return orig_teacher(*a, **k)

    def importance(*a: Any, **k: Any) -> Any:
        _count("importance")
        return orig_imp(*a, **k)

    shared.get_teacher, shared.teacher_importance, phase.teacher_importance = get_teacher, importance, importance
    kt._counting = True
