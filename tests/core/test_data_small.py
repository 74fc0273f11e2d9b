"""Fashion-MNIST through tiny IDX files written in the real format, and small/grey ImageFolders."""

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from kpid_core.config import load_config
from kpid_core.errors import ConfigError, DataError
from kpid_core.training.data import build_data
from kpid_core.training.idx import FASHION_MNIST_APT, FASHION_MNIST_ENV, read_idx
from kpid_core.training.tensor_images import InMemoryImages

N_TRAIN, N_TEST = 60, 20


def _idx_bytes(arr: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_fashion(folder, gz: bool = True, seed: int = 0) -> dict:
    """The four Fashion-MNIST files, in IDX format (gzip or plain), with class-dependent images."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        y = (np.arange(n) % 10).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        x[np.arange(n), (y * 2 + 4)] = 250  # a bright row per class: learnable
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            raw = _idx_bytes(arr)
            name = f"{part}-{kind}-ubyte" + (".gz" if gz else "")
            (folder / name).write_bytes(gzip.compress(raw) if gz else raw)
        out[part] = (x, y)
    return out


def test_idx_reader_reads_gzip_and_plain_and_names_bad_files(tmp_path):
    arrs = write_fashion(tmp_path / "gz")
    write_fashion(tmp_path / "plain", gz=False)
    x = read_idx(tmp_path / "gz" / "train-images-idx3-ubyte.gz")
    assert x.shape == (N_TRAIN, 28, 28) and np.array_equal(x, arrs["train"][0])
    assert np.array_equal(read_idx(tmp_path / "plain" / "t10k-labels-idx1-ubyte"), arrs["t10k"][1])
    raw = (tmp_path / "plain" / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-5])
    with pytest.raises(DataError, match="short.*truncated"):
        read_idx(tmp_path / "short")
    gzraw = (tmp_path / "gz" / "train-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(gzraw[: len(gzraw) // 2])
    with pytest.raises(DataError, match="cut.gz.*corrupt or truncated"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "junk").write_bytes(b"PK\x03\x04not idx")
    with pytest.raises(DataError, match="junk.*not an IDX"):
        read_idx(tmp_path / "junk")


def test_fashion_mnist_split_stats_and_shapes(tmp_path):
    arrs = write_fashion(tmp_path)
    cfg = {"name": "fashion_mnist", "root": str(tmp_path), "batch_size": 8, "val_fraction": 0.2}
    b = build_data(cfg, seed=0)
    assert b.input_shape == (1, 28, 28) and b.num_classes == 10
    assert len(b.split["train"]) == 48 and len(b.split["val"]) == 12 and not set(b.split["train"]) & set(b.split["val"])
    assert build_data(cfg, seed=1).split["val"] != b.split["val"]
    # the fixed test set, in file order, normalised by the training images' own mean/std
    xt, yt = next(iter(b.test))
    train_px = arrs["train"][0][b.split["train"]] / 255.0
    assert b.mean[0] == pytest.approx(train_px.mean(), rel=1e-6) and b.std[0] == pytest.approx(train_px.std(ddof=1), rel=1e-4)
    assert yt.tolist() == arrs["t10k"][1][:16].tolist()
    expect = (arrs["t10k"][0][0] / 255.0 - b.mean[0]) / b.std[0]
    assert torch.allclose(xt[0, 0], torch.tensor(expect, dtype=torch.float32), atol=1e-5)
    # images are held once, as uint8
    assert b.test.dataset.images.dtype == torch.uint8
    # RGB models: grey replicated to 3 channels at 64 px; train_size keeps a stratified subset
    b3 = build_data({**cfg, "train_size": 20}, seed=0, channels=3)
    x3, _ = next(iter(b3.train))
    assert b3.input_shape == (3, 64, 64) and x3.shape[1:] == (3, 64, 64) and torch.equal(x3[:, 0], x3[:, 2])
    assert len(b3.split["train"]) == 20
    assert np.bincount(arrs["train"][1][b3.split["train"]], minlength=10).tolist() == [2] * 10


def test_fashion_mnist_augmentation_crops_and_flips_per_image(tmp_path):
    write_fashion(tmp_path)
    b = build_data({"name": "fashion_mnist", "root": str(tmp_path), "batch_size": 60, "val_fraction": 0.2}, seed=0)
    ds = b.train.dataset.dataset
    torch.manual_seed(0)
    x1, _ = ds.batch(range(12))
    x2, _ = ds.batch(range(12))
    plain, _ = InMemoryImages(ds.images, ds.labels, b.mean, b.std).batch(range(12))
    assert x1.shape == plain.shape and not torch.equal(x1, x2)
    shifted = sum(not torch.equal(x1[i], plain[i]) for i in range(12))
    assert shifted >= 8  # 81 crop offsets x 2 flips: almost every image moves
    none = build_data({"name": "fashion_mnist", "root": str(tmp_path), "augment": "none", "val_fraction": 0.2}, seed=0)
    assert not none.train.dataset.dataset.augment


def test_fashion_mnist_roots_env_and_torchvision_layout(tmp_path, monkeypatch):
    write_fashion(tmp_path / "tv" / "FashionMNIST" / "raw", gz=False)
    b = build_data({"name": "fashion_mnist", "root": str(tmp_path / "tv")}, seed=0)
    assert len(b.test.dataset) == N_TEST
    write_fashion(tmp_path / "env")
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "env"))
    assert len(build_data({"name": "fashion_mnist"}, seed=0).test.dataset) == N_TEST


def test_fashion_mnist_missing_and_truncated_files_are_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    with pytest.raises(DataError) as e:
        build_data({"name": "fashion_mnist", "root": str(tmp_path / "nowhere")}, seed=0)
    assert "nowhere" in str(e.value) and FASHION_MNIST_APT in str(e.value) and "\n" not in str(e.value)
    write_fashion(tmp_path / "d")
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte"):
        build_data({"name": "fashion_mnist", "root": str(tmp_path / "d")}, seed=0)
    write_fashion(tmp_path / "t", gz=False)
    f = tmp_path / "t" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        build_data({"name": "fashion_mnist", "root": str(tmp_path / "t")}, seed=0)


def test_config_accepts_small_image_fields_and_refuses_bad_ones():
    cfg = load_config(overrides=["dataset=fashion_mnist", "data.augment=small", "data.channels=1",
                                 "data.train_size=100"])
    assert cfg.data.augment == "small" and cfg.data.channels == 1 and cfg.data.image_size is None
    with pytest.raises(ConfigError, match="data.augment='crop' is not allowed; allowed values: imagenet, small, none"):
        load_config(overrides=["data.augment=crop"])
    with pytest.raises(ConfigError, match="data.channels=2 is not allowed; allowed values: 1, 3"):
        load_config(overrides=["data.channels=2"])
    with pytest.raises(ConfigError, match="data.train_size=0 is out of range"):
        load_config(overrides=["data.train_size=0"])


def test_grey_small_imagefolder_keeps_native_size_and_channels(tmp_path):
    rng = np.random.default_rng(3)
    for split, n in (("train", 6), ("val", 2)):
        for cls in ("shirt", "shoe"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(d / f"{i}.png")
    cfg = {"name": "imagefolder", "root": str(tmp_path), "augment": "small", "channels": 1, "batch_size": 4,
           "val_fraction": 0.25}
    b = build_data(cfg, seed=0)
    x, _ = next(iter(b.train))
    assert b.input_shape == (1, 28, 28) and x.shape[1:] == (1, 28, 28)
    xt, _ = next(iter(b.test))
    img = np.asarray(Image.open(tmp_path / "val" / "shirt" / "0.png"), dtype=np.float32) / 255.0
    assert torch.allclose(xt[0, 0], torch.tensor((img - 0.449) / 0.226), atol=1e-5)  # no crop in eval
    # it trains at that size and channel count (a flexible-input model sized by the data)
    from kpid_core.models import build_model
    from kpid_core.training.distill import DistillLoss
    from kpid_core.training.train import fit

    model = build_model("digits_resnet", num_classes=b.num_classes, in_channels=b.input_shape[0])
    res = fit(model, None, b, DistillLoss(kd_weight=0.0, inner_weight=0.0), {"epochs": 1, "device": "cpu"})
    assert res.epochs_done == 1 and model(x).shape == (4, 2)
    rgb = build_data({**cfg, "augment": "none"}, seed=0, channels=3)  # an RGB model on grey files
    assert rgb.input_shape == (3, 28, 28) and next(iter(rgb.train))[0].shape[1:] == (3, 28, 28)
    with pytest.raises(DataError, match="augment=imagenet is for full-size photos"):
        build_data({"name": "fashion_mnist", "augment": "imagenet"}, seed=0)


@pytest.mark.slow
def test_trial_cli_on_fashion_mnist_reloads_and_refuses_bad_roots(tmp_path, capsys):
    import json

    from kpid_core.__main__ import main
    from kpid_core.prune import load_pruned

    write_fashion(tmp_path / "fm")
    out = tmp_path / "run"
    base = ["trial", "--set", "dataset=fashion_mnist", "--set", f"data.root={tmp_path / 'fm'}", "--set", "model=resnet20",
            "--set", "teacher.epochs=1", "--set", "epochs=1", "--set", "budget=0.3", "--set",
            f"teacher.cache_dir={tmp_path / 'teachers'}", "--quiet"]
    assert main([*base, "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "finished" and m["macs_ratio"] <= 0.3 and m["config"]["data"]["name"] == "fashion_mnist"
    capsys.readouterr()
    model = load_pruned(out / "model").eval()
    x = torch.randn(4, 1, 28, 28)
    assert model(x).shape == (4, 10)
    # bad roots and files: one line, exit 2, nothing left behind
    bad = [(f"data.root={tmp_path / 'nowhere'}", "nowhere"), (f"data.root={tmp_path / 'cut'}", "t10k-images-idx3-ubyte")]
    write_fashion(tmp_path / "cut", gz=False)
    f = tmp_path / "cut" / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    for setting, needle in bad:
        assert main([*base, "--set", setting, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err and "\n" not in err
        assert not (tmp_path / "bad").exists()


def _rewrite(folder, name: str, arr: np.ndarray) -> None:
    (folder / f"{name}-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(arr)))


@pytest.mark.parametrize(("name", "arr", "needle"), [
    ("train-labels-idx1", np.array([200] + [0] * (N_TRAIN - 1), dtype=np.uint8), r"labels 0\.\.200: expected the 10 classes"),
    ("t10k-labels-idx1", np.full(N_TEST, 11, dtype=np.uint8), r"labels 11\.\.11: expected the 10 classes"),
    ("t10k-images-idx3", np.zeros((N_TEST, 20, 20), dtype=np.uint8), r"test images \(20, 20\): expected one size"),
])
def test_fashion_mnist_files_with_wrong_labels_or_sizes_are_one_line(tmp_path, name, arr, needle):
    write_fashion(tmp_path)
    _rewrite(tmp_path, name, arr)
    with pytest.raises(DataError, match=needle) as e:
        build_data({"name": "fashion_mnist", "root": str(tmp_path)}, seed=0)
    assert "\n" not in str(e.value)


def test_fashion_mnist_without_images_is_one_line(tmp_path):
    write_fashion(tmp_path)
    _rewrite(tmp_path, "train-images-idx3", np.zeros((0, 28, 28), dtype=np.uint8))
    _rewrite(tmp_path, "train-labels-idx1", np.zeros(0, dtype=np.uint8))
    with pytest.raises(DataError, match="expected at least one image"):
        build_data({"name": "fashion_mnist", "root": str(tmp_path)}, seed=0)


def test_an_imagefolder_of_one_class_is_refused(tmp_path):
    for split in ("train", "val"):
        d = tmp_path / split / "shirt"
        d.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.zeros((8, 8), dtype=np.uint8), mode="L").save(d / f"{i}.png")
    with pytest.raises(DataError, match=r"1 class folder \(shirt\).*at least 2 classes"):
        build_data({"name": "imagefolder", "root": str(tmp_path)}, seed=0)


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_train_size_keeps_a_stratified_subset_of_every_dataset(name):
    full = build_data({"name": name}, seed=0)
    small = build_data({"name": name, "train_size": 50}, seed=0)
    assert len(small.train.dataset) == 50 < len(full.train.dataset)
    assert set(small.split["train"]) <= set(full.split["train"]) and small.split["val"] == full.split["val"]
