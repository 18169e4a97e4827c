"""Offline graph datasets, deterministic under a seed (nothing is downloaded). Each is three disjoint parts: search-
train, search-validation (split by ``seed``) and a test part (fixed, whatever the seed) that no search sees.

- ``digits-graph``: scikit-learn's 8x8 digits, each a 64-node grid graph (4-neighbourhood, both directions; node
  features: intensity / 16 and the position (row, column) / 7; edge feature: intensity(target) - intensity(source),
  / 16); graph classification, 10 classes. The parts are the CNN digits' (:func:`snas_fast.data.images.
  digits_split_indices`): the offline analogue of the MNIST-superpixel task of benchmarking-gnns.
- ``sbm-cluster``: benchmarking-gnns' CLUSTER generator: 6 clusters of 5-35 nodes (uniform), an edge within a
  cluster with probability p = 0.55 and across with q = 0.25 (undirected, no self-loops); the input feature of a node
  is 0, except one random seed node per cluster whose feature is its cluster + 1 (one-hot over 7 values); node
  classification of the cluster. Edge feature: 1. 500 / 100 / 200 graphs.
- ``sbm-edges``: the same generator with p = q = 0.3, so that the graph alone says nothing of the clusters; each
  edge's feature says whether its two ends share a cluster, wrong with probability 0.1 (:data:`SBM_EDGES`): the
  labels depend on the edge features, and a network that ignores them (GCN, GIN, GraphSAGE) cannot tell the
  edges that lead to its cluster's seed from the others. 500 / 100 / 200 graphs.
- ``sbm-keyed``: ``sbm-edges`` with a random key bit on every node (one more input feature) and each edge's feature
  XORed with the keys of its two ends (:data:`SBM_KEYED`): an edge's feature alone is a fair coin, whatever the
  clusters; it tells them only read together with both ends' keys. A gate computed from the edge feature alone (each
  node operation's ``sigmoid(B(E))``) learns nothing from it; an edge operation, which reads both ends, can decode it.
  500 / 100 / 200 graphs.
- ``karate``: PyG's KarateClub (bundled in PyG; 34 nodes, 4 classes, one labelled node per class for training), the
  other 30 nodes split in half by ``seed`` into validation and test; identity node features, edge feature 1.

Node tasks mark the nodes a part is scored on with ``target_mask`` (all nodes for sbm-cluster). A loader batches graphs
with :func:`collate`: ``(Batch, target)``, the target of a node outside ``target_mask`` being :data:`IGNORE`
(``cross_entropy``'s ``ignore_index``), so a network's logits of every node line up with the targets.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from .._seeds import make_generator  # the one place seeded streams are made
from . import IGNORE
from .images import digits_split_indices  # the CNN digits' parts: one fact in one place

__all__ = ["DATASETS", "IGNORE", "GraphData", "GraphInfo", "collate", "load_dataset", "sbm_cluster_graph"]

# Streams of make_generator, kept apart from the other uses of seed_for.
_SBM_STREAM = 0x73626D  # "sbm"
_SBM_TEST_SEED = 20210101
_KARATE_STREAM = 0x6B6172  # "kar"
_SBM_EDGES_STREAM = 0x736265  # "sbe"
_SBM_KEYED_STREAM = 0x73626B  # "sbk"
SBM_SIZES = dict(train=500, val=100, test=200)
#: ``sbm-edges``' generator settings (:func:`sbm_cluster_graph`): no structure, the clusters told by the edges
SBM_EDGES = dict(p=0.3, q=0.3, edge_noise=0.1)
#: ``sbm-keyed``'s: ``sbm-edges``' with the edge features keyed by their ends
SBM_KEYED = dict(SBM_EDGES, keys=True)


@dataclass(frozen=True)
class GraphInfo:
    """What a network needs to know of a dataset: ``in_dim``, ``edge_dim``, ``num_classes``, ``task`` ("node" or
    "graph") and its ``name``. ``kind`` is ``"graphs"`` (:mod:`snas_fast.data`)."""

    name: str
    in_dim: int
    edge_dim: int
    num_classes: int
    task: str

    kind = "graphs"

    def to_dict(self) -> dict:
        return dict(name=self.name, in_dim=self.in_dim, edge_dim=self.edge_dim, num_classes=self.num_classes,
                    task=self.task)


@dataclass
class GraphData:
    """The three parts of a dataset, lists of PyG ``Data``."""

    train: List[Data]
    val: List[Data]
    test: List[Data]
    info: GraphInfo

    def split(self, split: str = "search") -> Tuple[List[Data], List[Data], GraphInfo]:
        """``(search_train, search_val, info)`` (``"search"``) or ``(search_train + search_val, test, info)``
        (``"train_test"``, a retraining's)."""
        if split == "search":
            return self.train, self.val, self.info
        if split == "train_test":
            if self.info.task == "node" and self.info.name == "karate":  # one graph: the two masks joined
                g = self.train[0].clone()
                g.target_mask = self.train[0].target_mask | self.val[0].target_mask
                return [g], self.test, self.info
            return self.train + self.val, self.test, self.info
        raise ValueError(f"split: expected search or train_test, got {split!r}")


def _digits_graphs() -> Tuple[List[Data], np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32) / 16.0  # [n, 8, 8]
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    idx = (rows * 8 + cols)
    right = torch.stack([idx[:, :-1].reshape(-1), idx[:, 1:].reshape(-1)])
    down = torch.stack([idx[:-1, :].reshape(-1), idx[1:, :].reshape(-1)])
    edge_index = torch.cat([right, down, right.flip(0), down.flip(0)], dim=1)  # [2, 224]
    pos = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).float() / 7.0  # [64, 2]
    graphs = []
    for image, label in zip(images, digits.target):
        v = image.reshape(64)
        x = torch.cat([v[:, None], pos], dim=1)  # [64, 3]
        edge_attr = (v[edge_index[1]] - v[edge_index[0]])[:, None]  # [224, 1]
        graphs.append(Data(x=x, edge_index=edge_index, edge_attr=edge_attr, y=torch.tensor([int(label)])))
    return graphs, digits.target


