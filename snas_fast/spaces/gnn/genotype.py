"""A graph genotype: for every cell, one node operation and one edge operation per link ``j -> i`` of its DAG.
Pure policy (no torch module, no compiled extension).

A cell with ``nodes`` intermediate states has inputs 0, 1 (the two previous cells' outputs) and states 2 ..
``nodes + 1``; state ``i`` takes every earlier state ``j < i``: :func:`links` lists the ``(j, i)`` pairs in the row
order of a cell's ``log_alpha``. JSON form::

    {"space": "gnn", "nodes": 2, "cells": [{"node": ["sum", "max", ...], "edge": ["gru", "none", ...]}, ...]}
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from .operations import EDGE_OPS, NODE_OPS

__all__ = ["GraphGenotype", "links", "num_links"]


def links(nodes: int) -> List[Tuple[int, int]]:
    """The ``(j, i)`` links of a cell with ``nodes`` intermediate states, in ``log_alpha`` row order."""
    return [(j, i) for i in range(2, nodes + 2) for j in range(i)]


def num_links(nodes: int) -> int:
    """``len(links(nodes))`` = ``sum_{i < nodes} (2 + i)``."""
    return nodes * (nodes + 3) // 2


@dataclass(frozen=True)
class GraphGenotype:
    """``cells[c] = (node_ops, edge_ops)``, each a tuple of ``num_links(nodes)`` operation names."""

    nodes: int
    cells: Tuple[Tuple[Tuple[str, ...], Tuple[str, ...]], ...]

    def __post_init__(self):
        if isinstance(self.nodes, bool) or not isinstance(self.nodes, int) or self.nodes < 1:
            raise ValueError(f"nodes: expected an integer >= 1, got {self.nodes!r}")
        if not self.cells:
            raise ValueError("cells: expected at least one cell, got none")
        n = num_links(self.nodes)
        for c, cell in enumerate(self.cells):
            if len(cell) != 2:
                raise ValueError(f"cells[{c}]: expected (node_ops, edge_ops), got {cell!r}")
            for what, ops, allowed in (("node", cell[0], NODE_OPS), ("edge", cell[1], EDGE_OPS)):
                if len(ops) != n:
                    raise ValueError(f"cells[{c}].{what}: expected {n} operations (one per link of a cell with "
                                     f"{self.nodes} nodes), got {len(ops)}")
                for op in ops:
                    if op not in allowed:
                        raise ValueError(f"cells[{c}].{what}: expected operations of {list(allowed)}, got {op!r}")

    def to_dict(self) -> dict:
        return dict(space="gnn", nodes=self.nodes,
                    cells=[dict(node=list(node), edge=list(edge)) for node, edge in self.cells])

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d) -> "GraphGenotype":
        """The genotype of :meth:`to_dict`'s form; ValueError (one line) for anything else, a DARTS genotype
        included."""
        if not isinstance(d, dict) or d.get("space") != "gnn":
            if isinstance(d, dict) and isinstance(d.get("space"), str):
                kind = f"a genotype of space {d['space']!r}"
            else:
                kind = "a DARTS cell genotype" if isinstance(d, dict) and "normal" in d else type(d).__name__
            raise ValueError(f"expected a gnn genotype (a JSON object with \"space\": \"gnn\"), got {kind}")
        try:
            cells = tuple((tuple(c["node"]), tuple(c["edge"])) for c in d["cells"])
            return cls(d["nodes"], cells)
        except (KeyError, TypeError) as error:
            raise ValueError(f"a gnn genotype needs nodes and cells of node and edge lists ({error!r})") from None

    def operations(self) -> Sequence[str]:
        """Every operation name, node and edge, of every cell."""
        return [op for node, edge in self.cells for op in (*node, *edge)]
