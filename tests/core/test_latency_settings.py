"""The latency measurement's defaults live once, in kpid_core.engine.latency_settings (no torch):
the trial config's ``latency`` section and the ``prune`` command's options take theirs from it."""

import dataclasses
import subprocess
import sys

import pytest

# LatencySettings field -> (trial config field of the latency section, prune option's dest)
SAME = {"batch": ("batch", "batch"), "threads": ("threads", "threads"), "repeats": ("table_repeats", "table_repeats"),
        "land_rounds": ("land_rounds", "land_rounds"), "min_sample_s": ("min_sample_s", "min_sample_s"),
        "land_tolerance": ("land_tolerance", None), "land_repeats": ("land_repeats", None)}


def test_the_config_and_the_prune_command_default_to_the_settings_defaults():
    from kpid_core.__main__ import build_parser
    from kpid_core.config import LatencyConfig
    from kpid_core.engine.latency_settings import LatencySettings

    settings, config = LatencySettings(), LatencyConfig()
    args = build_parser()[0].parse_args(["prune", "--model", "resnet18", "--budget", "0.5", "--metric", "l1",
                                          "--out", "unused"])
    for name, (cfg_name, dest) in SAME.items():
        assert getattr(config, cfg_name) == getattr(settings, name), f"latency.{cfg_name}"
        if dest is not None:
            assert getattr(args, dest) == getattr(settings, name), f"--{dest.replace('_', '-')}"
    assert {f.name for f in dataclasses.fields(LatencySettings)} >= set(SAME)


def test_the_settings_and_their_check_import_no_torch():
    code = ("import sys\n"
            "from kpid_core.engine.latency_settings import LatencySettings\n"
            "LatencySettings(batch=4, threads=2).check()\n"
            "try:\n"
            "    LatencySettings(batch=0).check()\n"
            "except Exception as exc:\n"
            "    assert 'batch' in str(exc), exc\n"
            "else:\n"
            "    raise AssertionError('batch=0 accepted')\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr


def test_a_cuda_device_is_refused_where_torch_sees_none():
    import torch

    from kpid_core.engine.latency_settings import LatencySettings
    from kpid_core.engine.timing import LatencySettings as reexported
    from kpid_core.errors import ConfigError

    assert reexported is LatencySettings
    if torch.cuda.is_available():
        assert LatencySettings(device="cuda").check().device == "cuda"
    else:
        with pytest.raises(ConfigError, match="CUDA is not available"):
            LatencySettings(device="cuda").check()