def sbm_cluster_graph(generator: torch.Generator, clusters: int = 6, min_size: int = 5, max_size: int = 35,
                      p: float = 0.55, q: float = 0.25, edge_noise: Optional[float] = None,
                      keys: bool = False) -> Data:
    """One CLUSTER graph (benchmarking-gnns' generator), drawn from ``generator``: ``x [N, clusters + 1]`` (one-hot
    of 0, or of cluster + 1 for each cluster's seed node), ``edge_index [2, E]`` (both directions),
    ``edge_attr [E, 1]``, ``y [N]`` the cluster of each node, ``target_mask [N]`` all true. ``edge_attr`` is 1, or,
    with ``edge_noise``, 1 where the two ends share a cluster and 0 where not, flipped with probability
    ``edge_noise`` (the same for both directions of an edge). ``keys`` (with ``edge_noise``): every node draws a key
    bit ``k`` (``x`` gains a last column, ``[N, clusters + 2]``) and the edge ``s -> t``'s feature becomes
    ``told XOR k_s XOR k_t``."""
    sizes = torch.randint(min_size, max_size + 1, (clusters,), generator=generator)
    y = torch.repeat_interleave(torch.arange(clusters), sizes)
    n = int(sizes.sum())
    same = y[:, None] == y[None, :]
    prob = torch.where(same, torch.tensor(p), torch.tensor(q))
    upper = (torch.rand(n, n, generator=generator) < prob).triu(1)
    adj = upper | upper.T
    edge_index = adj.nonzero().T.contiguous()  # [2, E], both directions
    feature = torch.zeros(n, dtype=torch.long)
    starts = torch.cumsum(sizes, 0) - sizes
    seeds = starts + (torch.rand(clusters, generator=generator) * sizes).long()
    feature[seeds] = torch.arange(clusters) + 1
    x = torch.nn.functional.one_hot(feature, clusters + 1).float()
    edge_attr = torch.ones(edge_index.shape[1], 1)
    if edge_noise is not None:
        if not 0.0 <= edge_noise <= 1.0:
            raise ValueError(f"edge_noise: expected a probability in [0, 1], got {edge_noise!r}")
        flip = torch.rand(n, n, generator=generator) < edge_noise
        flip = flip.triu(1) | flip.triu(1).T  # one draw per undirected edge
        told = same ^ flip  # [n, n]
        if keys:
            key = torch.rand(n, generator=generator) < 0.5  # [n]
            told = told ^ key[:, None] ^ key[None, :]
            x = torch.cat([x, key.float()[:, None]], dim=1)
        edge_attr = told[edge_index[0], edge_index[1]].float()[:, None]
    elif keys:
        raise ValueError("keys: the edge features are keyed only with an edge_noise (the told clusters), got none")
    return Data(x=x, edge_index=edge_index, edge_attr=edge_attr, y=y, target_mask=torch.ones(n, dtype=torch.bool))


