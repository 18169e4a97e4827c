"""EGNAS's graph search space as a :class:`~snas_fast.spaces.SearchSpace`: ``GnnSpace``.

Its ``primitives`` are the node operations (the columns of ``node_alpha``); ``edge_primitives`` the edge
operations (``edge_alpha``'s). A primitive's ``build(F, stride, affine)`` makes its module (``stride`` is ignored:
graphs have none). An architecture is a :class:`~.genotype.GraphGenotype`; its decisions are every cell's node
operations link by link, then every cell's edge operations (the row order of ``node_alpha`` and ``edge_alpha``), five
options each. The space's size: ``layers`` cells, ``channels`` the hidden width F, ``nodes`` states per cell; the
graphs' dimensions come with the dataset's :class:`~snas_fast.data.graphs.GraphInfo`.
"""
from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..base import Cost, Decision, Primitive, SearchSpace
from .baselines import BASELINES
from .genotype import GraphGenotype, links, num_links
from .operations import EDGE_OPS, NODE_OPS, make_edge_op, make_node_op
from .settings import GnnSettings

__all__ = ["EDGE_PRIMITIVES", "GnnSettings", "GnnSpace", "MIXED", "NODE_PRIMITIVES"]

#: How the graph supernet computes a mixed operation (:mod:`.supernet`).
MIXED = ("fused", "fused_edge", "eager")


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
    """EGNAS's space: cells of ``nodes`` states, each link ``j -> i`` a node and an edge mixed operation; ``cells``
    cells of width ``hidden``; ``info``: the graphs' (``in_dim``, ``edge_dim``, ``num_classes``, ``task``)."""

    name = "gnn"
    data_kind = "graphs"
    settings = GnnSettings
    primitives = NODE_PRIMITIVES
    edge_primitives = EDGE_PRIMITIVES
    #: PyG baselines (:class:`~.baselines.GraphBaseline`): GCNConv, GINConv, ResGatedGraphConv (edge features)
    baselines = BASELINES
    #: how its supernet may mix (``--mixed``)
    mixed_modes = MIXED

    #: its size, searched and retrained alike: cells (``layers``) and width (``channels``)
    SIZE = dict(layers=2, channels=32)

    def __init__(self, nodes: int = 2, cells: int = SIZE["layers"], hidden: int = SIZE["channels"], info=None,
                 mixed: str = "fused"):
        self.nodes, self.cells, self.hidden, self.info, self.mixed = nodes, cells, hidden, info, mixed

    # -- one run's space ------------------------------------------------------------------------------------------
    def configure(self, config=None, info=None) -> "GnnSpace":
        space = copy.copy(self)
        for attribute, name in (("nodes", "nodes"), ("cells", "layers"), ("hidden", "channels"), ("mixed", "mixed")):
            value = getattr(config, name, None)
            if value is not None:
                setattr(space, attribute, value)
        if space.mixed not in MIXED:
            raise ValueError(f"mixed: space gnn mixes by {', '.join(MIXED)}, got {space.mixed!r}")
        space.info = info if info is not None else self.info
        return space

    def defaults(self, role: str):
        """2 cells of width 32, search and retraining alike (:attr:`SIZE`)."""
        return dict(self.SIZE)

    def _info(self):
        if self.info is None:
            raise ValueError("space gnn: no dataset bound (configure(config, info) with the graphs' info)")
        return self.info

    # -- the choices ------------------------------------------------------------------------------------------
    def decisions(self) -> Tuple[Decision, ...]:
        L = links(self.nodes)
        return tuple(Decision(f"cell{c}.{kind}({j}->{i})", names)
                     for kind, names in (("node", NODE_OPS), ("edge", EDGE_OPS))
                     for c in range(self.cells) for j, i in L)

    def from_choices(self, choices: Sequence[int]) -> GraphGenotype:
        L, C = num_links(self.nodes), self.cells
        choices = [int(c) for c in choices]
        if len(choices) != 2 * C * L:
            raise ValueError(f"choices: expected {2 * C * L} decisions ({C} cells x {L} links x node, edge), got "
                             f"{len(choices)}")
        for n, c in enumerate(choices):
            if not 0 <= c < len(NODE_OPS):
                raise ValueError(f"choices[{n}]: expected an index in 0..{len(NODE_OPS) - 1}, got {c}")
        node, edge = choices[:C * L], choices[C * L:]
        return GraphGenotype(self.nodes, tuple((tuple(NODE_OPS[k] for k in node[c * L:(c + 1) * L]),
                                                tuple(EDGE_OPS[k] for k in edge[c * L:(c + 1) * L]))
                                               for c in range(C)))

    def to_choices(self, arch: GraphGenotype) -> Tuple[int, ...]:
        if arch.nodes != self.nodes or len(arch.cells) != self.cells:
            raise ValueError(f"genotype: {len(arch.cells)} cells of {arch.nodes} nodes, the space's are {self.cells} "
                             f"of {self.nodes}")
        return (tuple(NODE_OPS.index(op) for cell in arch.cells for op in cell[0])
                + tuple(EDGE_OPS.index(op) for cell in arch.cells for op in cell[1]))

    def sample(self, generator: Optional[torch.Generator] = None, zero: bool = False) -> GraphGenotype:
        """Every link's node and edge operation drawn uniformly from those other than ``none`` (``zero``: any)."""
        return self.random_genotype(generator, include_none=zero)

    def random_genotype(self, generator: Optional[torch.Generator] = None, include_none: bool = False):
        L = num_links(self.nodes)
        low = 0 if include_none else 1

        def draw(names):
            return tuple(names[k] for k in torch.randint(low, len(names), (L,), generator=generator).tolist())

        return GraphGenotype(self.nodes, tuple((draw(NODE_OPS), draw(EDGE_OPS)) for _ in range(self.cells)))

    def to_dict(self, arch: GraphGenotype) -> dict:
        return dict(arch.to_dict(), space=self.name)

    def from_dict(self, d) -> GraphGenotype:
        if isinstance(d, dict) and self.name != "gnn" and d.get("space") == self.name:
            d = dict(d, space="gnn")  # a graph genotype of this space, registered under a name of its own
        return GraphGenotype.from_dict(d)

    def costs(self, arch: GraphGenotype) -> dict:
        """``params``: the child network's parameters (at this space's width, on its graphs)."""
        return dict(params=sum(p.numel() for p in self.child(arch).parameters() if p.requires_grad))

    # -- networks -----------------------------------------------------------------------------------------------
    def child(self, arch: GraphGenotype, **options) -> nn.Module:
        """:class:`~.supernet.GraphNetwork` of ``arch`` (its cells and nodes) at this space's width."""
        from .supernet import GraphNetwork

        info = self._info()  # options (an image network's memory format, auxiliary head) do not apply
        return GraphNetwork(arch, info.in_dim, info.edge_dim, self.hidden, info.num_classes, task=info.task)

    def supernet(self, C: Optional[int] = None, num_classes: Optional[int] = None, layers: Optional[int] = None,
                 **options) -> nn.Module:
        """``GraphSupernet(in_dim, edge_dim, hidden=C, num_classes, cells=layers, nodes, task, mixed)``: this space's
        size and graphs unless given (``in_dim``, ``edge_dim``, ``nodes``, ``task``, ``mixed`` as options)."""
        from .supernet import GraphSupernet

        if "in_dim" not in options:  # this space's graphs
            info = self._info()
            options = dict(dict(in_dim=info.in_dim, edge_dim=info.edge_dim, task=info.task, mixed=self.mixed),
                           **options)
            num_classes = info.num_classes if num_classes is None else num_classes
        return GraphSupernet(options.pop("in_dim"), options.pop("edge_dim"), self.hidden if C is None else C,
                             num_classes, self.cells if layers is None else layers, options.pop("nodes", self.nodes),
                             **options)

    def arch_weights(self, arch: GraphGenotype) -> List[Tensor]:
        """``[node_w, edge_w]``, ``[cells, links, 5]`` one-hot: the weights that run ``arch`` in the supernet
        (:meth:`GraphSupernet.run <snas_fast.spaces.gnn.supernet.GraphSupernet.run>`)."""
        node = torch.tensor([[NODE_OPS.index(op) for op in cell[0]] for cell in arch.cells])
        edge = torch.tensor([[EDGE_OPS.index(op) for op in cell[1]] for cell in arch.cells])
        return [nn.functional.one_hot(node, len(NODE_OPS)).float(), nn.functional.one_hot(edge, len(EDGE_OPS)).float()]

    def derive(self, source, rule: str = "argmax") -> GraphGenotype:
        """The argmax of every mixed operation (``none`` allowed) of a supernet or of ``(node [cells, links, 5],
        edge [cells, links, 5])``."""
        from .supernet import derive_argmax

        if rule != "argmax":
            raise ValueError(f"rule: expected argmax (the gnn space's one derivation), got {rule!r}")
        node, edge = source.alphas() if isinstance(source, nn.Module) else source
        if node.dim() != 3 or node.shape != edge.shape or node.shape[-1] != len(NODE_OPS):
            raise ValueError(f"alphas: expected two [cells, links, {len(NODE_OPS)}] tensors, got "
                             f"{tuple(node.shape)} and {tuple(edge.shape)}")
        L = node.shape[1]
        nodes = next((n for n in range(1, 64) if num_links(n) == L), None)
        if nodes is None:
            raise ValueError(f"alphas: {L} links per cell is no cell's number of links")
        return derive_argmax(node, edge, nodes)

    def baseline(self, name: str, width: int, layers: int) -> nn.Module:
        from .baselines import GraphBaseline

        info = self._info()
        return GraphBaseline(name, info.in_dim, info.edge_dim, width, info.num_classes, layers, info.task)
