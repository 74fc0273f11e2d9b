"""The trials-table schema shared by the sweep (writer) and the analysis (reader)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from kpid_core.errors import KPIDError
from kpid_core.results_schema import (
    COLUMNS,
    ERROR_KEY,
    FINAL_KEY,
    FLOAT_COLUMNS,
    INT_COLUMNS,
    STATUSES,
    STR_COLUMNS,
    TableError,
    flatten,
    trial_row,
    trial_status,
    typed_table,
)


@pytest.mark.parametrize("result, kw, status", [
    ({"val_accuracy": 0.9, FINAL_KEY: True}, {}, "finished"),
    ({"val_accuracy": 0.9, "epoch": 8}, {}, "early_stopped"),  # all epochs, but no final result
    ({ERROR_KEY: "NonFiniteLossError", FINAL_KEY: True}, {}, "error"),
    ({FINAL_KEY: True}, {"error": "worker died"}, "error"),
    ({"val_accuracy": 0.9}, {"running": True}, "running"),
    ({FINAL_KEY: True}, {"running": True}, "finished"),
    (None, {}, "pending"),
    ({}, {}, "pending"),
])
def test_status_rule(result, kw, status):
    assert trial_status(result, **kw) == status
    assert status in STATUSES


def test_flatten_nested_dotted_and_leaves():
    assert flatten({"train": {"lr": 0.1, "opt": {"m": 0.9}}, "budget": 0.5, "data.name": "digits",
                    "taps": ["a", "b"], "empty": {}}) == {
        "train.lr": 0.1, "train.opt.m": 0.9, "budget": 0.5, "data.name": "digits", "taps": ["a", "b"]}
    assert flatten({"a": 1}, "x.") == {"x.a": 1}


def test_trial_row_reads_nested_dotted_or_aliased_configs():
    nested = trial_row("t", {"model": {"name": "m"}, "prune": {"budget": 0.5}}, {FINAL_KEY: True, "accuracy": 0.9})
    dotted = trial_row("t", {"model.name": "m", "prune.budget": 0.5}, {FINAL_KEY: True, "accuracy": 0.9})
    aliased = trial_row("t", {"model": "m", "budget": 0.5}, {FINAL_KEY: True, "accuracy": 0.9})
    for row in (nested, dotted, aliased):
        assert (row["arch"], row["budget"], row["accuracy"], row["status"]) == ("m", 0.5, 0.9, "finished")
    assert list(nested)[: len(COLUMNS)] == list(COLUMNS)
    assert nested["config/prune.budget"] == 0.5 and aliased["config/budget"] == 0.5
    stopped = trial_row("t", {}, {"accuracy": 0.9, "val_accuracy": 0.8, "epoch": 3})
    assert math.isnan(stopped["accuracy"]) and stopped["val_accuracy"] == 0.8 and stopped["epochs_done"] == 3
    failed = trial_row("t", {"train": {"taps": ["a"]}}, {ERROR_KEY: "boom"})
    assert failed["error"] == "boom" and failed["config/train.taps"] == "['a']"


def test_typed_table_dtypes_and_order():
    rows = [trial_row("b", {"prune": {"budget": 0.3}}, {"macs": np.int64(7), FINAL_KEY: True}),
            trial_row("a", {"prune": {"budget": 0.3}}, None)]
    df = typed_table(rows)
    assert list(df.columns) == [*COLUMNS, "config/prune.budget"]
    for c in FLOAT_COLUMNS:
        assert df[c].dtype == "float64", c
    for c in INT_COLUMNS:
        assert str(df[c].dtype) == "Int64", c
    for c in STR_COLUMNS:
        assert pd.api.types.is_string_dtype(df[c]), c
    assert df["macs"].tolist() == [7, pd.NA] and df["error"].tolist() == ["", ""]


@pytest.mark.parametrize("table, message", [
    (pd.DataFrame({"trial_id": ["a"], "status": ["finished"], "accuracy": [0.9]}), "lacks required column(s) macs"),
    (pd.DataFrame({"trial_id": ["a"], "status": ["done"], "accuracy": [0.9], "macs": [1]}), "column status"),
    (pd.DataFrame({"trial_id": ["a"], "status": ["finished"], "accuracy": ["high"], "macs": [1]}),
     "column accuracy must be numeric, got 'high'"),
    (pd.DataFrame({"trial_id": ["a"], "status": ["finished"], "kind": ["x"], "accuracy": [1], "macs": [1]}),
     "column kind"),
])
def test_strict_typing_names_the_problem(table, message):
    with pytest.raises(TableError) as err:
        typed_table(table, strict=True)
    assert message in str(err.value) and isinstance(err.value, KPIDError)
    typed_table(table)  # the writer's mode fills and coerces instead


def test_importing_the_schema_is_light():
    code = ("import sys, kpid_core.results_schema\n"
            "heavy = {'pandas', 'torch', 'ray'} & set(sys.modules)\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