def _sbm(seed: int, name: str = "sbm-cluster", stream: int = _SBM_STREAM, **settings) -> GraphData:
    g_search = make_generator(stream, seed)
    g_test = make_generator(stream, _SBM_TEST_SEED)
    train = [sbm_cluster_graph(g_search, **settings) for _ in range(SBM_SIZES["train"])]
    val = [sbm_cluster_graph(g_search, **settings) for _ in range(SBM_SIZES["val"])]
    test = [sbm_cluster_graph(g_test, **settings) for _ in range(SBM_SIZES["test"])]
    return GraphData(train, val, test, GraphInfo(name, train[0].x.shape[1], 1, 6, "node"))


def _karate(seed: int) -> GraphData:
    from torch_geometric.datasets import KarateClub

    g = KarateClub()[0]
    n = g.num_nodes
    base = Data(x=g.x, edge_index=g.edge_index, edge_attr=torch.ones(g.edge_index.shape[1], 1), y=g.y)
    rest = (~g.train_mask).nonzero().flatten()
    rest = rest[torch.randperm(len(rest), generator=make_generator(_KARATE_STREAM, seed))]
    parts = []
    for nodes in (g.train_mask.nonzero().flatten(), rest[: len(rest) // 2], rest[len(rest) // 2:]):
        d = base.clone()
        d.target_mask = torch.zeros(n, dtype=torch.bool)
        d.target_mask[nodes] = True
        parts.append([d])
    return GraphData(*parts, GraphInfo("karate", n, 1, int(g.y.max()) + 1, "node"))


def _digits_graph(seed: int) -> GraphData:
    graphs, labels = _digits_graphs()
    train, val, test = digits_split_indices(labels, seed=seed)
    pick = lambda idx: [graphs[i] for i in idx]  # noqa: E731
    return GraphData(pick(train), pick(val), pick(test), GraphInfo("digits-graph", 3, 1, 10, "graph"))


#: each dataset's ``loader(seed) -> GraphData``; the sbm ones are the one generator under their settings and streams
_LOADERS = {
    "digits-graph": _digits_graph,
    "sbm-cluster": _sbm,
    "sbm-edges": partial(_sbm, name="sbm-edges", stream=_SBM_EDGES_STREAM, **SBM_EDGES),
    "sbm-keyed": partial(_sbm, name="sbm-keyed", stream=_SBM_KEYED_STREAM, **SBM_KEYED),
    "karate": _karate,
}
DATASETS = tuple(_LOADERS)


def load_dataset(name: str, seed: int = 0) -> GraphData:
    """The dataset ``name`` (one of :data:`DATASETS`), its search parts split by ``seed``; the same ``(name, seed)``
    gives the same graphs. ValueError naming the argument for an unknown name."""
    if name not in _LOADERS:
        raise ValueError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    return _LOADERS[name](int(seed))


def collate(items) -> Tuple[object, Tensor]:
    """PyG ``Data`` items -> ``(Batch, target)``: the graphs' classes ``[graphs]`` (graph tasks), or the class of
    every node ``[N]`` (node tasks), :data:`IGNORE` outside the nodes of ``target_mask``."""
    from torch_geometric.data import Batch

    batch = Batch.from_data_list(items)
    if "target_mask" not in batch:
        return batch, batch.y
    return batch, torch.where(batch.target_mask, batch.y, torch.full_like(batch.y, IGNORE))


def load_part(name: str, data_dir, seed: int, split: str):
    """The loader of :data:`snas_fast.data.DATASETS` for the graph datasets (``data_dir`` unused)."""
    return load_dataset(name, seed).split(split)
