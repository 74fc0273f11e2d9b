"""Same-data baselines of a sweep (``baselines:`` in the sweep file), run as Ray tasks.

Each run trains a compact architecture with ``kpid_core.baseline.run_baseline`` on the sweep's
shared split under the shared teacher, with the resources of one trial, after the pruned trials
(they do not compete with them for slots). Results go to ``EXPERIMENT/baselines/LABEL/metrics.json``;
``--resume`` keeps the finished ones and runs the rest. Rows have ``kind == "baseline"``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kpid_core.results_schema import FINAL_KEY
from sweeps.results import trial_row
from sweeps.space import BUDGET_KEY, SweepSpec, apply_params

__all__ = ["baseline_row", "run_baselines"]

def _run_one(cfg: dict, run: dict, out_dir: str, shared: Any, baseline_fn: Any) -> dict:
    from kpid_core.errors import NonFiniteLossError
    from sweeps.threads import cap_loader_workers, use_allotted_threads
    from sweeps.waits import heartbeat

    if baseline_fn is None:
        from kpid_core.baseline import run_baseline as baseline_fn
    cap_loader_workers(cfg, use_allotted_threads())
    try:
        return heartbeat(out_dir, lambda: baseline_fn(cfg, run["model"], run["width"], out_dir=out_dir,
                                                      shared=shared, epochs=run["epochs"]))
    except NonFiniteLossError as exc:  # diverged: a result, not a crash to retry
        return {"status": "error", "error": f"NonFiniteLossError: {exc}"}


def baseline_row(run: dict[str, Any], base: dict[str, Any], m: dict[str, Any]) -> dict[str, Any]:
    """One trials-table row for a baseline ``run`` (from ``SweepSpec.baseline_runs``) with metrics ``m``:
    a :func:`~sweeps.results.trial_row` of the baseline's own config, of ``kind == "baseline"``."""
    params: dict[str, Any] = {"model.name": run["model"], "model.width": m.get("width", run["width"]),
                              "distill.inner_weight": 0.0, "prune.metric": None}
    if run["budget"] is not None:
        params[BUDGET_KEY] = run["budget"]
    if run["epochs"]:
        params["train.epochs"] = run["epochs"]
    finished = m.get("status") == "finished"
    row = trial_row(f"baseline-{run['label']}", params, base, {**m, FINAL_KEY: True} if finished else m,
                    None if finished else str(m.get("error", "failed"))[:500])
    row.update(kind="baseline", budget=run["budget"] if run["budget"] is not None else math.nan, match=None)
    return row


def run_baselines(spec: SweepSpec, exp_path: Path, shared: Any, *, num_cpus: float, num_gpus: float,
                  out: Any, baseline_fn: Any = None, waits: Any = None) -> list[dict[str, Any]]:
    """Run the sweep's baselines that have no finished result yet; return a row for every baseline.

    Args:
        spec: the sweep.
        exp_path: the experiment directory.
        shared: the prepared shared artifacts.
        num_cpus: CPUs of each baseline task.
        num_gpus: GPUs of each baseline task.
        out: where progress lines go.
        baseline_fn: replaces ``kpid_core.baseline.run_baseline`` (same signature); tests use it.
        waits: bounds of the waits (:class:`sweeps.waits.TaskWaits`; default its defaults).

    Returns:
        One trials-table row per baseline. Raises :class:`sweeps.waits.TaskWaitError` when a baseline
        cannot be placed, does not start or stops responding (the finished ones are kept on disk).
    """
    import ray

    from kpid_core.files import atomic_write_text
    from sweeps.waits import TaskWaits, submit, wait_any

    runs = spec.baseline_runs()
    if not runs:
        return []
    root = Path(exp_path) / "baselines"
    done: dict[str, dict] = {}
    for r in runs:
        f = root / r["label"] / "metrics.json"
        try:
            m = json.loads(f.read_text()) if f.is_file() else {}
        except ValueError:  # cut short by a full disk or a kill: train it again
            m = {}
        if isinstance(m, dict) and m.get("status") == "finished":
            done[r["label"]] = m
    todo = [r for r in runs if r["label"] not in done]
    if todo:
        print(f"running {len(todo)} same-data baseline(s) ...", file=out, flush=True)
    task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=spec.max_failures)(_run_one)
    pending, by_what = [], {}
    for r in todo:
        params = {BUDGET_KEY: r["budget"]} if r["budget"] is not None else {}
        d = root / r["label"]
        p = submit(task, (apply_params(spec.base, params), r, str(d), shared, baseline_fn),
                   what=f"baseline {r['label']}", ask={"CPU": num_cpus, "GPU": num_gpus}, out_dir=d)
        pending.append(p)
        by_what[p.what] = r
    while pending:
        ready, pending = wait_any(pending, waits or TaskWaits())
        r = by_what[ready.what]
        try:
            m = ray.get(ready.ref)  # ready: returns at once
        except Exception as exc:  # noqa: BLE001 - a crashed baseline is a row with its error, not a crashed sweep
            m = {"status": "error", "error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:300]}"}
        done[r["label"]] = m
        atomic_write_text(root / r["label"] / "metrics.json", json.dumps(m, indent=1, default=str))
        acc = f"acc={m['accuracy']:.4f} MACs={int(m['macs']):,}" if m.get("status") == "finished" else m.get("error")
        print(f"[baseline] {m.get('status', 'error'):<9} {r['label']:<28} {acc}", file=out, flush=True)
    return [baseline_row(r, spec.base, done[r["label"]]) for r in runs]
