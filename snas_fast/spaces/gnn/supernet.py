"""EGNAS's one-shot graph network (:class:`GraphSupernet`) and the child network of a genotype
(:class:`GraphNetwork`).

A cell takes ``V0, V1`` (``[N, F]``) and ``E0, E1`` (``[E, F]``) from the two previous cells (the stem's output for
the first cells) and computes ``nodes`` intermediate states; state ``i`` is ``V_i = sum_{j<i} node_mix_{j,i}(V_j,
E_j)``, ``E_i = sum_{j<i} edge_mix_{j,i}(V_j, E_j)`` (:func:`~.genotype.links`). The cell's output is
``ReLU(Linear(cat(V_2, ..., V_{nodes+1})))`` and the same for the edges. The readout adds to the last cell's node
states the mean of their incoming edge states, then classifies each node, or the mean of each graph's nodes. Each
cell has its own ``log_alpha`` rows: ``node_alpha`` and ``edge_alpha`` are ``[cells, links, 5]``.

Each mixed operation is a weighted sum of its K = 5 candidates' outputs (``[K, N, F]`` node tensors, ``[K, E, F]``
edge tensors), computed by one of (``mixed=``):

- ``"fused"``: :func:`snas_fast.gumbel_mixed_op` on the candidates (SNAS: the sample and the sum in one kernel) or
  :func:`snas_fast.mixed_op` with given weights (``softmax(log_alpha)``: DARTS first order; one-hot: a child);
- ``"fused_edge"``: :func:`snas_fast.mixed_edge` on ``[1, F, N, 1]`` channels_last views (no copy): the identity
  and every candidate's trailing affine-free BatchNorm inside the kernel (normalised outputs never stored), each
  candidate's prefix up to that BatchNorm recomputed in backward (``torch.utils.checkpoint``: only ``V`` and ``E``,
  which the cell keeps anyway, are saved). The Gumbel sample ``softmax((log_alpha + g) / tau)`` (K numbers) is computed eagerly;
- ``"eager"``: :mod:`snas_fast.reference` (plain PyTorch), the oracle of the equality tests.

All three compute the same numbers from the same modules (same state dict). The zero op (``none``) is never run.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torch_geometric.nn import global_mean_pool
from torch_geometric.utils import scatter

from ...ops import functional as fops
from ...ops import reference
from ..base import OneShot
from .genotype import GraphGenotype, links, num_links
from .operations import EDGE_OPS, NODE_OPS, edge_input, make_edge_op, make_node_op
from .space import MIXED

__all__ = ["GraphNetwork", "GraphSupernet", "MIXED", "TASKS"]

_TRIVIAL = ("none", "identity")  # the operations without a module
TASKS = ("node", "graph")

# How one mixed operation is weighted: ("gumbel", log_alpha [K], tau, noise [K]) or ("weights", w [K]).
Spec = Tuple


def _weights_of(spec: Spec) -> Tensor:
    if spec[0] == "weights":
        return spec[1]
    _, log_alpha, tau, noise = spec
    return reference.gumbel_softmax(log_alpha, tau, noise)


def _plane(t: Tensor) -> Tensor:
    """``[M, F]`` (contiguous) as the ``[1, F, M, 1]`` channels_last image :func:`snas_fast.mixed_edge` reads in
    place: F channels, one M-pixel plane, so its BatchNorm is BatchNorm1d's over the M rows."""
    M, Fd = t.shape
    return t.contiguous().view(1, M, 1, Fd).permute(0, 3, 1, 2)


def _mix(x: Tensor, bns: Sequence[nn.BatchNorm1d], cols: Sequence[int], id_col: int, K: int, spec: Spec, mixed: str,
         pres: Callable[[], List[Tensor]]) -> Tensor:
    """``sum_k w_k y_k`` over K candidates: the identity ``x`` (``[M, F]``) in column ``id_col`` (-1: absent),
    ``bns[m](pres()[m])`` in column ``cols[m]`` (``pres()``: the candidates' outputs before their BatchNorms, each
    ``[M, F]``; ``fused_edge`` calls it under a checkpoint), zero ops elsewhere. ``K == 1``: a child's one
    operation, unweighted."""
    if K == 1:
        if id_col == 0:
            return x
        if bns:
            return bns[0](pres()[0])
        return torch.zeros_like(x)  # none
    if mixed == "fused_edge":
        weights = _weights_of(spec)
        us = []
        if bns:
            us = checkpoint(pres, use_reentrant=False) if torch.is_grad_enabled() else pres()
        out = fops.mixed_edge(_plane(x), [_plane(u) for u in us], weights, [-1, -1, id_col, *cols],
                              **fops.batch_norm_args(list(bns)))
        return out.permute(0, 2, 3, 1).reshape(x.shape)  # [1, M, 1, F] -> [M, F], no copy
    pre = pres() if bns else []
    ys: List[Optional[Tensor]] = [None] * K
    if id_col >= 0:
        ys[id_col] = x
    for c, bn, u in zip(cols, bns, pre):
        ys[c] = bn(u)
    if all(y is None for y in ys):  # only zero ops (a child's `none`)
        return torch.zeros_like(x)
    if mixed == "eager":
        if spec[0] == "weights":
            return reference.mixed_op(ys, spec[1])
        return reference.gumbel_mixed_op(ys, spec[1], spec[2], noise=spec[3])
    if spec[0] == "weights":
        return fops.mixed_op(ys, spec[1])
    return fops.gumbel_mixed_op(ys, spec[1], spec[2], noise=spec[3])


