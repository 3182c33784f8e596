"""Datasets for the experiments: CIFAR-10/100 (python pickles), Fashion-MNIST (idx), digits.

Everything is read from local files and nothing is ever downloaded. Images come back as
``uint8`` NHWC arrays and labels as ``int32``; normalisation happens inside the jitted step
(see :class:`Dataset.mean` / :class:`Dataset.std`).

* CIFAR-10: ``<data_dir>/cifar-10-batches-py/{data_batch_1..5,test_batch}`` (or ``data_dir``
  being that directory itself). Each file is a pickled dict with bytes keys ``b'data'``
  (uint8 ``[10000, 3072]``, 1024 R, 1024 G, 1024 B values per row) and ``b'labels'``.
* CIFAR-100: ``<data_dir>/cifar-100-python/{train,test}`` with ``b'fine_labels'`` (100 classes).
* Fashion-MNIST: ``<data_dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (optionally in
  a ``fashion_mnist``/``fashion-mnist`` sub-directory).
* digits: scikit-learn's ``load_digits`` (1,797 real 8×8 handwritten digits that ship inside the
  scikit-learn wheel), split 1,297 / 500 with a fixed stratified split. The embedded default.
* synthetic: random images/labels for smoke tests.

Pickles are parsed with a *restricted* unpickler that refuses every global except NumPy's
array reconstruction helpers, so a hostile file in ``--data_dir`` cannot execute code.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import struct
from typing import Any

import numpy as np

__all__ = [
    "Dataset",
    "DataError",
    "load_dataset",
    "load_cifar",
    "load_fashion_mnist",
    "load_digits_dataset",
    "synthetic_dataset",
    "read_idx",
    "DATASETS",
]

DATASETS = ("digits", "cifar10", "cifar100", "fashion_mnist", "synthetic")

# Per-channel statistics of the training sets (on the [0, 1] scale).
_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR10_STD = (0.2470, 0.2435, 0.2616)
_CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
_CIFAR100_STD = (0.2673, 0.2564, 0.2762)
_FMNIST_MEAN = (0.2860,)
_FMNIST_STD = (0.3530,)


class DataError(ValueError):
    """A dataset file is missing or does not have the expected layout."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """An in-memory image classification dataset.

    Attributes:
      name: dataset name.
      x_train, x_test: ``uint8`` images ``[N, H, W, C]``.
      y_train, y_test: ``int32`` labels ``[N]`` in ``[0, num_classes)``.
      num_classes: number of classes.
      mean, std: per-channel normalisation constants on the ``[0, 1]`` scale.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> Dataset:
        """The first ``n_train`` / ``n_test`` examples (for quick runs)."""
        return dataclasses.replace(
            self,
            x_train=self.x_train[:n_train], y_train=self.y_train[:n_train],
            x_test=self.x_test[:n_test], y_test=self.y_test[:n_test],
        )


# ---------------------------------------------------------------------------------------------
# restricted unpickling
# ---------------------------------------------------------------------------------------------

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _load_pickle(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure becomes a DataError
        raise DataError(f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e}).") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}.")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


# ---------------------------------------------------------------------------------------------
# CIFAR
# ---------------------------------------------------------------------------------------------

_CIFAR_LAYOUT = {
    "cifar10": {
        "dir": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "label_key": "labels",
        "classes": 10,
        "archive": "cifar-10-python.tar.gz",
        "sizes": (50000, 10000),
    },
    "cifar100": {
        "dir": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "label_key": "fine_labels",
        "classes": 100,
        "archive": "cifar-100-python.tar.gz",
        "sizes": (50000, 10000),
    },
}


def _find_dir(data_dir: str, sub: str) -> str:
    if os.path.basename(os.path.normpath(data_dir)) == sub:
        return data_dir
    return os.path.join(data_dir, sub)


