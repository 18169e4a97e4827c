"""EGNAS's graph search space (Cai et al. 2021): node operations gated by edge features and edge operations with
their own mixed operations, over PyG graphs, every mixed operation one call of the fused op.

- :mod:`.operations`: the candidate modules (``NODE_OPS``, ``EDGE_OPS``).
- :mod:`.supernet`: :class:`GraphSupernet` (``mixed="fused" | "fused_edge" | "eager"``) and :class:`GraphNetwork`.
- :mod:`.genotype`: :class:`GraphGenotype` and its JSON form. Pure policy.
- :mod:`.space`: :class:`GnnSpace`, the :class:`~snas_fast.spaces.SearchSpace` protocol.
- :mod:`.baselines`: :class:`GraphBaseline`, the PyG networks a searched genotype is measured against.

Its datasets (``digits-graph``, ``sbm-cluster``, ``sbm-edges``, ``karate``; :func:`load_dataset`) are in the data layer,
:mod:`snas_fast.data.graphs`. Every strategy runs on it (``snas-fast compare --space gnn``); the retraining and the
baselines are ``snas-fast train --space gnn``.
"""
from ..._lazy import lazy_attributes

__all__ = ["DATASETS", "EDGE_OPS", "GnnSpace", "GraphBaseline", "GraphGenotype", "GraphNetwork", "GraphSupernet",
           "NODE_OPS", "load_dataset"]

__getattr__, __dir__ = lazy_attributes(__name__, {
    "DATASETS": "snas_fast.data.graphs:DATASETS",
    "GraphBaseline": ".baselines:GraphBaseline",
    "EDGE_OPS": ".operations:EDGE_OPS",
    "NODE_OPS": ".operations:NODE_OPS",
    "GnnSpace": ".space:GnnSpace",
    "GraphGenotype": ".genotype:GraphGenotype",
    "GraphNetwork": ".supernet:GraphNetwork",
    "GraphSupernet": ".supernet:GraphSupernet",
    "load_dataset": "snas_fast.data.graphs:load_dataset",
})
