"""`python -m kpid_core macs|prune`: output, refusal to overwrite, one-line errors with exit 2."""

import json
import subprocess
import sys

import pytest
import torch

from kpid_core.__main__ import main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "kpid_core", *args], check=False, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_subprocess_prune_and_errors(tmp_path, capsys):
    out = _run("prune", "--model", "mobilenet_v3_small", "--budget", "0.5", "--metric", "l1",
               "--input", "64", "--out", str(tmp_path / "p"), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["macs_after"] <= 0.5 * info["macs_before"] and (tmp_path / "p" / "spec.json").is_file()
    # the refusal to overwrite, in-process (the process above showed the module runs as a program)
    spec = (tmp_path / "p" / "spec.json").read_bytes()
    assert main(["prune", "--model", "mobilenet_v3_small", "--budget", "0.5", "--metric", "l1",
                 "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.strip().startswith("error: --out") and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "p" / "spec.json").read_bytes() == spec  # nothing overwritten


@pytest.mark.parametrize(("args", "needle"), [
    (["prune", "--model", "resnet18", "--budget", "abc", "--metric", "l1", "--out", "x"], "--budget"),
    (["macs", "--model", "resnet18", "--input", "0"], "--input"),
    (["macs", "--model", "resnet18", "--input", "big"], "--input"),
    (["macs", "--model", "resnet18", "--num-classes", "0"], "--num-classes: invalid value 0"),
    (["macs", "--model", "alexnet", "--input", "4"], "--input 4: model 'alexnet' cannot run on a 4x4 image"),
    (["prune", "--model", "alexnet", "--budget", "0.5", "--metric", "l1", "--input", "4", "--out", "y"], "--input 4"),
])
def test_bad_arguments_are_one_line_exit_2(tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own checks exit from inside parse_args
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and needle in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_existing_out_refused(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("mine")
    assert main(["prune", "--model", "resnet18", "--budget", "0.5", "--metric", "l1",
                 "--out", str(tmp_path / "o")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["keep.txt"]


def test_macs_json(capsys):
    assert main(["macs", "--model", "mobilenet_v3_small", "--input", "64", "--json", "--breakdown"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["macs"] == sum(r["macs"] for r in info["layers"]) and info["params"] > 0


def test_help_documents_options(capsys):
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    text = capsys.readouterr().out
    for opt in ("--budget", "--metric", "--out", "--checkpoint", "--min-keep", "--allocation", "--seed"):
        assert opt in text


@pytest.mark.parametrize("args, message", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--metric", "magic"], "unknown importance metric 'magic'; valid metrics:"),
    (["--metric", "taylor"], "needs training data"),
    (["--budget", "1.5"], "budget must be in (0, 1]"),
    (["--budget", "0.001"], "infeasible"),
    (["--checkpoint", "/nonexistent.pt"], "does not exist"),
    (["--checkpoint", "/"], "'/' is a directory; expected a state-dict file"),
    (["--model", "json:loads"], "model 'json:loads': the factory cannot be called as loads(num_classes=1000)"),
    (["--cost", "latency", "--cache-dir", "/dev/null"], "latency.cache_dir (prune --cache-dir): cannot write '/dev/null'"),
])
def test_errors_one_line_exit_2(tmp_path, capsys, args, message):
    base = {"--model": "resnet18", "--budget": "0.5", "--metric": "l1", "--input": "32",
            "--out": str(tmp_path / "o")}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    assert main(["prune", *[x for kv in base.items() for x in kv]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_checkpoint_corrupt_and_wrong(tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"not a pickle")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "wrong.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # a pickled module, not a state dict
    for f, msg in (("bad.pt", "is not a readable state dict"),
                   ("module.pt", "it holds Python objects, not only tensors; save model.state_dict() instead"),
                   ("wrong.pt", ("does not fit the model: 122 missing key(s) (conv1.weight, bn1.weight, bn1.bias "
                                 "and 119 more); 1 unexpected key(s) (weight)"))):
        code = main(["prune", "--model", "resnet18", "--budget", "0.5", "--metric", "l1", "--input", "32",
                     "--checkpoint", str(tmp_path / f), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_checkpoint_is_used(tmp_path, capsys):
    from kpid_core.models import build_model
    from kpid_core.prune import load_pruned

    m = build_model("resnet18", num_classes=4)
    torch.save(m.state_dict(), tmp_path / "ck.pt")
    assert main(["prune", "--model", "resnet18", "--num-classes", "4", "--budget", "0.6", "--metric", "l2",
                 "--input", "32", "--checkpoint", str(tmp_path / "ck.pt"), "--out", str(tmp_path / "o")]) == 0
    assert "MACs:" in capsys.readouterr().out
    back = load_pruned(tmp_path / "o")
    cm = json.loads((tmp_path / "o" / "spec.json").read_text())["channel_map"]["conv1"]
    torch.testing.assert_close(back.conv1.weight, m.conv1.weight[cm["out"]][:, cm["in"]])


def test_ctrl_c_in_a_subcommand_is_one_line_exit_130(tmp_path, monkeypatch, capsys):
    import kpid_core.prune as prune_mod

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(prune_mod, "prune_to_budget", interrupted)
    assert main(["macs", "--model", "resnet18", "--input", "32"]) == 0  # an untouched command still works
    capsys.readouterr()
    assert main(["prune", "--model", "resnet18", "--budget", "0.5", "--metric", "l1", "--input", "32",
                 "--out", str(tmp_path / "o")]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted: prune stopped before it finished"
    assert not (tmp_path / "o").exists()  # the --out it had created is removed


def test_a_model_that_asserts_its_input_size_is_a_line_naming_input(capsys):
    """timm's halo attention asserts that the feature map divides into its blocks: an
    ``AssertionError`` from the model, not a RuntimeError from torch."""
    assert main(["macs", "--model", "timm:halonet26t", "--input", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --input 32: model 'timm:halonet26t' cannot run on a 32x32 image")
    assert err.endswith("use a larger --input") and len(err.splitlines()) == 1
