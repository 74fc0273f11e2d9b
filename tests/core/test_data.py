"""Datasets through the real code on tiny files in the real on-disk formats."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from kpid_core.errors import DataError, UnknownNameError
from kpid_core.training.data import DATASETS, build_data, digits_arrays, load_split

DIGITS = {"name": "digits", "image_size": 16, "batch_size": 64, "val_fraction": 0.15, "test_fraction": 0.2}


def _labels(loader) -> torch.Tensor:
    return torch.cat([y for _, y in loader])


def test_digits_split_is_stratified_disjoint_and_seeded():
    b = build_data(DIGITS, seed=0)
    tr, va, te = b.split["train"], b.split["val"], b.split["test"]
    assert len(tr) + len(va) + len(te) == 1797 and not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert abs(len(te) - 0.2 * 1797) <= 1 and abs(len(va) - 0.15 * 1797) <= 1
    counts = torch.bincount(_labels(b.test), minlength=10)
    assert counts.min() >= 33 and counts.max() <= 38  # stratified: ~36 per class in 360
    assert b.num_classes == 10 and b.input_shape == (1, 16, 16)
    x, _ = next(iter(b.train))
    assert x.shape[1:] == (1, 16, 16)
    xs = torch.cat([x for x, _ in b.train])
    assert abs(float(xs.mean())) < 0.05 and abs(float(xs.std()) - 1) < 0.05  # normalised on train stats
    assert build_data(DIGITS, seed=0).split == b.split
    assert build_data(DIGITS, seed=1).split["test"] != te


def test_digits_are_scikit_learns_load_digits_exactly(monkeypatch):
    """digits_arrays reads the file load_digits reads, without importing scikit-learn (tested in a
    fresh process in test_lazy_import): the same images and labels, value for value; where that file
    cannot be found it asks load_digits itself."""
    import importlib.util

    from sklearn.datasets import load_digits

    images, labels = digits_arrays()
    ref = load_digits()
    assert images.dtype == ref.images.dtype and np.array_equal(images, ref.images)
    assert labels.dtype == ref.target.dtype and np.array_equal(labels, ref.target)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # no file to read: the fallback
    images, labels = digits_arrays()
    assert np.array_equal(images, ref.images) and np.array_equal(labels, ref.target)


def test_digits_three_channels_and_8px():
    b = build_data({**DIGITS, "image_size": 8}, seed=0, channels=3)
    x, _ = next(iter(b.test))
    assert b.input_shape == (3, 8, 8) and x.shape[1:] == (3, 8, 8) and torch.equal(x[:, 0], x[:, 2])


def test_split_saves_and_is_reused(tmp_path):
    b = build_data(DIGITS, seed=0)
    path = b.save_split(tmp_path / "split.json")
    again = build_data(DIGITS, seed=123, split=path)  # the file wins over the seed
    assert again.split["test"] == b.split["test"] and torch.equal(_labels(again.test), _labels(b.test))
    assert load_split(path)["dataset"] == "digits"
    with pytest.raises(DataError, match="split is for dataset 'digits'"):
        build_data({"name": "synthetic"}, 0, split=path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read data split"):
        build_data(DIGITS, 0, split=tmp_path / "bad.json")


def _write_cifar10(root, n_per_batch=8):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        labels[:2] = [0, 1]
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        with open(d / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": [b"x.png"] * n_per_batch}, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": n_per_batch}, f)
    return d


def test_cifar10_real_pickles(tmp_path):
    _write_cifar10(tmp_path)
    cfg = {"name": "cifar10", "root": str(tmp_path), "image_size": 32, "batch_size": 4, "val_fraction": 0.25}
    b = build_data(cfg, seed=0)
    assert b.num_classes == 10 and b.input_shape == (3, 32, 32)
    assert len(b.train.dataset) + len(b.val.dataset) == 40 and len(b.test.dataset) == 8
    x, y = next(iter(b.test))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32  # eval batches are 2x batch_size
    # The test images are the test_batch pickle, in order, through ToTensor + CIFAR normalisation.
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    assert y.tolist() == raw["labels"]
    px = raw["data"][0].reshape(3, 32, 32)[0, 0, 0] / 255.0
    assert abs(float(x[0, 0, 0, 0]) - (px - 0.4914) / 0.2470) < 1e-4


def test_cifar100_real_pickles(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 20), ("test", 5)):
        with open(d / name, "wb") as f:
            pickle.dump({"fine_labels": [i % 100 for i in range(n)], "coarse_labels": [0] * n,
                         "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}, f)
    with open(d / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": ["c"] * 20}, f)
    split = {"dataset": "cifar100", "n": 20, "train": list(range(15)), "val": list(range(15, 20)), "test": []}
    b = build_data({"name": "cifar100", "root": str(tmp_path), "batch_size": 5}, 0, split=split)
    assert b.num_classes == 100 and len(b.test.dataset) == 5 and len(b.val.dataset) == 5


def test_cifar_missing_or_malformed(tmp_path):
    with pytest.raises(DataError, match=r"cifar10 expects ROOT/cifar-10-batches-py/\{data_batch_1..5,test_batch"):
        build_data({"name": "cifar10", "root": str(tmp_path)}, 0)
    with pytest.raises(DataError, match="does not exist"):
        build_data({"name": "cifar10", "root": str(tmp_path / "nope")}, 0)
    with pytest.raises(DataError, match="data.root is required"):
        build_data({"name": "cifar100", "root": None}, 0)
    d = _write_cifar10(tmp_path)
    (d / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="cannot read .*data_batch_3"):
        build_data({"name": "cifar10", "root": str(tmp_path)}, 0)


def _write_imagefolder(root, per_class=4):
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for ci, cls in enumerate(["n01", "n02", "n03"]):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per_class if split == "train" else 2):
                arr = rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)
                ext = "JPEG" if i % 2 == 0 else "png"
                Image.fromarray(arr).save(d / f"img{i}.{ext}", format="JPEG" if ext == "JPEG" else "PNG")


def test_imagefolder_real_tree(tmp_path):
    _write_imagefolder(tmp_path)
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 32, "batch_size": 4, "val_fraction": 0.25}
    b = build_data(cfg, seed=0)
    assert b.num_classes == 3 and b.input_shape == (3, 32, 32)
    assert len(b.train.dataset) == 9 and len(b.val.dataset) == 3 and len(b.test.dataset) == 6
    x, _ = next(iter(b.train))
    assert x.shape[1:] == (3, 32, 32)
    xt, yt = next(iter(b.test))
    assert xt.shape[1:] == (3, 32, 32) and yt.tolist() == [0, 0, 1, 1, 2, 2]
    assert build_data(cfg, seed=0).split == b.split


def test_imagefolder_bad_layout(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="missing .*val.*imagefolder expects ROOT/train/<class>"):
        build_data({"name": "imagefolder", "root": str(tmp_path)}, 0)
    (tmp_path / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="imagefolder expects"):  # class folders without images
        build_data({"name": "imagefolder", "root": str(tmp_path)}, 0)


def test_imagefolder_unreadable_image_is_named(tmp_path):
    _write_imagefolder(tmp_path)
    bad = tmp_path / "train" / "n02" / "img9.png"
    bad.write_bytes(b"not a png")  # PIL: UnidentifiedImageError, an OSError without a file name
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 32, "batch_size": 16, "augment": "none"}
    b = build_data(cfg, seed=0)
    with pytest.raises(DataError, match=rf"^imagefolder: cannot read image '{bad}' \(UnidentifiedImageError"):
        for loader in (b.train, b.val):  # wherever the split put it
            for _ in loader:
                pass
    (tmp_path / "train" / "n01" / "img0.JPEG").write_bytes(b"")  # the first image sets the native size
    with pytest.raises(DataError, match=r"cannot read image .*img0.JPEG"):
        build_data({**cfg, "image_size": None, "augment": "small"}, seed=0)


def test_synthetic_and_unknown():
    b = build_data({"name": "synthetic", "image_size": 8, "batch_size": 32}, seed=0)
    assert b.input_shape == (3, 8, 8) and b.num_classes == 10
    assert set(DATASETS) == {"digits", "fashion_mnist", "cifar10", "cifar100", "imagefolder", "synthetic"}
    with pytest.raises(UnknownNameError, match="valid datasets: digits"):
        build_data({"name": "mnist"}, 0)
