"""The interactive path: analysis/notebooks/pareto.ipynb runs headless on a small sweep result."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "analysis" / "notebooks" / "pareto.ipynb"


@pytest.mark.slow
def test_notebook_runs_on_results(results_dir, trials_df, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    monkeypatch.setenv("KPID_RESULTS_DIR", str(results_dir))  # the kernel inherits it
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # Pareto, metric-vs-budget, KD-weights figures
    text = "".join(o.get("text", "") for o in outputs)
    assert f"{len(trials_df)} trials from {results_dir / 'trials.parquet'}" in text
    assert "on their front" in text
