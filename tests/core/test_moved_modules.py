"""The old flat module paths (``kpid_core.macs``, ``kpid_core.data``, ...) are aliases of the modules
that moved into ``kpid_core.engine`` and ``kpid_core.training`` (docs/CONTRACTS.md): the same module
objects, imported lazily, with the new path as their own name (reload, pickling)."""

from __future__ import annotations

import importlib
import inspect
import io
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kpid_core.engine.importance import ImportanceScores
from kpid_core.engine.knapsack import KnapsackResult
from kpid_core.module_aliases import MOVED

ROOT = Path(__file__).resolve().parents[2]


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          check=False)


def test_every_old_path_is_the_module_at_its_new_path():
    assert len(MOVED) == 21
    for old, new in MOVED.items():
        assert not (ROOT / (old.replace(".", "/") + ".py")).exists(), f"{old} still has a file of its own"
        assert (ROOT / (new.replace(".", "/") + ".py")).is_file(), new
        assert importlib.import_module(old) is importlib.import_module(new), old
        assert sys.modules[old] is sys.modules[new]


def test_old_path_imported_first_is_lazy_and_keeps_the_real_name_and_spec():
    """In a fresh interpreter, the old path first: nothing heavy before, the real module after, with its
    own ``__name__`` and ``__spec__`` (importlib sets the alias's spec; the loader puts it back)."""
    code = (
        "import sys, kpid_core, kpid_core.errors\n"
        "assert 'torch' not in sys.modules, 'torch imported eagerly'\n"
        "assert not [n for n in sys.modules if n.startswith(('kpid_core.engine.', 'kpid_core.training.'))]\n"
        "import kpid_core.macs as m\n"
        "from kpid_core.training.data import build_data\n"
        "from kpid_core.data import build_data as old_build_data\n"
        "import kpid_core.engine.macs as n\n"
        "assert m is n and kpid_core.macs is n and sys.modules['kpid_core.macs'] is n\n"
        "assert m.__name__ == 'kpid_core.engine.macs', m.__name__\n"
        "assert m.__spec__.name == 'kpid_core.engine.macs', m.__spec__.name\n"
        "assert m.__spec__.origin.endswith('engine/macs.py'), m.__spec__.origin\n"
        "assert old_build_data is build_data\n"
        "d = sys.modules['kpid_core.data']\n"
        "assert d is sys.modules['kpid_core.training.data'] and d.__spec__.name == 'kpid_core.training.data'\n"
        "import importlib\n"
        "import kpid_core.knapsack as k\n"
        "old_solve = k.solve\n"
        "assert importlib.reload(k) is k and importlib.reload(sys.modules['kpid_core.engine.knapsack']) is k\n"
        "assert k.solve is not old_solve and k.__name__ == 'kpid_core.engine.knapsack'\n"
        "assert sys.modules['kpid_core.knapsack'] is k\n"
        "print('ok')\n"
    )
    out = _fresh(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_monkeypatch_through_the_old_path_reaches_the_real_module(monkeypatch):
    from kpid_core.engine import macs

    def fake(model):
        return -1

    monkeypatch.setattr("kpid_core.macs.count_params", fake)
    assert macs.count_params is fake
    from kpid_core.macs import count_params

    assert count_params is fake


def test_classes_of_moved_modules_pickle_under_the_new_path():
    classes = [
        cls for new in MOVED.values() for _, cls in inspect.getmembers(importlib.import_module(new), inspect.isclass)
        if cls.__module__ == new
    ]
    assert len(classes) > 20
    for cls in classes:
        blob = pickle.dumps(cls)
        assert cls.__module__.encode() in blob and pickle.loads(blob) is cls, cls


def test_saved_objects_name_the_new_path_and_old_path_pickles_still_load():
    scores = ImportanceScores("l1", {"conv": torch.ones(3)})
    buf = io.BytesIO()
    torch.save(scores, buf)
    assert b"kpid_core.engine.importance" in buf.getvalue()
    assert b"kpid_core.importance" not in buf.getvalue()
    back = torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    assert type(back) is ImportanceScores and torch.equal(back.scores["conv"], torch.ones(3))

    result = KnapsackResult(*([None] * len(KnapsackResult._fields)))
    blob = pickle.dumps(result, protocol=0)
    assert b"kpid_core.engine.knapsack" in blob
    old = blob.replace(b"kpid_core.engine.knapsack", b"kpid_core.knapsack")  # as written before the move
    assert b"kpid_core.engine" not in old
    assert type(pickle.loads(old)) is KnapsackResult


@pytest.mark.parametrize("old", ["kpid_core.not_a_module", "kpid_core.engine.macs.x"])
def test_other_names_are_not_answered(old):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)
