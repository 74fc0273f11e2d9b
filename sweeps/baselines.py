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

def _run_one(cfg: dict, run: dict, out_dir: str, shared: Any) -> dict:
    from kpid_core.baseline import run_baseline
    from kpid_core.errors import NonFiniteLossError

    try:
        return run_baseline(cfg, run["model"], run["width"], out_dir=out_dir, shared=shared, epochs=run["epochs"])
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
                  out: Any) -> list[dict[str, Any]]:
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
        ref = task.remote(apply_params(spec.base, params), r, str(root / r["label"]), shared)
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
