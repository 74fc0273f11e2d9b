"""Whole-file writes: the target holds the old or the new content, never a half, and no temporary
file is left behind."""

import pytest
import torch

from kpid_core.files import atomic_save, atomic_write, atomic_write_text


def test_text_and_torch_writes_replace_whole_files(tmp_path):
    p = atomic_write_text(tmp_path / "a.json", "old")
    assert atomic_write_text(p, "new") == p and p.read_text() == "new"
    q = atomic_save({"w": torch.ones(2)}, tmp_path / "w.pt")
    assert torch.equal(torch.load(q, weights_only=True)["w"], torch.ones(2))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.json", "w.pt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    p = atomic_write_text(tmp_path / "a.txt", "old")

    def half(tmp):
        tmp.write_text("ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(p, half)
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_storage_errors_blame_the_output_only_for_its_own_files(tmp_path):
    import errno

    from kpid_core.errors import StorageError
    from kpid_core.files import storage_errors

    out = tmp_path / "out"
    with pytest.raises(StorageError, match=rf"^--out: cannot write '{out / 'w.pt'}': No space left on device$"), storage_errors("--out", out):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "w.pt"))
    with pytest.raises(StorageError, match=rf"^--out: cannot write '{out}': No space left on device$"), storage_errors("--out", out):
        raise OSError(errno.ENOSPC, "No space left on device")  # no file named: the output's
    data = tmp_path / "data" / "x.png"  # an input elsewhere is not an --out problem
    with pytest.raises(StorageError, match=rf"^cannot access '{data}': Permission denied$"), storage_errors("--out", out):
        raise PermissionError(errno.EACCES, "Permission denied", str(data))
