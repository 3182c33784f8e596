"""Loaders (CIFAR pickles, Fashion-MNIST idx, digits) and NumPy augmentation."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from experiments.common import augment as aug
from experiments.common.data import DataError, load_cifar, load_dataset, load_fashion_mnist, read_idx


def _write_batch(path, n, label_key="labels", classes=10, seed=0, **overrides):
    rng = np.random.default_rng(seed)
    d = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
         label_key.encode(): [int(v) for v in rng.integers(0, classes, size=n)],
         b"batch_label": b"fake", b"filenames": [b"x.png"] * n}
    for k, v in overrides.items():
        d[k.encode()] = v
    with open(path, "wb") as f:
        pickle.dump(d, f)
    return d


@pytest.fixture
def fake_cifar10(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    batches = {name: _write_batch(root / name, 4, seed=i)
               for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])}
    return tmp_path, batches


def test_cifar10_right(fake_cifar10):
    data_dir, batches = fake_cifar10
    for d in (str(data_dir), str(data_dir / "cifar-10-batches-py")):
        ds = load_cifar(d, "cifar10", check_sizes=False)
        assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_train.dtype == np.uint8
        assert ds.x_test.shape == (4, 32, 32, 3) and ds.y_train.dtype == np.int32
        # Row layout: 1024 R, then 1024 G, then 1024 B, each row-major 32x32.
        raw = batches["data_batch_1"][b"data"][2]
        assert ds.x_train[2, 5, 7, 0] == raw[5 * 32 + 7]
        assert ds.x_train[2, 5, 7, 1] == raw[1024 + 5 * 32 + 7]
        assert ds.x_train[2, 31, 0, 2] == raw[2048 + 31 * 32]
        assert list(ds.y_train[:4]) == batches["data_batch_1"][b"labels"]
    with pytest.raises(DataError, match="expected 50000"):
        load_cifar(str(data_dir), "cifar10")  # the official sizes are checked by default


def test_cifar100_right(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    _write_batch(root / "train", 6, label_key="fine_labels", classes=100)
    _write_batch(root / "test", 3, label_key="fine_labels", classes=100)
    ds = load_cifar(str(tmp_path), "cifar100", check_sizes=False)
    assert ds.num_classes == 100 and ds.x_train.shape == (6, 32, 32, 3) and len(ds.y_test) == 3


@pytest.mark.parametrize("corruption, pattern", [
    ("missing", "data_batch_3"),
    ("dtype", "uint8"),
    ("shape", r"\[N, 3072\]"),
    ("labels_range", r"\[0, 10\)"),
    ("labels_count", "labels"),
    ("not_pickle", "data_batch_3"),
    ("malicious", "refusing"),
])
def test_cifar_corrupt(fake_cifar10, corruption, pattern):
    data_dir, _ = fake_cifar10
    p = data_dir / "cifar-10-batches-py" / "data_batch_3"
    if corruption == "missing":
        os.unlink(p)
    elif corruption == "dtype":
        _write_batch(p, 4, data=np.zeros((4, 3072), np.float32))
    elif corruption == "shape":
        _write_batch(p, 4, data=np.zeros((4, 1024), np.uint8))
    elif corruption == "labels_range":
        _write_batch(p, 4, labels=[0, 1, 2, 10])
    elif corruption == "labels_count":
        _write_batch(p, 4, labels=[0, 1])
    elif corruption == "not_pickle":
        p.write_bytes(b"this is not a pickle")
    elif corruption == "malicious":
        class Evil:
            def __reduce__(self):
                return (os.system, ("echo pwned",))
        p.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match=pattern) as e:
        load_cifar(str(data_dir), "cifar10", check_sizes=False)
    if corruption != "missing":
        assert "data_batch_3" in str(e.value)


def test_missing_dataset_dir_message(tmp_path):
    with pytest.raises(DataError, match="cifar-100-python"):
        load_cifar(str(tmp_path), "cifar100")
    with pytest.raises(DataError, match="--data_dir"):
        load_dataset("cifar10", None)


def _idx_bytes(arr, code=0x08):
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return head + arr.astype(">u1" if code == 0x08 else ">i4").tobytes()


@pytest.mark.parametrize("compressed", [False, True])
def test_fashion_mnist_idx(tmp_path, compressed):
    rng = np.random.default_rng(0)
    files = {"train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)).astype(np.uint8),
             "train-labels-idx1-ubyte": np.array([0, 9, 3, 3, 1], np.uint8),
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 28, 28)).astype(np.uint8),
             "t10k-labels-idx1-ubyte": np.array([4, 5], np.uint8)}
    for name, a in files.items():
        b = _idx_bytes(a)
        if compressed:
            (tmp_path / (name + ".gz")).write_bytes(gzip.compress(b))
        else:
            (tmp_path / name).write_bytes(b)
    ds = load_fashion_mnist(str(tmp_path), check_sizes=False)
    assert ds.x_train.shape == (5, 28, 28, 1) and ds.x_test.shape == (2, 28, 28, 1)
    np.testing.assert_array_equal(ds.x_train[..., 0], files["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.y_train, [0, 9, 3, 3, 1])
    # Corrupt: bad magic, truncated data, label out of range, missing file.
    name = "train-labels-idx1-ubyte" + (".gz" if compressed else "")
    p = tmp_path / name
    good = p.read_bytes()
    wrap = gzip.compress if compressed else (lambda b: b)
    p.write_bytes(wrap(b"\x01\x02" + _idx_bytes(files["train-labels-idx1-ubyte"])[2:]))
    with pytest.raises(DataError, match="magic"):
        load_fashion_mnist(str(tmp_path), check_sizes=False)
    p.write_bytes(wrap(_idx_bytes(files["train-labels-idx1-ubyte"])[:-1]))
    with pytest.raises(DataError, match="promises shape"):
        load_fashion_mnist(str(tmp_path), check_sizes=False)
    p.write_bytes(wrap(_idx_bytes(np.array([0, 10, 3, 3, 1], np.uint8))))
    with pytest.raises(DataError, match=r"\[0, 10\)"):
        load_fashion_mnist(str(tmp_path), check_sizes=False)
    p.write_bytes(good)
    os.unlink(tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if compressed else "")))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_fashion_mnist(str(tmp_path), check_sizes=False)


def test_read_idx_int32(tmp_path):
    a = np.arange(6, dtype=np.int32).reshape(2, 3) - 2
    (tmp_path / "x").write_bytes(_idx_bytes(a, 0x0C))
    np.testing.assert_array_equal(read_idx(str(tmp_path / "x")), a)


def test_digits_embedded():
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1297, 8, 8, 1) and ds.x_test.shape == (500, 8, 8, 1)
    assert ds.x_train.dtype == np.uint8 and ds.x_train.max() == 255
    assert sorted(set(ds.y_test.tolist())) == list(range(10))
    # 17 grey levels survive the mapping 0..16 -> 0..255.
    assert len(np.unique(ds.x_train)) == 17


def test_augmentation_semantics_and_determinism():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, size=(16, 8, 8, 1)).astype(np.uint8)  # no zeros: cutout is visible
    y = np.arange(16, dtype=np.int32)
    cfg = aug.AugmentConfig(crop_pad=2, flip=True, cutout=3, cutout_p=1.0)
    b1 = aug.train_batch(x, y, batch_size=8, seed=1, epoch=2, step=1, augment=cfg)
    b2 = aug.train_batch(x, y, batch_size=8, seed=1, epoch=2, step=1, augment=cfg)
    b3 = aug.train_batch(x, y, batch_size=8, seed=1, epoch=3, step=1, augment=cfg)
    np.testing.assert_array_equal(b1.x, b2.x)
    assert not np.array_equal(b1.x, b3.x)
    np.testing.assert_array_equal(b1.y, b1.idx)  # labels follow the sample indices
    # Every cutout image has a zero square of at most 3x3 and at least 1 pixel.
    zeros = (b1.x[..., 0] == 0).sum(axis=(1, 2))
    assert (zeros >= 1).all() and (zeros <= 9).all()
    # Crop with reflect padding: the un-augmented crop at offset (p, p) is the identity.
    crop = aug.AugmentConfig(crop_pad=2)
    out = aug.augment_batch(x[:4], crop, np.random.default_rng(5))
    padded = np.pad(x[:4], ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for i in range(4):
        found = any(np.array_equal(out[i], padded[i, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))
        assert found
    flipped = aug.augment_batch(x[:64], aug.AugmentConfig(flip=True), np.random.default_rng(1))
    for i in range(len(flipped)):
        assert np.array_equal(flipped[i], x[i]) or np.array_equal(flipped[i], x[i, :, ::-1])
    # An epoch visits every example once.
    idx = np.concatenate([aug.train_batch(x, y, batch_size=4, seed=0, epoch=0, step=s,
                                          augment=aug.AugmentConfig()).idx for s in range(4)])
    assert sorted(idx.tolist()) == list(range(16))
    ev = list(aug.eval_batches(x[:10], y[:10], 4))
    assert len(ev) == 3 and ev[-1].mask.tolist() == [1, 1, 0, 0] and ev[-1].idx.tolist() == [8, 9, -1, -1]


def test_process_rows_concatenate_to_the_whole_batch():
    """Each process builds only its rows of a batch; the pieces of all processes, in order,
    equal the batch built whole (so a run is the same on any number of processes)."""
    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, size=(40, 8, 8, 1)).astype(np.uint8)
    y = np.arange(40, dtype=np.int32)
    cfg = aug.AugmentConfig(crop_pad=2, flip=True, cutout=3, cutout_p=0.5)
    whole = aug.train_batch(x, y, batch_size=12, seed=3, epoch=1, step=2, augment=cfg)
    for n_proc in (2, 3, 4):
        k = 12 // n_proc
        parts = [aug.train_batch(x, y, batch_size=12, seed=3, epoch=1, step=2, augment=cfg,
                                 rows=slice(p * k, (p + 1) * k)) for p in range(n_proc)]
        for field in ("x", "y", "idx", "mask"):
            np.testing.assert_array_equal(np.concatenate([getattr(b, field) for b in parts]), getattr(whole, field))
    ev_whole = list(aug.eval_batches(x[:10], y[:10], 4))
    ev_parts = [list(aug.eval_batches(x[:10], y[:10], 4, rows=slice(2 * p, 2 * p + 2))) for p in range(2)]
    for i, b in enumerate(ev_whole):
        np.testing.assert_array_equal(np.concatenate([ev_parts[0][i].x, ev_parts[1][i].x]), b.x)
        np.testing.assert_array_equal(np.concatenate([ev_parts[0][i].mask, ev_parts[1][i].mask]), b.mask)
    with pytest.raises(ValueError, match="rows"):
        aug.augment_batch(x[:3], cfg, np.random.default_rng(0), rows=slice(0, 4), total=12)


def test_local_rows_and_single_process_defaults():
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from experiments.common import distributed as D

    mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    assert D.local_rows(NamedSharding(mesh, PartitionSpec("data")), 8) == slice(0, 8)
    assert D.initialize() is False  # nothing set: one process, jax.distributed untouched
    assert D.any_process(True, NamedSharding(mesh, PartitionSpec("data"))) is True
    with pytest.raises(ValueError, match="together"):
        D.initialize("127.0.0.1:1")  # an address without a process count / id
