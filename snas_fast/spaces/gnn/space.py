"""EGNAS's graph search space as a :class:`~snas_fast.spaces.SearchSpace`: ``GnnSpace``.

Its ``primitives`` are the node operations (the columns of ``node_alpha``); ``edge_primitives`` the edge
operations (``edge_alpha``'s). A primitive's ``build(F, stride, affine)`` makes its module (``stride`` is ignored:
graphs have none). The protocol's ``C`` is the hidden width F and ``layers`` the number of cells; the graph's
dimensions come as options (``in_dim``, ``edge_dim``, ``nodes``, ``task``).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..base import Cost, Primitive, SearchSpace
from .genotype import GraphGenotype, num_links
from .operations import EDGE_OPS, NODE_OPS, make_edge_op, make_node_op

__all__ = ["EDGE_PRIMITIVES", "GnnSpace", "NODE_PRIMITIVES"]


def _no_cost(*_) -> Cost:
    return Cost()


def _node(name: str, fold: str) -> Primitive:
    return Primitive(name, lambda F, stride, affine: make_node_op(name, F, affine) or nn.Identity(), fold=fold,
                     cost=_no_cost if fold in ("zero", "identity") else None)


def _edge(name: str, fold: str) -> Primitive:
    return Primitive(name, lambda F, stride, affine: make_edge_op(name, F, affine) or nn.Identity(), fold=fold,
                     cost=_no_cost if fold in ("zero", "identity") else None)


_FOLD = dict(none="zero", identity="identity")
NODE_PRIMITIVES: Tuple[Primitive, ...] = tuple(_node(n, _FOLD.get(n, "bn_tail")) for n in NODE_OPS)
EDGE_PRIMITIVES: Tuple[Primitive, ...] = tuple(_edge(n, _FOLD.get(n, "bn_tail")) for n in EDGE_OPS)


class GnnSpace(SearchSpace):
    """EGNAS's space: cells of ``nodes`` states, each link ``j -> i`` a node and an edge mixed operation."""

    name = "gnn"
    primitives = NODE_PRIMITIVES
    edge_primitives = EDGE_PRIMITIVES

    def __init__(self, nodes: int = 2, cells: int = 2):
        self.nodes, self.cells = nodes, cells

    def supernet(self, C: int, num_classes: int, layers: int, **options) -> nn.Module:
        """``GraphSupernet(in_dim, edge_dim, hidden=C, num_classes, cells=layers, nodes, task, mixed)``; options:
        ``in_dim`` and ``edge_dim`` (required), ``nodes``, ``task``, ``mixed``."""
        from .supernet import GraphSupernet

        return GraphSupernet(options.pop("in_dim"), options.pop("edge_dim"), C, num_classes, layers,
                             options.pop("nodes", self.nodes), **options)

    def network(self, genotype, C: int, num_classes: int, layers: int = 0, auxiliary: bool = False,
                **options) -> nn.Module:
        """``GraphNetwork(genotype, in_dim, edge_dim, hidden=C, num_classes, task)``: the genotype fixes the cells
        (``layers`` is ignored); no auxiliary head."""
        from .supernet import GraphNetwork

        if auxiliary:
            raise NotImplementedError("space 'gnn' has no auxiliary head")
        return GraphNetwork(genotype, options.pop("in_dim"), options.pop("edge_dim"), C, num_classes, **options)

    def random_genotype(self, generator: Optional[torch.Generator] = None, include_none: bool = False):
        """Every link's node and edge operation drawn uniformly (``none`` only with ``include_none``)."""
        L = num_links(self.nodes)
        low = 0 if include_none else 1

        def draw(names):
            return tuple(names[k] for k in torch.randint(low, len(names), (L,), generator=generator).tolist())

        return GraphGenotype(self.nodes, tuple((draw(NODE_OPS), draw(EDGE_OPS)) for _ in range(self.cells)))

    def encode(self, genotype: GraphGenotype) -> Tuple[Tensor, Tensor]:
        """``(node_w, edge_w)``, ``[cells, links, 5]`` one-hot: the weights that run ``genotype`` in the supernet
        (:meth:`GraphSupernet.run <snas_fast.spaces.gnn.supernet.GraphSupernet.run>`)."""
        node = torch.tensor([[NODE_OPS.index(op) for op in cell[0]] for cell in genotype.cells])
        edge = torch.tensor([[EDGE_OPS.index(op) for op in cell[1]] for cell in genotype.cells])
        return (nn.functional.one_hot(node, len(NODE_OPS)).float(), nn.functional.one_hot(edge, len(EDGE_OPS)).float())

    def derive(self, alphas: Sequence[Tensor], rule: str = "argmax") -> GraphGenotype:
        """The argmax of every mixed operation (``none`` allowed), ``alphas = (node [cells, links, 5], edge [cells,
        links, 5])``."""
        from .supernet import derive_argmax

        if rule != "argmax":
            raise ValueError(f"rule: expected argmax (the gnn space's one derivation), got {rule!r}")
        node, edge = alphas
        if node.dim() != 3 or node.shape != edge.shape or node.shape[-1] != len(NODE_OPS):
            raise ValueError(f"alphas: expected two [cells, links, {len(NODE_OPS)}] tensors, got "
                             f"{tuple(node.shape)} and {tuple(edge.shape)}")
        links = node.shape[1]
        nodes = next((n for n in range(1, 64) if num_links(n) == links), None)
        if nodes is None:
            raise ValueError(f"alphas: {links} links per cell is no cell's number of links")
        return derive_argmax(node, edge, nodes)
