"""Bad input → one line ``error: ...``, exit 2, nothing written. ``python sweeps/run.py`` works as a script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sweep_helpers import real_sweep

from sweeps.run import main

REPO = Path(__file__).resolve().parents[2]


def _fails(capsys, argv: list[str], needle: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert needle in err, err
    return err


def _cfg(tmp_path: Path, **raw) -> str:
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"space": {"budget": [0.3, 0.6]}, **raw}))
    return str(p)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"base": {"train.epoch": 2}}, "unknown config key 'train.epoch'"),
        ({"space": {}}, "empty search space"),
        ({"space": {"budget": [0.5, 1.2]}}, "outside (0, 1]"),
        ({"space": {"budget": [-0.1, 0.5]}}, "outside (0, 1]"),
        ({"space": {"metric": ["taylor", "nope"]}}, "prune.metric"),
    ],
)
def test_bad_config_is_one_line_and_writes_nothing(capsys, tmp_path, raw, needle):
    storage = tmp_path / "res"
    _fails(capsys, ["--config", _cfg(tmp_path, **raw), "--storage", str(storage)], needle)
    assert not storage.exists()


@pytest.mark.parametrize(("text", "needle"), [
    ("space: [budget]\n", "space must be a mapping of keys to values (key: value lines), got list"),
    ("base: [1]\nspace: {budget: [0.3, 0.6]}\n", "base must be a mapping"),
    ("search: [1]\nspace: {budget: [0.3, 0.6]}\n", "search must be a mapping"),
    ("resources: 4\nspace: {budget: [0.3, 0.6]}\n", "resources must be a mapping of keys to values (key: value lines), got int"),
    (b"\xff\xfe\x00bad", "s.yaml is not a text file (not UTF-8)"),
])
def test_a_sweep_file_of_the_wrong_shape_is_one_line(capsys, tmp_path, text, needle):
    p = tmp_path / "s.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    _fails(capsys, ["--config", str(p), "--storage", str(tmp_path / "res"), "--dry-run"], needle)
    _fails(capsys, ["--config", str(tmp_path), "--storage", str(tmp_path / "res"), "--dry-run"], "is a directory")
    assert not (tmp_path / "res").exists()


def test_a_trial_shape_from_the_sweep_file_is_refused_naming_its_key(capsys, tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("space: {budget: [0.3, 0.6]}\nresources: {cpus_per_trial: 0}\n")
    err = _fails(capsys, ["--config", str(p), "--storage", str(tmp_path / "res"), "--dry-run"],
                 "--cpus-per-trial (resources.cpus_per_trial) > 0")
    assert err.endswith("got 0 and 0") and not (tmp_path / "res").exists()


def test_resume_of_a_sweep_whose_saved_file_is_corrupt(capsys, tmp_path):
    exp = tmp_path / "broken"
    exp.mkdir()
    (exp / "sweep.yaml").write_text("garbage: [\n")
    err = _fails(capsys, ["--storage", str(tmp_path), "--name", "broken", "--resume"], "--resume: the sweep's saved")
    assert "sweep.yaml is not valid YAML: line 2, column 1" in err and "another --name" in err
    assert (exp / "sweep.yaml").read_text() == "garbage: [\n" and len(list(exp.iterdir())) == 1


def test_relative_storage_is_refused_with_the_shared_storage_hint(capsys, tmp_path):
    err = _fails(capsys, ["--config", _cfg(tmp_path), "--storage", "rel/dir"], "--storage")
    assert "absolute" in err and "shared storage" in err


def test_object_store_uri_is_refused(capsys, tmp_path):
    _fails(capsys, ["--config", _cfg(tmp_path), "--storage", "s3://bucket/kpid"], "every node mounts")


def test_resume_of_a_missing_sweep(capsys, tmp_path):
    _fails(capsys, ["--storage", str(tmp_path), "--name", "nothing", "--resume"], "no sweep to resume")
    assert list(tmp_path.iterdir()) == []


def test_existing_name_is_refused_pointing_at_resume(capsys, tmp_path):
    exp = tmp_path / "digits_demo"
    exp.mkdir()
    (exp / "trials.csv").write_text("keep me")
    err = _fails(capsys, ["--storage", str(tmp_path)], "already exists")
    assert "--resume" in err and "--name" in err
    assert (exp / "trials.csv").read_text() == "keep me" and len(list(exp.iterdir())) == 1
    assert main(["--storage", str(tmp_path), "--dry-run"]) == 0  # the plan says so too
    assert "already exists there: the real run needs --resume" in capsys.readouterr().out
    assert (exp / "trials.csv").read_text() == "keep me" and len(list(exp.iterdir())) == 1


def test_unreachable_address(capsys, tmp_path):
    _fails(capsys, ["--config", _cfg(tmp_path), "--storage", str(tmp_path / "r"), "--address", "127.0.0.1:9"],
           "cannot reach a Ray cluster")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_resources_beyond_the_cluster(ray_2_cpus, capsys, tmp_path):
    cfg = str(real_sweep(tmp_path / "s.yaml"))
    storage = str(tmp_path / "res")
    _fails(capsys, ["--config", cfg, "--storage", storage, "--gpus-per-trial", "16"], "more than the 8 GPU")
    _fails(capsys, ["--config", cfg, "--storage", storage, "--num-gpus", "9"], "--num-gpus: 9")
    _fails(capsys, ["--config", cfg, "--storage", storage, "--gpus-per-trial", "1.5"], "whole number")
    assert not Path(storage).exists()


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--config", "--num-gpus", "--gpus-per-trial", "--workers-per-trial", "--cpus-per-trial",
                "--num-samples", "--address", "--storage", "--name", "--resume", "--max-concurrent",
                "--seed", "--dry-run", "--dashboard", "--verbose", "--start-timeout", "--stall-timeout"):
        assert opt in out
    assert "digits_demo.yaml" in out and "./results" in out and "python sweeps/run.py" in out
    # defaults are shown where they say something, never as "(default: None)" after the help's own words
    assert "(default: None)" not in out and "(default: False)" not in out
    assert " ".join(out.split()).count("(default: 600.0)") == 2


@pytest.mark.parametrize(("argv", "needle"), [
    (["--num-samples", "0"], "--num-samples: invalid value 0: expected a whole number >= 1"),
    (["--workers-per-trial", "0"], "--workers-per-trial: invalid value 0"),
    (["--max-concurrent", "0"], "--max-concurrent: invalid value 0"),
    (["--seed", "-1"], "--seed: invalid value -1: expected a whole number >= 0"),
    (["--name", "../x"], "--name: invalid value '../x': expected a folder name"),
    (["--name", "a/b"], "--name: invalid value 'a/b'"),
])
def test_out_of_range_options_are_one_line_exit_2(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:  # argparse's own checks exit from inside parse_args
        main([*argv, "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("error: argument ") and needle in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_argument_typo_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:  # argparse's own checks exit from inside parse_args
        main(["--num-samples", "many"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: argument --num-samples")
    assert len(err.strip().splitlines()) == 1 and "usage:" not in err


def test_script_entry_point_exit_code_and_one_line():
    """``python sweeps/run.py`` runs as a script and exits with main's code (one process: the rest in-process)."""
    bad = subprocess.run([sys.executable, "sweeps/run.py", "--num-gpus", "64", "--storage", "/nonexistent/x"],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --num-gpus") and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1


def test_resume_refuses_a_changed_config_or_option_instead_of_ignoring_it(capsys, tmp_path):
    from sweeps.run import build_parser, describe_run
    from sweeps.space import load_sweep

    cfg = tmp_path / "s.yaml"
    raw = {"name": "r", "space": {"budget": [0.3, 0.6]}, "search": {"num_samples": 4},
           "gpu": {"data.batch_size": 256}}
    cfg.write_text(yaml.safe_dump(raw))
    storage = tmp_path / "res"
    (storage / "r").mkdir(parents=True)
    saved = storage / "r" / "sweep.yaml"
    first = load_sweep(str(cfg))
    first.use_gpu_settings()  # the first run had GPUs: sweeps/run.py saves the sweep as run
    saved.write_text(yaml.safe_dump(first.to_dict(), sort_keys=False))
    before = saved.read_text()
    resume = ["--config", str(cfg), "--storage", str(storage), "--resume"]

    for argv in (resume, [*resume, "--num-samples", "4"], ["--storage", str(storage), "--name", "r", "--resume"]):
        run = describe_run(build_parser().parse_args(argv))  # the same sweep: resumed as saved
        assert run.resume and run.spec.space == first.space and run.spec.base["data.batch_size"] == 256

    cfg.write_text(yaml.safe_dump({**raw, "space": {"budget": [0.3, 0.5]}}))
    err = _fails(capsys, resume, "--config: ")
    assert "changes 'space'" in err and "new --name" in err
    cfg.write_text(yaml.safe_dump({**raw, "base": {"epochs": 2}}))
    assert "changes 'base'" in _fails(capsys, resume, "--config: ")
    cfg.write_text(yaml.safe_dump(raw))
    err = _fails(capsys, [*resume, "--num-samples", "9"], "--num-samples: 9 differs from the resumed sweep's 4")
    _fails(capsys, [*resume, "--seed", "3"], "--seed: 3 differs")
    assert saved.read_text() == before and sorted(p.name for p in (storage / "r").iterdir()) == ["sweep.yaml"]
