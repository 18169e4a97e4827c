"""Loaders of a dataset for one process or this rank's share of it (torchrun), whatever the dataset holds: image
tensors (:mod:`.images`) or graphs (:mod:`.graphs`, batched by their collate function). A context ``ctx`` is anything
with ``rank`` and ``world_size`` (:class:`snas_fast.engine.distributed.Context`)."""
from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

__all__ = ["ShardSampler", "collate_for", "eval_loader", "make_loaders", "train_loader"]


def collate_for(dataset):
    """The collate function a loader of ``dataset`` needs: a list of PyG ``Data`` (graphs) is batched by
    :func:`snas_fast.data.graphs.collate`; anything else by torch's default (None)."""
    if isinstance(dataset, (list, tuple)) and len(dataset) and type(dataset[0]).__module__.startswith(
            "torch_geometric"):
        from .graphs import collate

        return collate
    return None


def make_loaders(
    train: TensorDataset, val: TensorDataset, batch_size: int, seed: int, num_workers: int = 0
) -> Tuple[DataLoader, DataLoader]:
    """DataLoaders for a search: train shuffled by a generator seeded with ``seed``, val in order.

    Both keep the last, smaller batch (``drop_last=False``). The same seed gives the same train order.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
        raise ValueError(f"num_workers: expected an int >= 0, got {num_workers!r}")
    generator = torch.Generator().manual_seed(int(seed))
    common = dict(batch_size=int(batch_size), num_workers=int(num_workers), drop_last=False,
                  persistent_workers=num_workers > 0)
    train_loader = DataLoader(train, shuffle=True, generator=generator, **common)
    val_loader = DataLoader(val, shuffle=False, **common)
    return train_loader, val_loader


class ShardSampler(Sampler):
    """Indices ``rank, rank + world_size, ...`` of a dataset of ``n`` examples, in order and without padding:
    each example is evaluated by exactly one rank (sums over ranks are exact)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.n, self.rank, self.world_size = int(n), int(rank), int(world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def train_loader(dataset, batch_size: int, seed: int, ctx, num_workers: int = 0, drop_last: bool = False,
                 collate_fn=None):
    """A shuffled training loader of this rank's shard: a ``DistributedSampler`` (``num_replicas = world_size``,
    shuffled by ``seed + epoch``: call ``loader.sampler.set_epoch(epoch)``; each rank gets ``ceil(n / N)`` examples,
    the permutation's first ones repeated to fill the last shard). With N ranks and per-rank batch b, the union of
    the ranks' k-th batches is the k-th batch of one process with batch N * b. ``drop_last``: drop the last,
    incomplete batch of each epoch, unless the shard holds less than one batch. ``collate_fn``: the loader's
    (None: :func:`collate_for` the dataset)."""
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=int(seed),
                                 drop_last=False)
    return DataLoader(dataset, batch_size=int(batch_size), sampler=sampler, num_workers=int(num_workers),
                      drop_last=bool(drop_last) and len(sampler) >= batch_size, persistent_workers=num_workers > 0,
                      collate_fn=collate_fn or collate_for(dataset))


def eval_loader(dataset, batch_size: int, ctx, num_workers: int = 0, collate_fn=None):
    """An in-order loader of this rank's share of ``dataset`` (:class:`ShardSampler`); ``collate_fn`` as
    :func:`train_loader`'s."""
    return DataLoader(dataset, batch_size=int(batch_size), sampler=ShardSampler(len(dataset), ctx.rank, ctx.world_size),
                      num_workers=int(num_workers), drop_last=False, persistent_workers=num_workers > 0,
                      collate_fn=collate_fn or collate_for(dataset))