class _Mixed(nn.Module):
    """What node and edge mixed operations share: the candidates ``names`` (their column order), the modules of the
    non-trivial ones (``ops``), and where each sits in the weights (fixed at construction)."""

    def __init__(self, names: Sequence[str], make: Callable[[str], nn.Module]):
        super().__init__()
        self.names = tuple(names)
        self.ops = nn.ModuleDict({n: make(n) for n in self.names if n not in _TRIVIAL})
        self._cols = [self.names.index(n) for n in self.ops]
        self._id_col = self.names.index("identity") if "identity" in self.names else -1

    def _mixed(self, x: Tensor, pres: Callable[[], List[Tensor]], spec: Spec, mixed: str) -> Tensor:
        return _mix(x, [m.bn for m in self.ops.values()], self._cols, self._id_col, len(self.names), spec, mixed,
                    pres)


class NodeMixed(_Mixed):
    """One node mixed operation over ``names`` (a subset of :data:`NODE_OPS`, in their order):
    ``forward(V [N, F], E [E, F], edge_index [2, E], spec, mixed) -> [N, F]``."""

    def __init__(self, F: int, names: Sequence[str] = NODE_OPS, affine: bool = False):
        super().__init__(names, lambda n: make_node_op(n, F, affine))

    def forward(self, V: Tensor, E: Tensor, edge_index: Tensor, spec: Spec, mixed: str) -> Tensor:
        def pres(V=V, E=E):
            return [m.pre_bn(V, E, edge_index) for m in self.ops.values()]

        return self._mixed(V, pres, spec, mixed)


class EdgeMixed(_Mixed):
    """One edge mixed operation over ``names`` (a subset of :data:`EDGE_OPS`): ``forward(V [N, F], E [E, F],
    edge_index [2, E], spec, mixed) -> [E, F]``; ``r = MLP([V_s, V_t, V_s - V_t])`` computed once for its
    candidates."""

    def __init__(self, F: int, names: Sequence[str] = EDGE_OPS, affine: bool = False):
        super().__init__(names, lambda n: make_edge_op(n, F, affine))
        self.input = edge_input(F) if len(self.ops) else None

    def forward(self, V: Tensor, E: Tensor, edge_index: Tensor, spec: Spec, mixed: str) -> Tensor:
        def pres(V=V, E=E):
            if not len(self.ops):
                return []
            r = self.input(V, edge_index)
            return [m.pre_bn(r, E) for m in self.ops.values()]

        return self._mixed(E, pres, spec, mixed)


class GraphCell(nn.Module):
    """One cell: ``forward(V0, V1, E0, E1, edge_index, node_specs, edge_specs, mixed) -> (V [N, F], E [E, F])``;
    ``node_specs[l]``/``edge_specs[l]``: how link ``l`` (:func:`links` order) is weighted. ``choice``: a genotype
    cell ``(node_ops, edge_ops)`` (one operation per link, the child's) or None (every candidate, the supernet's)."""

    def __init__(self, F: int, nodes: int, choice=None, affine: bool = False):
        super().__init__()
        self.nodes = nodes
        self.links = links(nodes)
        node_names = [NODE_OPS] * len(self.links) if choice is None else [(n,) for n in choice[0]]
        edge_names = [EDGE_OPS] * len(self.links) if choice is None else [(n,) for n in choice[1]]
        self.node_mix = nn.ModuleList(NodeMixed(F, n, affine) for n in node_names)
        self.edge_mix = nn.ModuleList(EdgeMixed(F, n, affine) for n in edge_names)
        self.v_out = nn.Linear(nodes * F, F)
        self.e_out = nn.Linear(nodes * F, F)

    def forward(self, V0, V1, E0, E1, edge_index, node_specs, edge_specs, mixed: str):
        Vs, Es = [V0, V1], [E0, E1]
        for i in range(2, self.nodes + 2):
            v = e = None
            for l, (j, t) in enumerate(self.links):
                if t != i:
                    continue
                dv = self.node_mix[l](Vs[j], Es[j], edge_index, node_specs[l], mixed)
                de = self.edge_mix[l](Vs[j], Es[j], edge_index, edge_specs[l], mixed)
                v = dv if v is None else v + dv
                e = de if e is None else e + de
            Vs.append(v)
            Es.append(e)
        return (F.relu(self.v_out(torch.cat(Vs[2:], dim=-1))), F.relu(self.e_out(torch.cat(Es[2:], dim=-1))))


