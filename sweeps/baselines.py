"""Same-data baselines of a sweep (``baselines:`` in the sweep file), run as Ray tasks.

Each run trains a compact architecture with ``kpid_core.baseline.run_baseline`` on the sweep's
shared split under the shared teacher, with the resources of one trial, after the pruned trials
(they do not compete with them for slots). Results go to ``EXPERIMENT/baselines/LABEL/metrics.json``;
``--resume`` keeps the finished ones and runs the rest. Rows have ``kind == "baseline"``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweeps.space import BUDGET_KEY, SweepSpec, apply_params, flatten

__all__ = ["baseline_row", "run_baselines"]

BaselineFn = Callable[..., dict]


def _run_one(cfg: dict, run: dict, out_dir: str, shared: Any, fn: BaselineFn | None) -> dict:
    from kpid_core.baseline import run_baseline
    from kpid_core.errors import NonFiniteLossError

    try:
        return (fn or run_baseline)(cfg, run["model"], run["width"], out_dir=out_dir, shared=shared,
                                    epochs=run["epochs"])
    except NonFiniteLossError as exc:  # diverged: a result, not a crash to retry
        return {"status": "error", "error": f"NonFiniteLossError: {exc}"}


def baseline_row(run: dict[str, Any], base: dict[str, Any], m: dict[str, Any]) -> dict[str, Any]:
    """One trials-table row for a baseline ``run`` (from ``SweepSpec.baseline_runs``) with metrics ``m``."""
    params = {BUDGET_KEY: run["budget"]} if run["budget"] is not None else {}
    cfg = flatten(apply_params(base, params))
    cfg["model.name"], cfg["model.width"] = run["model"], m.get("width", run["width"])
    cfg["distill.inner_weight"], cfg["prune.metric"] = 0.0, None
    if run["epochs"]:
        cfg["train.epochs"] = run["epochs"]
    finished = m.get("status") == "finished"
    row: dict[str, Any] = {
        "trial_id": f"baseline-{run['label']}", "status": "finished" if finished else "error", "kind": "baseline",
        "arch": run["model"], "budget": run["budget"] if run["budget"] is not None else math.nan, "metric": None,
        "kd_weight": cfg.get("distill.kd_weight"), "inner_weight": 0.0, "temperature": cfg.get("distill.temperature"),
        "match": None, "lr": cfg.get("train.lr"), "epochs": cfg.get("train.epochs"),
        "accuracy": m.get("accuracy", math.nan) if finished else math.nan,
        "val_accuracy": m.get("val_accuracy", math.nan), "teacher_accuracy": m.get("teacher_accuracy", math.nan),
        "macs": m.get("macs"), "macs_dense": m.get("macs_dense"), "macs_ratio": m.get("macs_ratio", math.nan),
        "params": m.get("params"), "epochs_done": m.get("epochs_done", 0), "latency_ms": math.nan,
        "error": "" if finished else str(m.get("error", "failed"))[:500], "checkpoint_path": "",
    }
    for k, v in cfg.items():
        row[f"config/{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return row


def run_baselines(spec: SweepSpec, exp_path: Path, shared: Any, *, num_cpus: float, num_gpus: float,
                  out: Any, baseline_fn: BaselineFn | None = None) -> list[dict[str, Any]]:
    """Run the sweep's baselines that have no finished result yet; return a row for every baseline."""
    import ray

    runs = spec.baseline_runs()
    if not runs:
        return []
    root = Path(exp_path) / "baselines"
    done: dict[str, dict] = {}
    for r in runs:
        f = root / r["label"] / "metrics.json"
        if f.is_file():
            m = json.loads(f.read_text())
            if m.get("status") == "finished":
                done[r["label"]] = m
    todo = [r for r in runs if r["label"] not in done]
    if todo:
        print(f"running {len(todo)} same-data baseline(s) ...", file=out, flush=True)
    task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=spec.max_failures)(_run_one)
    pending = {}
    for r in todo:
        params = {BUDGET_KEY: r["budget"]} if r["budget"] is not None else {}
        ref = task.remote(apply_params(spec.base, params), r, str(root / r["label"]), shared, baseline_fn)
        pending[ref] = r
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        r = pending.pop(ready[0])
        try:
            m = ray.get(ready[0])
        except Exception as exc:  # noqa: BLE001 - a crashed baseline is a row with its error, not a crashed sweep
            m = {"status": "error", "error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:300]}"}
        done[r["label"]] = m
        acc = f"acc={m['accuracy']:.4f} MACs={int(m['macs']):,}" if m.get("status") == "finished" else m.get("error")
        print(f"[baseline] {m.get('status', 'error'):<9} {r['label']:<28} {acc}", file=out, flush=True)
    return [baseline_row(r, spec.base, done[r["label"]]) for r in runs]
