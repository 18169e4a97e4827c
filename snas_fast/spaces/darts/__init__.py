"""The DARTS CNN search space (DARTS, SNAS): eight candidate operations on the 14 edges of a cell, normal and
reduction cells stacked, the published cells, and the cost model of SNAS's resource constraint.

- :mod:`.space`: :data:`DARTS_PRIMITIVES` (the :class:`~snas_fast.spaces.Primitive` records), the cell's edges,
  :class:`DartsSpace` (the space over any primitives, the :class:`~snas_fast.spaces.SearchSpace` protocol).
- :mod:`.operations`: the candidate modules (DARTS's ``operations.py``).
- :mod:`.genotypes`: derived cells, their JSON form, derivation rules, the published cells. Pure policy.
- :mod:`.costs`: the cost tables and SNAS's resource penalty. Pure policy.
- :mod:`.supernet`: :class:`Supernet` (weights and ``log_alpha``); :mod:`.networks`: the child networks
  :class:`NetworkCIFAR` and :class:`NetworkImageNet`.

Importing this package, its genotypes or its costs loads no compiled extension; the supernet does (it mixes with the
fused ops).
"""
from ..._lazy import lazy_attributes
from .space import DARTS, DARTS_PRIMITIVES, EDGES, NUM_EDGES, NUM_NODES, PRIMITIVES, DartsSpace, edge_index, make_op

__all__ = ["DARTS", "DARTS_PRIMITIVES", "DartsSpace", "EDGES", "Genotype", "NUM_EDGES", "NUM_NODES", "NetworkCIFAR",
           "NetworkImageNet", "PRIMITIVES", "Supernet", "edge_index", "make_op"]

__getattr__, __dir__ = lazy_attributes(__name__, {
    "Genotype": ".genotypes:Genotype",
    "Supernet": ".supernet:Supernet",
    "NetworkCIFAR": ".networks:NetworkCIFAR",
    "NetworkImageNet": ".networks:NetworkImageNet",
})