def _check_dims(**dims) -> None:
    for name, value in dims.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")


class _GraphBase(nn.Module):
    """Stem, cells and readout shared by the supernet and the child."""

    def __init__(self, in_dim: int, edge_dim: int, hidden: int, num_classes: int, cells: int, nodes: int,
                 task: str, choices, affine: bool):
        super().__init__()
        _check_dims(in_dim=in_dim, edge_dim=edge_dim, hidden=hidden, num_classes=num_classes, cells=cells,
                    nodes=nodes)
        if task not in TASKS:
            raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")
        self.task, self.nodes, self.num_cells, self.hidden = task, nodes, cells, hidden
        self.node_stem = nn.Linear(in_dim, hidden)
        self.edge_stem = nn.Linear(edge_dim, hidden)
        self.cells = nn.ModuleList(GraphCell(hidden, nodes, choices[c] if choices else None, affine)
                                   for c in range(cells))
        self.classifier = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def _run(self, batch, specs, mixed: str) -> Tensor:
        edge_index = batch.edge_index
        V = self.node_stem(batch.x)
        E = self.edge_stem(batch.edge_attr)
        s0, s1 = (V, E), (V, E)
        for cell, (node_specs, edge_specs) in zip(self.cells, specs):
            s0, s1 = s1, cell(s0[0], s1[0], s0[1], s1[1], edge_index, node_specs, edge_specs, mixed)
        V, E = s1
        # the last cell's edge states reach the readout through their targets (else its edge operations into the
        # last state, and their log_alpha, would get no gradient)
        V = V + scatter(E, edge_index[1], dim=0, dim_size=V.shape[0], reduce="mean")
        if self.task == "graph":
            V = global_mean_pool(V, batch.batch, size=batch.num_graphs)
        return self.classifier(V)  # [N, classes] or [graphs, classes]


