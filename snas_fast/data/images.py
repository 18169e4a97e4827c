"""Datasets for the architecture search: scikit-learn's bundled digits and CIFAR-10 in its python format.

Nothing here downloads anything. ``digits`` ships with scikit-learn; CIFAR-10 is read from a
``cifar-10-batches-py`` folder the user already has (https://www.cs.toronto.edu/~kriz/cifar.html).

Every loader returns ``(train, val, info)``: two :class:`~torch.utils.data.TensorDataset` of
``(images [N, C, H, W] float32, labels [N] int64)`` and a :class:`DatasetInfo`. A missing or corrupt dataset
raises :class:`DatasetError` with a one-line message that names the path, so a CLI can print it and exit.

Three disjoint parts per dataset: search-train and search-validation (``split="search"``: what a search trains
and validates on), and a test part that only final retraining reports use (``split="train_test"`` returns the
search parts together as train, and the test part). CIFAR-10's test part is its ``test_batch``; the digits' is a
fixed quarter of the images (:func:`digits_split_indices`).
"""
from __future__ import annotations

import dataclasses
import numbers
import os
import pickle
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

__all__ = [
    "limit",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DIGITS_TEST_FRACTION",
    "DIGITS_TEST_SEED",
    "DatasetError",
    "DatasetInfo",
    "digits_split_indices",
    "load_cifar10",
    "load_dataset",
    "load_digits",
]

