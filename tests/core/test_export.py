"""save_pruned / load_pruned / export_onnx: plain-JSON spec, validated before use."""

import json
import subprocess
import sys

import pytest
import torch

from kpid_core.errors import ConfigError, SpecError
from kpid_core.prune import export_onnx, load_pruned, prune_to_budget, save_pruned

X = torch.zeros(1, 3, 32, 32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from kpid_core.models import build_model

    model = build_model("mobilenet_v3_small", num_classes=7)
    res = prune_to_budget(model, X, 0.5, model_name="mobilenet_v3_small", model_kwargs={"num_classes": 7})
    d = tmp_path_factory.mktemp("pruned")
    save_pruned(res, d)
    return res, d


def test_roundtrip_same_outputs(saved):
    res, d = saved
    back = load_pruned(d).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back(x), res.model.eval()(x))
    spec = json.loads((d / "spec.json").read_text())
    assert spec["macs_after"] == res.macs_after and spec["model_kwargs"] == {"num_classes": 7}
    with pytest.raises(ConfigError, match="already holds"):
        save_pruned(res, d)  # never overwrite silently


@pytest.mark.slow
def test_load_needs_no_torch_pruning(saved):
    _, d = saved
    code = ("import sys; sys.modules['torch_pruning'] = None\n"
            "from kpid_core.prune import load_pruned\n"
            f"m = load_pruned({str(d)!r}); print(sum(p.numel() for p in m.parameters()))")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) == saved[0].params_after


def test_custom_model_needs_factory(tiny, tmp_path):
    from tests.core.conftest import TinyNet

    res = prune_to_budget(tiny, torch.zeros(1, 3, 8, 8), 0.5)
    save_pruned(res, tmp_path)
    with pytest.raises(SpecError, match="model_factory"):
        load_pruned(tmp_path)
    back = load_pruned(tmp_path, model_factory=TinyNet)
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(back.eval()(x), res.model.eval()(x))


def _copy(saved, tmp_path):
    _, d = saved
    for f in ("spec.json", "weights.pt"):
        (tmp_path / f).write_bytes((d / f).read_bytes())
    return tmp_path


def _edit(tmp_path, fn):
    spec = json.loads((tmp_path / "spec.json").read_text())
    fn(spec)
    (tmp_path / "spec.json").write_text(json.dumps(spec))


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "spec.json").unlink(), "spec.json is missing"),
    (lambda p: (p / "spec.json").write_text((p / "spec.json").read_text()[:200]), "not valid JSON"),
    (lambda p: _edit(p, lambda s: s.update(modules=[])), "'modules' must map"),
    (lambda p: _edit(p, lambda s: s.update(model_kwargs="x")), "'model_kwargs'"),
    (lambda p: _edit(p, lambda s: s["shapes"].update({"features.0.0.weight": [3, 3, 3, 3]})), "shape"),
    (lambda p: _edit(p, lambda s: s.update(model_name="nope")), "unknown model"),
    (lambda p: _edit(p, lambda s: s.update(version=99)), "version"),
    (lambda p: (p / "weights.pt").unlink(), "weights.pt is missing"),
    (lambda p: (p / "weights.pt").write_bytes(b"\x80\x02junk"), "corrupt"),
])
def test_bad_specs_raise_spec_error(saved, tmp_path, damage, message):
    d = _copy(saved, tmp_path)
    damage(d)
    with pytest.raises(SpecError, match=message):
        load_pruned(d)


def test_missing_dir():
    with pytest.raises(SpecError, match="does not exist"):
        load_pruned("/nonexistent/kpid/pruned")


def test_export_onnx(saved, tmp_path):
    import onnx

    res, _ = saved
    path = export_onnx(res.model, tmp_path / "m.onnx", (3, 32, 32))
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert len(model.graph.input) >= 1
