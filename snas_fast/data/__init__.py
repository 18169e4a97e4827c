"""Data: every dataset the searches and retrainings read, below the spaces and the engine (it imports neither).

A dataset has a name and a *kind*, the form of its examples; a search space takes the datasets of one kind
(:attr:`snas_fast.spaces.SearchSpace.data_kind`):

- ``"images"`` (:mod:`.images`): ``TensorDataset`` of ``(images [N, C, H, W] float32, labels [N] int64)`` and a
  :class:`~.images.DatasetInfo`: ``digits`` (scikit-learn's bundled 8x8 digits), ``cifar10`` (a local
  ``cifar-10-batches-py`` folder), ``mnist1d`` (:mod:`.mnist1d`: sequences of length 40 as one-row images
  ``[1, 1, 40]``, generated offline by the ``mnist1d`` package);
- ``"graphs"`` (:mod:`.graphs`): lists of PyG ``Data`` and a :class:`~.graphs.GraphInfo`: ``digits-graph``,
  ``sbm-cluster``, ``sbm-edges``, ``sbm-keyed``, ``karate``.

Every dataset comes in three disjoint parts: search-train and search-validation (``split="search"``) and a test
part (``split="train_test"`` gives the two search parts together, then the test part), which no search reads.
Nothing is downloaded. :func:`load` reads any registered dataset, :func:`register_dataset` adds one;
:mod:`.loaders` batches any of them for one process or a rank's share.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

from .._lazy import lazy_attributes

__all__ = ["DATASETS", "IGNORE", "DatasetError", "DatasetInfo", "GraphInfo", "KINDS", "batch_of", "dataset_names",
           "default_dataset", "digits_split_indices", "kind_of", "load", "load_cifar10", "load_digits",
           "register_dataset", "subset"]

#: The target of an example no loss or accuracy counts (torch's ``cross_entropy`` ``ignore_index``): a graph's nodes
#: outside the part being scored.
IGNORE = -100

#: The kinds of examples a dataset may hold, and the dataset each kind defaults to.
KINDS: Dict[str, str] = {"images": "digits", "graphs": "digits-graph"}

#: name -> (kind, loader): the loader is ``loader(name, data_dir, seed, split) -> (first, second, info)`` or its
#: import path (``"module:function"``), imported when the dataset is first read.
DATASETS: Dict[str, Tuple[str, Union[str, Callable]]] = {
    "digits": ("images", "snas_fast.data.images:load_part"),
    "cifar10": ("images", "snas_fast.data.images:load_part"),
    "mnist1d": ("images", "snas_fast.data.mnist1d:load_part"),
    "digits-graph": ("graphs", "snas_fast.data.graphs:load_part"),
    "sbm-cluster": ("graphs", "snas_fast.data.graphs:load_part"),
    "sbm-edges": ("graphs", "snas_fast.data.graphs:load_part"),
    "sbm-keyed": ("graphs", "snas_fast.data.graphs:load_part"),
    "karate": ("graphs", "snas_fast.data.graphs:load_part"),
}


def register_dataset(name: str, kind: str, loader: Callable) -> None:
    """Make ``loader(name, data_dir, seed, split) -> (first, second, info)`` the dataset ``name`` of ``kind`` (one of
    :data:`KINDS`): ``--dataset name`` for every space of that kind."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if not callable(loader):
        raise TypeError(f"loader: expected a function (name, data_dir, seed, split), got {type(loader).__name__}")
    DATASETS[name] = (kind, loader)


def dataset_names(kind: Optional[str] = None) -> Tuple[str, ...]:
    """The registered datasets (of ``kind`` only, when given)."""
    return tuple(n for n, (k, _) in DATASETS.items() if kind is None or k == kind)


def default_dataset(kind: str) -> str:
    """The dataset a space of ``kind`` reads unless told otherwise."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    return KINDS[kind]


def kind_of(name: str) -> str:
    """The kind of the dataset ``name``; ValueError listing the datasets otherwise."""
    if name not in DATASETS:
        raise ValueError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}")
    return DATASETS[name][0]


def load(name: str, data_dir: Optional[str] = None, seed: int = 0, split: str = "search",
         limit: Optional[int] = None):
    """``(first, second, info)`` of the dataset ``name``: search-train and search-validation (``split="search"``) or
    search-train + search-validation and the test part (``"train_test"``), the search parts split by ``seed``, each
    cut to its first ``limit`` examples when given. Raises ValueError or :class:`DatasetError`, one line."""
    kind_of(name)  # an unknown name: one line listing the datasets
    loader = DATASETS[name][1]
    if split not in ("search", "train_test"):
        raise ValueError(f"split: expected search or train_test, got {split!r}")
    if isinstance(loader, str):
        module, _, attribute = loader.partition(":")
        loader = getattr(importlib.import_module(module), attribute)
    first, second, info = loader(name, data_dir, seed, split)
    if limit:
        first, second = subset(first, range(min(limit, len(first)))), subset(second, range(min(limit, len(second))))
    return first, second, info


def subset(dataset, indices: Sequence[int]):
    """The examples ``indices`` of ``dataset``, in that order: a ``TensorDataset`` of images or a list of graphs. A
    ``range`` of step 1 keeps views of the tensors (no copy)."""
    import torch
    from torch.utils.data import TensorDataset

    if isinstance(dataset, TensorDataset):
        if isinstance(indices, range) and indices.step == 1:
            return TensorDataset(*(t[indices.start:indices.stop] for t in dataset.tensors))
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return TensorDataset(*(t[idx] for t in dataset.tensors))
    return [dataset[int(i)] for i in indices]


def batch_of(dataset, indices: Sequence[int]):
    """The examples ``indices`` of ``dataset`` as one network input: images ``[n, C, H, W]``, or graphs as one PyG
    ``Batch``."""
    from .loaders import collate_for

    part = subset(dataset, indices)
    collate = collate_for(part)
    return part.tensors[0] if collate is None else collate(part)[0]


__getattr__, __dir__ = lazy_attributes(__name__, {
    "DatasetError": ".images:DatasetError",
    "DatasetInfo": ".images:DatasetInfo",
    "GraphInfo": ".graphs:GraphInfo",
    "digits_split_indices": ".images:digits_split_indices",
    "load_digits": ".images:load_digits",
    "load_cifar10": ".images:load_cifar10",
    "load_dataset": ".images:load_dataset",
    "make_loaders": ".loaders:make_loaders",
    # the rest of 0.1's ``snas_fast.data`` (then the engine's data module; its ``DATASETS`` tuple is this registry)
    "train_loader": ".loaders:train_loader",
    "eval_loader": ".loaders:eval_loader",
    "ShardSampler": ".loaders:ShardSampler",
    "limit": ".images:limit",
    "CIFAR10_MEAN": ".images:CIFAR10_MEAN",
    "CIFAR10_STD": ".images:CIFAR10_STD",
    "DIGITS_TEST_FRACTION": ".images:DIGITS_TEST_FRACTION",
    "DIGITS_TEST_SEED": ".images:DIGITS_TEST_SEED",
    "images": ".images",
    "graphs": ".graphs",
    "mnist1d": ".mnist1d",
    "loaders": ".loaders",
})