class GraphSupernet(_GraphBase, OneShot):
    """EGNAS's supernet: every link of every cell holds the five node and the five edge operations
    (:class:`~snas_fast.spaces.OneShot`: ``alpha_names`` ``("node", "edge")``; no drop-path).

    Args:
        in_dim, edge_dim: node and edge input features (``batch.x [N, in_dim]``, ``batch.edge_attr [E, edge_dim]``).
        hidden: F, the width of every node and edge state.
        num_classes: classes per node (``task="node"``) or per graph (``"graph"``: mean pooling).
        cells, nodes: cells stacked, intermediate states per cell.
        mixed: ``"fused"``, ``"fused_edge"`` or ``"eager"`` (module docstring).

    ``node_alpha``, ``edge_alpha``: ``[cells, links, 5]`` (one set per cell, nothing shared), initialised at
    ``1e-3 * randn`` as DARTS.
    """

    alpha_names = ("node", "edge")

    def __init__(self, in_dim: int, edge_dim: int, hidden: int, num_classes: int, cells: int = 2, nodes: int = 2,
                 task: str = "node", mixed: str = "fused"):
        super().__init__(in_dim, edge_dim, hidden, num_classes, cells, nodes, task, None, affine=False)
        if mixed not in MIXED:
            raise ValueError(f"mixed: expected one of {', '.join(MIXED)}, got {mixed!r}")
        self.mixed = mixed
        L = num_links(nodes)
        self.node_alpha = nn.Parameter(1e-3 * torch.randn(cells, L, len(NODE_OPS)))
        self.edge_alpha = nn.Parameter(1e-3 * torch.randn(cells, L, len(EDGE_OPS)))

    def arch_parameters(self) -> List[nn.Parameter]:
        return [self.node_alpha, self.edge_alpha]

    def weight_parameters(self) -> List[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n not in ("node_alpha", "edge_alpha")]

    def alphas(self) -> Tuple[Tensor, Tensor]:
        """``softmax(log_alpha)`` of the node and edge operations, ``[cells, links, 5]`` each (detached)."""
        return self.node_alpha.detach().softmax(-1), self.edge_alpha.detach().softmax(-1)

    def noise_shapes(self) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        return tuple(self.node_alpha.shape), tuple(self.edge_alpha.shape)

    def forward(self, batch, tau: Optional[float], noise: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        """Logits ``[N, classes]`` (node task) or ``[graphs, classes]`` of the PyG ``batch`` (``x``, ``edge_index``,
        ``edge_attr``, and ``batch`` for graphs) under a Gumbel sample ``softmax((log_alpha + g) / tau)`` of every
        mixed operation; ``noise = (g_node, g_edge)`` shaped like ``node_alpha``/``edge_alpha``, or None to draw it
        from torch's default generator. ``tau=None``: the weights ``softmax(log_alpha)`` (DARTS)."""
        if tau is None:
            return self.run(batch, [self.node_alpha.softmax(-1), self.edge_alpha.softmax(-1)])
        if noise is None:
            noise = tuple(-torch.empty_like(a).exponential_().log() for a in self.arch_parameters())
        g_node, g_edge = noise
        specs = [([("gumbel", self.node_alpha[c, l], tau, g_node[c, l]) for l in range(self.node_alpha.shape[1])],
                  [("gumbel", self.edge_alpha[c, l], tau, g_edge[c, l]) for l in range(self.edge_alpha.shape[1])])
                 for c in range(self.num_cells)]
        return self._run(batch, specs, self.mixed)

    def run(self, batch, weights: Sequence[Tensor]) -> Tensor:
        """Logits under given weights ``(node_w, edge_w)``, ``[cells, links, 5]`` each (rows summing to 1; one-hot
        rows run one child, :meth:`GnnSpace.encode <snas_fast.spaces.gnn.space.GnnSpace.encode>`)."""
        node_w, edge_w = weights
        specs = [([("weights", node_w[c, l]) for l in range(node_w.shape[1])],
                  [("weights", edge_w[c, l]) for l in range(edge_w.shape[1])]) for c in range(self.num_cells)]
        return self._run(batch, specs, self.mixed)

    def run_arch(self, batch, weights: Sequence[Tensor], choices=None) -> Tensor:
        """:meth:`run` (``choices`` unused: every candidate runs, those of weight 0 too)."""
        return self.run(batch, weights)

    def forward_child(self, batch) -> Tensor:
        """The derived child (every mixed operation's argmax, one-hot weights) with the supernet's weights."""
        return self.run(batch, [F.one_hot(a.detach().argmax(-1), a.shape[-1]).to(a.dtype)
                                for a in self.arch_parameters()])

    def genotype(self) -> GraphGenotype:
        """The argmax derivation (``none`` allowed) of the current ``log_alpha``."""
        return derive_argmax(self.node_alpha.detach(), self.edge_alpha.detach(), self.nodes)


def derive_argmax(node_alpha: Tensor, edge_alpha: Tensor, nodes: int) -> GraphGenotype:
    """Each mixed operation's argmax (``none`` allowed): ``node_alpha``/``edge_alpha`` ``[cells, links, 5]``."""
    cells = tuple((tuple(NODE_OPS[k] for k in na.argmax(-1).tolist()),
                   tuple(EDGE_OPS[k] for k in ea.argmax(-1).tolist()))
                  for na, ea in zip(node_alpha, edge_alpha))
    return GraphGenotype(nodes, cells)


class GraphNetwork(_GraphBase):
    """The child network of ``genotype`` (one node and one edge operation per link, affine BatchNorms), trained from
    scratch: ``forward(batch) -> logits``."""

    def __init__(self, genotype: GraphGenotype, in_dim: int, edge_dim: int, hidden: int, num_classes: int,
                 task: str = "node"):
        if not isinstance(genotype, GraphGenotype):
            raise TypeError(f"genotype: expected a GraphGenotype, got {type(genotype).__name__}")
        super().__init__(in_dim, edge_dim, hidden, num_classes, len(genotype.cells), genotype.nodes, task,
                         genotype.cells, affine=True)
        self.genotype = genotype
        L = num_links(genotype.nodes)
        self._specs = [([("weights", None)] * L, [("weights", None)] * L) for _ in genotype.cells]

    def forward(self, batch) -> Tensor:
        return self._run(batch, self._specs, "eager")