PathLike = Union[str, "os.PathLike[str]"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"


class DatasetError(Exception):
    """A dataset path that is missing or corrupt. The message is one line: ``<path>: <what is wrong>``.

    ``DatasetError(path, problem)`` builds that message (``.path`` and ``.problem`` keep the parts);
    ``DatasetError(message)`` takes a ready message. Either way newlines are folded into spaces.
    """

    def __init__(self, path: PathLike, problem: Optional[str] = None):
        self.path = Path(path) if problem is not None else None
        self.problem = " ".join(str(problem if problem is not None else path).split())
        super().__init__(f"{self.path}: {self.problem}" if self.path is not None else self.problem)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about an image dataset, and the sizes of the two splits. ``kind`` is
    ``"images"`` (:mod:`snas_fast.data`)."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int  # the side of a square image; the height of another (image_width)
    train_size: int
    val_size: int
    mean: Tuple[float, ...]  # per channel, subtracted from the [0, 1] pixels
    std: Tuple[float, ...]  # per channel, divided into them after the mean is subtracted
    classes: Tuple[str, ...] = ()
    image_width: Optional[int] = None  # None: square (image_size); a sequence of length L is a [1, L] image

    kind = "images"

    @property
    def image_shape(self) -> Tuple[int, int]:
        """``(H, W)`` of an image."""
        return self.image_size, self.image_width or self.image_size

    def to_dict(self) -> dict:
        """A plain dict (JSON-ready) of the fields."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------------------
# Shared checks


def _check_fraction(value: float, name: str = "val_fraction") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name}: expected a number in (0, 1), got {value!r}")
    return float(value)


def _check_limit(limit: Optional[int]) -> Optional[int]:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit: expected None or a positive int, got {limit!r}")
    return int(limit)


def _split_sizes(n: int, val_fraction: float) -> Tuple[int, int]:
    n_val = int(round(n * val_fraction))
    n_val = min(max(n_val, 1), n - 1)
    return n - n_val, n_val


def _normalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """images: [N, C, H, W] float32 in [0, 1] -> (images - mean[c]) / std[c], in place."""
    m = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return images.sub_(m).div_(s)


# --------------------------------------------------------------------------------------------------------------
# digits (scikit-learn, bundled)


#: Share of the digits held out as the test part, and the seed that draws it. The seed is fixed (not the run's):
#: like CIFAR-10's ``test_batch``, the test part is the same for every search and every retraining, so no run
#: ever validates or trains on the images a final report is measured on.
DIGITS_TEST_FRACTION = 0.25
DIGITS_TEST_SEED = 20190101


def digits_split_indices(labels, val_fraction: float = 0.5, seed: int = 0,
                         test_fraction: float = DIGITS_TEST_FRACTION) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three disjoint parts of the digits, as index arrays ``(search_train, search_val, test)``.

    ``test`` (``test_fraction`` of the images, stratified by class) is drawn with the fixed
    :data:`DIGITS_TEST_SEED`; the rest is split into ``search_train`` and ``search_val`` (``val_fraction`` of it,
    stratified) by ``seed``. ``labels``: the class of every image, ``[N]`` (the parts are stratified by it).
    """
    from sklearn.model_selection import train_test_split

    val_fraction = _check_fraction(val_fraction)
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    labels = np.asarray(labels)
    rest, test = train_test_split(np.arange(len(labels)), test_size=test_fraction, random_state=DIGITS_TEST_SEED,
                                  shuffle=True, stratify=labels)
    train, val = train_test_split(rest, test_size=val_fraction, random_state=int(seed), shuffle=True,
                                  stratify=labels[rest])
    return train, val, test


def load_digits(val_fraction: float = 0.5, seed: int = 0, split: str = "search",
                test_fraction: float = DIGITS_TEST_FRACTION) -> Tuple[TensorDataset, TensorDataset, DatasetInfo]:
    """scikit-learn's 1797 8x8 handwritten digits in three disjoint parts (:func:`digits_split_indices`):
    search-train, search-validation and a test part held out for final reports only.

    Args:
        val_fraction: share of the non-test images that go to search-validation, in (0, 1).
        seed: seed of the search-train / search-validation split; the same seed gives the same split. The test
            part does not depend on it.
        split: ``"search"``: ``(search-train, search-validation)``, what a search trains and validates on;
            ``"train_test"``: ``(search-train + search-validation, test)``, what a final retraining trains on and
            reports (as CIFAR-10's ``"train_test"``: all training images, then the test batch).
        test_fraction: share of all images held out as the test part, in (0, 1).

    Returns:
        ``(train, val, info)``: ``TensorDataset`` of images [N, 1, 8, 8] float32 (pixels scaled to [0, 1], then
        normalised by the first part's mean and std) and labels [N] int64 in 0..9; ``info`` a :class:`DatasetInfo`.
    """
    if split not in ("search", "train_test"):
        raise ValueError(f"split: expected 'search' or 'train_test', got {split!r}")
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("load_digits: needs scikit-learn (pip install scikit-learn)") from e

    bunch = _sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0  # [N, 8, 8], pixel values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)  # [N]
    idx_train, idx_val, idx_test = digits_split_indices(labels, val_fraction, seed, test_fraction)
    if split == "train_test":
        idx_train, idx_val = np.concatenate([idx_train, idx_val]), idx_test
    x = torch.from_numpy(images).unsqueeze(1)  # [N, 1, 8, 8]
    y = torch.from_numpy(labels)
    x_train, x_val = x[torch.from_numpy(idx_train)], x[torch.from_numpy(idx_val)]
    mean, std = float(x_train.mean()), float(x_train.std())
    x_train, x_val = _normalise(x_train, (mean,), (std,)), _normalise(x_val, (mean,), (std,))
    train = TensorDataset(x_train, y[torch.from_numpy(idx_train)])
    val = TensorDataset(x_val, y[torch.from_numpy(idx_val)])
    info = DatasetInfo(
        name="digits", num_classes=10, in_channels=1, image_size=8, train_size=len(train), val_size=len(val),
        mean=(mean,), std=(std,), classes=tuple(str(d) for d in range(10)),
    )
    return train, val, info


# --------------------------------------------------------------------------------------------------------------
# CIFAR-10 (python format)


def _numpy_core(name: str):
    """numpy's ``_core`` submodule (numpy >= 2) or ``core`` (numpy 1) without the numpy 2 deprecation warning."""
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:  # numpy 1.x
        return importlib.import_module(f"numpy.core.{name}")


def _allowed_globals() -> dict:
    import codecs

    multiarray, numeric = _numpy_core("multiarray"), _numpy_core("numeric")
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for pkg in ("numpy.core", "numpy._core"):  # the real files say numpy.core; numpy 2 writes numpy._core
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{pkg}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists and dicts only: a batch file cannot run code when it is loaded."""

    _allowed: Optional[dict] = None

    def find_class(self, module: str, name: str):
        if _BatchUnpickler._allowed is None:
            _BatchUnpickler._allowed = _allowed_globals()
        try:
            return _BatchUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refers to {module}.{name}, which a CIFAR-10 batch never holds") from None


def _unpickle(path: Path) -> object:
    if not path.is_file():
        raise DatasetError(path, "missing file (expected the python-format CIFAR-10 from "
                                 "https://www.cs.toronto.edu/~kriz/cifar.html)")
    try:
        with open(path, "rb") as f:
            return _BatchUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DatasetError(path, f"cannot be read ({e.strerror or e})") from e
    except Exception as e:  # truncated or garbage files raise any of several errors from pickle and numpy
        raise DatasetError(path, f"not a CIFAR-10 python batch: unpickling failed ({type(e).__name__}: {e})") from e


def _read_batch(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """One batch file -> (data [n, 3072] uint8, labels [n] int64), checked."""
    batch = _unpickle(path)
    if not isinstance(batch, dict):
        raise DatasetError(path, f"expected a pickled dict with b'data' and b'labels', got {type(batch).__name__}")
    missing = [k for k in (b"data", b"labels") if k not in batch]
    if missing:
        raise DatasetError(path, f"expected keys b'data' and b'labels', missing {missing}")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(path, f"b'data': expected a uint8 array of shape [N, 3072], got {got}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DatasetError(path, f"b'labels': expected a list of ints, got {type(labels).__name__}") from e
    if labels.shape != (data.shape[0],):
        raise DatasetError(path, f"b'labels': expected {data.shape[0]} labels (one per row of b'data'), "
                                 f"got shape {list(labels.shape)}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(path, f"b'labels': expected values in 0..9, got {labels.min()}..{labels.max()}")
    return data, labels


def _read_classes(folder: Path) -> Tuple[str, ...]:
    path = folder / CIFAR10_META_FILE
    if not path.exists():  # the class names are a nicety; the batches alone are a usable dataset
        return CIFAR10_CLASSES
    meta = _unpickle(path)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, (list, tuple)) or len(names) != 10:
        raise DatasetError(path, "expected a pickled dict with b'label_names', a list of 10 class names")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names)


def _cifar10_folder(data_dir: PathLike) -> Path:
    """``data_dir`` is the ``cifar-10-batches-py`` folder itself or its parent."""
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise DatasetError(root, f"no such directory (expected {CIFAR10_FOLDER} or the folder that holds it)")
    if not root.is_dir():
        raise DatasetError(root, f"not a directory (expected {CIFAR10_FOLDER} or the folder that holds it)")
    nested = root / CIFAR10_FOLDER
    if nested.is_dir():
        return nested
    if (root / CIFAR10_TRAIN_FILES[0]).exists() or root.name == CIFAR10_FOLDER:
        return root
    raise DatasetError(root, f"holds neither {CIFAR10_FOLDER}/ nor CIFAR-10 batch files "
                             f"({CIFAR10_TRAIN_FILES[0]}, ...)")


def _to_images(data: np.ndarray) -> Tensor:
    """data [n, 3072] uint8 (rows of R, G, B planes) -> [n, 3, 32, 32] float32, normalised."""
    x = torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32).to(torch.float32).div_(255.0)
    return _normalise(x, CIFAR10_MEAN, CIFAR10_STD)


def load_cifar10(
    data_dir: PathLike,
    split: str = "search",
    val_fraction: float = 0.5,
    seed: int = 0,
    limit: Optional[int] = None,
) -> Tuple[TensorDataset, TensorDataset, DatasetInfo]:
    """CIFAR-10 from its python-format folder, normalised with the CIFAR-10 mean and std.

    Args:
        data_dir: the ``cifar-10-batches-py`` folder, or the folder that holds it.
        split: ``"search"``: the 50k training images shuffled by ``seed`` and split into train and val
            (``val_fraction`` of them), the SNAS/DARTS search setting; ``"train_test"``: all five training
            batches as train and ``test_batch`` as val (``val_fraction`` and ``seed`` are unused).
        val_fraction: share of the training images that go to val in the ``"search"`` split, in (0, 1).
        seed: seed of the ``"search"`` split.
        limit: keep only the first ``limit`` images of each split (tests and smoke runs).

    Returns:
        ``(train, val, info)``: ``TensorDataset`` of images [N, 3, 32, 32] float32 and labels [N] int64 in 0..9.

    Raises:
        DatasetError: the folder or a batch file is missing, cannot be unpickled, or holds wrongly shaped data.
    """
    if split not in ("search", "train_test"):
        raise ValueError(f"split: expected 'search' or 'train_test', got {split!r}")
    val_fraction = _check_fraction(val_fraction)
    limit = _check_limit(limit)
    folder = _cifar10_folder(data_dir)
    for name in CIFAR10_TRAIN_FILES + ((CIFAR10_TEST_FILE,) if split == "train_test" else ()):
        if not (folder / name).is_file():  # check every file first: fail fast, before reading 150 MB
            raise DatasetError(folder / name, "missing CIFAR-10 batch file (expected data_batch_1..5 and test_batch)")
    classes = _read_classes(folder)

    parts = [_read_batch(folder / name) for name in CIFAR10_TRAIN_FILES]
    data = np.concatenate([d for d, _ in parts])  # [50000, 3072] uint8 for the real dataset
    labels = np.concatenate([y for _, y in parts])  # [50000] int64
    if split == "search":
        if len(labels) < 2:
            raise DatasetError(folder, f"the training batches hold {len(labels)} images; a search split needs 2+")
        n_train, _ = _split_sizes(len(labels), val_fraction)
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(int(seed))).numpy()
        idx_train, idx_val = perm[:n_train], perm[n_train:]
        if limit is not None:
            idx_train, idx_val = idx_train[:limit], idx_val[:limit]
        train_xy = (data[idx_train], labels[idx_train])
        val_xy = (data[idx_val], labels[idx_val])
    else:
        test_data, test_labels = _read_batch(folder / CIFAR10_TEST_FILE)
        train_xy, val_xy = (data[:limit], labels[:limit]), (test_data[:limit], test_labels[:limit])

    train = TensorDataset(_to_images(train_xy[0]), torch.from_numpy(np.ascontiguousarray(train_xy[1])))
    val = TensorDataset(_to_images(val_xy[0]), torch.from_numpy(np.ascontiguousarray(val_xy[1])))
    info = DatasetInfo(
        name="cifar10", num_classes=10, in_channels=3, image_size=32, train_size=len(train), val_size=len(val),
        mean=CIFAR10_MEAN, std=CIFAR10_STD, classes=classes,
    )
    return train, val, info


# --------------------------------------------------------------------------------------------------------------
# Dispatch

DATASETS = ("digits", "cifar10")


def load_dataset(
    name: str, data_dir: Optional[PathLike] = None, **kw
) -> Tuple[TensorDataset, TensorDataset, DatasetInfo]:
    """``load_digits(**kw)`` for ``"digits"`` (bundled; ``data_dir`` is ignored) or
    ``load_cifar10(data_dir, **kw)`` for ``"cifar10"``.
    """
    key = str(name).lower()
    if key == "digits":
        return load_digits(**kw)
    if key == "cifar10":
        if data_dir is None:
            raise ValueError("data_dir: expected the cifar-10-batches-py folder (or its parent) for 'cifar10', "
                             "got None")
        return load_cifar10(data_dir, **kw)
    raise ValueError(f"name: expected one of {list(DATASETS)}, got {name!r}")


def limit(datasets: Sequence[TensorDataset], n: Optional[int]) -> Tuple[TensorDataset, ...]:
    """The first ``n`` examples of each dataset (all of them when ``n`` is None or 0): ``--data-limit``."""
    if not n:
        return tuple(datasets)
    return tuple(TensorDataset(*(t[:n] for t in ds.tensors)) for ds in datasets)


def load_part(name: str, data_dir: Optional[PathLike], seed: int, split: str):
    """The loader of :data:`snas_fast.data.DATASETS` for the image datasets (:func:`load_dataset`)."""
    return load_dataset(name, data_dir, seed=seed, split=split)
