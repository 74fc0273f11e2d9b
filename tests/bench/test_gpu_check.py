"""bench/gpu_check.sh: the parts that do not need a GPU — its refusals, and every step run tiny on CPU
(``--dry``) with Ray and Optuna made unimportable, so the check needs kpid_core's dependencies only.
The GPU figures themselves are measured on a GPU machine, never here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.sh"


def _run(tmp_path: Path, *args: str, device: str | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    blocker = tmp_path / "no_ray"
    for name in ("ray", "optuna"):  # importing either fails loudly inside the check
        (blocker / name).mkdir(parents=True, exist_ok=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('gpu_check must not import {name}')\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHON": sys.executable,
           "PYTHONPATH": f"{blocker}:{REPO}", "MPLCONFIGDIR": str(tmp_path / "mpl")}
    if device is not None:
        env["KPID_CHECK_DEVICE"] = device
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_refuses_without_cuda_or_with_a_bad_device(tmp_path):
    import torch

    if not torch.cuda.is_available():  # this machine: the check says why it cannot run, exit 2
        r = _run(tmp_path, str(tmp_path / "out"))
        assert r.returncode == 2 and "CUDA is not available" in r.stderr
    r = _run(tmp_path, device="tpu")
    assert r.returncode == 2 and r.stderr.strip() == "error: KPID_CHECK_DEVICE=tpu: allowed values: cuda, cpu"
    r = _run(tmp_path, str(tmp_path / "out"), device="cpu")  # CPU only as a dry run
    assert r.returncode == 2 and "only with --dry" in r.stderr


@pytest.mark.slow
def test_dry_run_on_cpu_runs_every_step_without_ray_or_optuna(tmp_path):
    out = tmp_path / "out"
    r = _run(tmp_path, "--dry", str(out), device="cpu")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for step in ("1. trial", "2. prune --cost latency", "3a. bench/latency_budget.py", "3b. bench/latency.py"):
        assert f"== {step}" in r.stdout
    assert r.stdout.count(": exit 0 after") == 4
    assert "trial: test accuracy" in r.stdout and "latency" in r.stdout
    assert (out / "trial" / "metrics.json").is_file() and (out / "pruned" / "spec.json").is_file()
    assert (out / "BENCHMARKS.latency_budget.cpu.md").is_file() and (out / "BENCHMARKS.latency.cpu.md").is_file()
    assert list((out / "cache" / "latency").glob("*.json"))  # the table went to the check's own cache
