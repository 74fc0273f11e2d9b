"""Output paths that cannot be created or written, in every CLI: one line ``error: ...`` naming the
option and the path, exit 2, no traceback, nothing that was there before lost, nothing half-written."""

from __future__ import annotations

import errno
import subprocess
import sys

from kpid_core.__main__ import main


def _blocked(tmp_path):
    """A path whose parent is a regular file: it cannot be created (whoever runs the test)."""
    f = tmp_path / "file"
    f.write_text("mine")
    return f, f / "out"


def test_prune_out_that_cannot_be_created(tmp_path):
    f, out = _blocked(tmp_path)
    r = subprocess.run([sys.executable, "-m", "kpid_core", "prune", "--model", "resnet18", "--budget", "0.5",
                        "--metric", "l1", "--out", str(out)], check=False, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"error: --out: cannot write {str(out)!r}: Not a directory\n"
    assert f.read_text() == "mine"


def test_prune_disk_full_while_saving_leaves_no_half_model(tmp_path, capsys, monkeypatch):
    from kpid_core.engine import spec

    def full(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(spec, "atomic_save", full)
    out = tmp_path / "p"
    assert main(["prune", "--model", "resnet18", "--input", "32", "--budget", "0.5", "--metric", "l1",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out: cannot write {str(out / 'weights.pt')!r}: No space left on device\n"
    assert not out.exists()  # the directory this run created is gone, not left half-written


def test_trial_out_that_cannot_be_created(tmp_path, capsys):
    f, out = _blocked(tmp_path)
    assert main(["trial", "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == f"error: --out: cannot write {str(out)!r}: Not a directory\n"
    assert f.read_text() == "mine"
