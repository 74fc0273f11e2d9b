"""The README's model list is the benchmark's output (bench/models.csv), not written by hand."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# bench/ is a script folder, not an installed package: make it importable under plain `pytest`
sys.path.insert(0, str(ROOT))

from bench.models import COLUMNS, read_csv, readme_table


def test_readme_model_table_is_generated_from_the_benchmark_csv():
    rows = read_csv(str(ROOT / "bench" / "models.csv"))
    assert rows and set(rows[0]) == set(COLUMNS)
    assert readme_table(rows) in (ROOT / "README.md").read_text(), (
        "README's model table differs from bench/models.csv: run "
        "python bench/models.py --from-csv bench/models.csv --readme README.md")
