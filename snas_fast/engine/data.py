"""The engine's view of the data: the loaders of :mod:`snas_fast.data.loaders` and, for code written against this
module when it held the datasets, the image datasets of :mod:`snas_fast.data.images` (the same objects: the data has
its own layer, :mod:`snas_fast.data`)."""
from ..data.images import (CIFAR10_MEAN, CIFAR10_STD, DATASETS, DIGITS_TEST_FRACTION, DIGITS_TEST_SEED,  # noqa: F401
                           DatasetError, DatasetInfo, digits_split_indices, limit, load_cifar10, load_dataset,
                           load_digits)
from ..data.loaders import ShardSampler, collate_for, eval_loader, make_loaders, train_loader  # noqa: F401

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "DATASETS", "DIGITS_TEST_FRACTION", "DIGITS_TEST_SEED", "DatasetError",
           "DatasetInfo", "ShardSampler", "collate_for", "digits_split_indices", "eval_loader", "limit",
           "load_cifar10", "load_dataset", "load_digits", "make_loaders", "train_loader"]