def _read_cifar_files(root: str, files: list[str], label_key: str, classes: int, archive: str):
    xs, ys = [], []
    for fname in files:
        path = os.path.join(root, fname)
        if not os.path.isfile(path):
            raise DataError(
                f"Missing CIFAR file {path}. Expected the python layout '{os.path.basename(root)}/' "
                f"(unpack the official {archive}); files: {', '.join(files)}. Nothing is downloaded."
            )
        d = _load_pickle(path)
        for key in ("data", label_key):
            if key not in d:
                raise DataError(f"{path}: missing key b'{key}' (found {sorted(map(str, d))}).")
        data = d["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(
                f"{path}: b'data' must be a uint8 array [N, 3072]; got "
                f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}."
            )
        labels = np.asarray(d[label_key])
        if labels.ndim != 1 or labels.shape[0] != data.shape[0] or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"{path}: b'{label_key}' must hold {data.shape[0]} integer labels; got shape {labels.shape}, "
                f"dtype {labels.dtype}."
            )
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise DataError(
                f"{path}: labels must lie in [0, {classes}); got range [{labels.min()}, {labels.max()}]."
            )
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(labels.astype(np.int32))
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


def load_cifar(data_dir: str, name: str = "cifar10", *, check_sizes: bool = True) -> Dataset:
    """CIFAR-10 or CIFAR-100 from the standard python-pickle directory under ``data_dir``.

    Args:
      data_dir: the directory that contains ``cifar-10-batches-py`` / ``cifar-100-python``, or
        that directory itself.
      name: ``'cifar10'`` or ``'cifar100'``.
      check_sizes: require the official 50,000 / 10,000 split sizes.

    Raises:
      DataError: a file is missing, is not a safe pickle, or has wrong keys, dtypes, shapes,
        sizes or label ranges. The message names the file and the expected layout.
    """
    if name not in _CIFAR_LAYOUT:
        raise ValueError(f"`name` must be 'cifar10' or 'cifar100', got {name!r}.")
    lay = _CIFAR_LAYOUT[name]
    root = _find_dir(data_dir, lay["dir"])
    if not os.path.isdir(root):
        raise DataError(
            f"{name}: directory {root} not found. Expected {lay['dir']}/ (from the official "
            f"{lay['archive']}) inside --data_dir={data_dir}. Nothing is downloaded."
        )
    xtr, ytr = _read_cifar_files(root, lay["train"], lay["label_key"], lay["classes"], lay["archive"])
    xte, yte = _read_cifar_files(root, lay["test"], lay["label_key"], lay["classes"], lay["archive"])
    if check_sizes and (len(xtr), len(xte)) != lay["sizes"]:
        raise DataError(
            f"{root}: expected {lay['sizes'][0]} train / {lay['sizes'][1]} test images, found "
            f"{len(xtr)} / {len(xte)}."
        )
    mean, std = (_CIFAR10_MEAN, _CIFAR10_STD) if name == "cifar10" else (_CIFAR100_MEAN, _CIFAR100_STD)
    return Dataset(name, xtr, ytr, xte, yte, lay["classes"], mean, std)


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (idx format)
# ---------------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str) -> np.ndarray:
    """Read an idx file (raw or gzip-compressed, told apart by its first two bytes).

    Layout: two zero bytes, a dtype code (0x08 = uint8), the number of dimensions, then one
    big-endian uint32 per dimension, then the data in C order.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"Missing idx file {path}. Nothing is downloaded.") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: corrupt gzip stream ({e}).") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an idx file (bad magic number {raw[:4].hex() if raw else 'empty'}).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated idx header.")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    n = int(np.prod(dims)) if dims else 1
    if len(raw) - header != n * dtype.itemsize:
        raise DataError(
            f"{path}: idx header promises shape {dims} ({n * dtype.itemsize} bytes) but the file holds "
            f"{len(raw) - header} bytes of data."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(root: str, stem: str) -> str:
    for sub in ("", "fashion_mnist", "fashion-mnist", "FashionMNIST/raw"):
        for ext in ("", ".gz"):
            p = os.path.join(root, sub, stem + ext)
            if os.path.isfile(p):
                return p
    raise DataError(
        f"Fashion-MNIST: missing {stem}[.gz] under {root} (expected train-images-idx3-ubyte, "
        f"train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, raw or .gz). "
        f"Nothing is downloaded."
    )


def load_fashion_mnist(data_dir: str, *, check_sizes: bool = True) -> Dataset:
    """Fashion-MNIST (28×28×1, 10 classes) from its four idx files under ``data_dir``."""
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ip, lp = _find_idx(data_dir, f"{prefix}-images-idx3-ubyte"), _find_idx(data_dir, f"{prefix}-labels-idx1-ubyte")
        x, y = read_idx(ip), read_idx(lp)
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{ip}: expected uint8 images [N, 28, 28], got {x.dtype} {x.shape}.")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"{lp}: expected {x.shape[0]} labels, got shape {y.shape}.")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise DataError(f"{lp}: labels must lie in [0, 10); got range [{y.min()}, {y.max()}].")
        parts[split] = (x[..., None].copy(), y.astype(np.int32))
    if check_sizes and (len(parts["train"][0]), len(parts["test"][0])) != (60000, 10000):
        raise DataError(
            f"{data_dir}: expected 60000 train / 10000 test Fashion-MNIST images, found "
            f"{len(parts['train'][0])} / {len(parts['test'][0])}."
        )
    return Dataset("fashion_mnist", *parts["train"], *parts["test"], 10, _FMNIST_MEAN, _FMNIST_STD)


# ---------------------------------------------------------------------------------------------
# digits (embedded) and synthetic
# ---------------------------------------------------------------------------------------------


def load_digits_dataset(*, n_test: int = 500, split_seed: int = 0) -> Dataset:
    """scikit-learn's ``load_digits`` as an 8×8×1 uint8 image dataset, stratified 1,297 / 500.

    Pixel values 0..16 are mapped to 0..255 (``round(v · 255 / 16)``), so the 17 grey levels stay
    distinct. The split is fixed by ``split_seed``.
    """
    from sklearn.datasets import load_digits  # local import: only the digits path needs sklearn
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    y = d.target.astype(np.int32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=n_test, stratify=y, random_state=split_seed)
    mean = float(xtr.mean() / 255.0)
    std = float(xtr.std() / 255.0)
    return Dataset("digits", np.ascontiguousarray(xtr), ytr, np.ascontiguousarray(xte), yte, 10, (mean,), (std,))


def synthetic_dataset(
    n_train: int = 64, n_test: int = 32, *, image_shape=(8, 8, 1), num_classes: int = 4, seed: int = 0
) -> Dataset:
    """Random uint8 images whose label is weakly encoded in the mean brightness (learnable)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.integers(0, num_classes, size=n).astype(np.int32)
    x = rng.integers(0, 128, size=(n, *image_shape)).astype(np.float32)
    x += (y * (127.0 / max(num_classes - 1, 1)))[:, None, None, None]
    x = np.clip(x, 0, 255).astype(np.uint8)
    c = image_shape[-1]
    return Dataset("synthetic", x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes,
                   (0.5,) * c, (0.25,) * c)


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """Dispatch on ``name`` (one of :data:`DATASETS`).

    ``digits`` and ``synthetic`` need no files; the others need ``data_dir``.
    """
    if name not in DATASETS:
        raise ValueError(f"`data.dataset` must be one of {DATASETS}, got {name!r}.")
    if name == "digits":
        return load_digits_dataset()
    if name == "synthetic":
        return synthetic_dataset()
    if not data_dir:
        raise DataError(
            f"data.dataset={name!r} needs --data_dir (a local copy of the dataset); nothing is "
            f"downloaded. Without --data_dir use configs/digits/*.gin (embedded data)."
        )
    if name == "fashion_mnist":
        return load_fashion_mnist(data_dir)
    return load_cifar(data_dir, name)
