"""MNIST-1D (Greydanus & Kobak, ICML 2024): ten classes of one-channel sequences of length 40, generated offline by
the ``mnist1d`` package with its published arguments (``get_dataset_args()``: 5000 sequences, seed 42, 4000 for
training and 1000 for testing). Nothing is downloaded: the sequences are rebuilt from the package's templates in
about a second (``mnist1d.data.make_dataset``; the package's ``get_dataset`` would try the network first).

A sequence is a one-row image, ``[1, 1, 40]`` (channels, height, width), so every image space and the fused edge
read it unchanged (the ``darts1d`` space's candidates are ``1 x k``). The 1000 test sequences are the test part,
which no search reads; search-train and search-validation are a stratified split of the 4000, drawn by the run's
seed. The package standardises the sequences already (mean 0, std 1 over the training set); nothing more is done.
"""
from __future__ import annotations

import functools
from typing import Tuple

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .images import DatasetError, DatasetInfo, _check_fraction

__all__ = ["LENGTH", "load_mnist1d", "mnist1d_arrays", "mnist1d_split_indices"]

#: The sequences' length under the published arguments.
LENGTH = 40


@functools.lru_cache(maxsize=1)
def mnist1d_arrays() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x [4000, 40] float32, y [4000] int64, x_test [1000, 40] float32, y_test [1000] int64)``, made by
    ``mnist1d.data.make_dataset(get_dataset_args())`` (the published arguments; no file is read or written, no
    network is touched). Cached for the process."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise DatasetError(f"mnist1d: needs the mnist1d package (pip install mnist1d): {error}") from None
    data = make_dataset(get_dataset_args())
    x, y = np.asarray(data["x"], dtype=np.float32), np.asarray(data["y"], dtype=np.int64)
    x_test, y_test = np.asarray(data["x_test"], dtype=np.float32), np.asarray(data["y_test"], dtype=np.int64)
    if x.shape[1:] != (LENGTH,) or x_test.shape[1:] != (LENGTH,) or len(x) != len(y) or len(x_test) != len(y_test):
        raise DatasetError(f"mnist1d: expected sequences of length {LENGTH} with one label each, got x "
                           f"{list(x.shape)}, y {list(y.shape)}, x_test {list(x_test.shape)}, y_test "
                           f"{list(y_test.shape)} (another mnist1d version?)")
    return x, y, x_test, y_test


def mnist1d_split_indices(labels, val_fraction: float = 0.5, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``(search_train, search_val)`` index arrays of the training sequences: ``val_fraction`` of them to
    search-validation, stratified by ``labels [N]``, drawn by ``seed``."""
    from sklearn.model_selection import train_test_split

    val_fraction = _check_fraction(val_fraction)
    labels = np.asarray(labels)
    return train_test_split(np.arange(len(labels)), test_size=val_fraction, random_state=int(seed), shuffle=True,
                            stratify=labels)


def load_mnist1d(val_fraction: float = 0.5, seed: int = 0,
                 split: str = "search") -> Tuple[TensorDataset, TensorDataset, DatasetInfo]:
    """MNIST-1D in three disjoint parts.

    Args:
        val_fraction: share of the 4000 training sequences that go to search-validation, in (0, 1).
        seed: seed of the search-train / search-validation split (the test part does not depend on it).
        split: ``"search"``: ``(search-train, search-validation)``; ``"train_test"``: ``(the 4000 training
            sequences, the 1000 test sequences)``, the published protocol.

    Returns:
        ``(train, val, info)``: ``TensorDataset`` of sequences ``[N, 1, 1, 40]`` float32 and labels ``[N]`` int64
        in 0..9; ``info`` a :class:`DatasetInfo` with ``image_shape == (1, 40)``.
    """
    if split not in ("search", "train_test"):
        raise ValueError(f"split: expected 'search' or 'train_test', got {split!r}")
    x, y, x_test, y_test = mnist1d_arrays()
    if split == "search":
        train_idx, val_idx = mnist1d_split_indices(y, val_fraction, seed)
        parts = (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])
    else:
        parts = (x, y), (x_test, y_test)
    train, val = (TensorDataset(torch.from_numpy(np.ascontiguousarray(a)).view(-1, 1, 1, LENGTH),
                                torch.from_numpy(np.ascontiguousarray(b))) for a, b in parts)
    info = DatasetInfo(name="mnist1d", num_classes=10, in_channels=1, image_size=1, image_width=LENGTH,
                       train_size=len(train), val_size=len(val), mean=(0.0,), std=(1.0,),
                       classes=tuple(str(d) for d in range(10)))
    return train, val, info


def load_part(name: str, data_dir, seed: int, split: str):
    """The loader of :data:`snas_fast.data.DATASETS` for ``mnist1d`` (``data_dir`` is not read)."""
    return load_mnist1d(seed=seed, split=split)
