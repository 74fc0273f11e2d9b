"""A trial stopped after some epochs and resumed from its checkpoint ends as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest

from kpid_core.trial import run_trial


def assert_resume_matches(cfg, full: dict, tmp_path: Path, stop_after: int) -> None:
    """Interrupt ``run_trial(cfg)`` after epoch ``stop_after``, resume it and compare with ``full``.

    Args:
        cfg: the trial config ``full`` ran with.
        full: the uninterrupted trial's metrics.
        tmp_path: where the two checkpoint folders go.
        stop_after: the epoch after which the first run stops.
    """
    def stop(epoch, metrics):
        assert metrics["epoch"] == epoch
        if epoch == stop_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, on_epoch=stop, checkpoint_dir=tmp_path / "ck")
    resumed = run_trial(cfg, resume_from=tmp_path / "ck", checkpoint_dir=tmp_path / "ck2")
    for k in ("accuracy", "val_accuracy", "macs", "epochs_done"):
        assert resumed[k] == full[k], k
