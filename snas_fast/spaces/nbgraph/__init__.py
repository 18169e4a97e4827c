"""NAS-Bench-Graph (Qin et al., NeurIPS 2022 Datasets and Benchmarks; the ``nas-bench-graph`` package): a graph-network
space of 26,206 architectures, every one trained with three seeds on nine datasets, as a tabular
:class:`~snas_fast.spaces.SearchSpace` (``--space nbgraph --dataset cora``). A strategy queries its validation
metric; the benchmark (:mod:`snas_fast.benchmark`) reports the test metric of its picks against the table's oracles.

- :mod:`.space`: :class:`NbGraphSpace`, :class:`NbArch` (a link pattern and four operations), :func:`table_key`
  (the package's key of an architecture, equal for isomorphic ones).

The tables are read by :func:`snas_fast.data.tables.load_float_table` (nothing in them runs).
"""
from ..._lazy import lazy_attributes

__all__ = ["DATASETS", "NbArch", "NbGraphSpace", "table_key", "table_path"]

__getattr__, __dir__ = lazy_attributes(__name__, {
    "DATASETS": ".space:DATASETS",
    "NbArch": ".space:NbArch",
    "NbGraphSpace": ".space:NbGraphSpace",
    "table_key": ".space:table_key",
    "table_path": ".space:table_path",
})
