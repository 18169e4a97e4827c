"""EGNAS's candidate operations (Cai et al. 2021, phython96/EGNAS ``models/operations.py``), on a graph of N nodes
and E directed edges with F features each.

Node operations ``none, identity, mean, sum, max`` map ``(V [N, F], E [E, F])`` to ``[N, F]``: the message of the
edge ``s -> t`` is the source node gated by the edge feature, ``sigmoid(B(E)) * V[s] + C(E)`` (``B``, ``C``: the two
halves of one MLP's output), reduced over each target's incoming edges by the op's aggregation.

Edge operations ``none, identity, cat, gru, film`` map ``(V, E)`` to ``[E, F]`` from ``r = MLP([V_s, V_t, V_s - V_t])``
(one ``r`` per mixed operation, shared by its candidates): ``cat``: ``MLP([r, E])``; ``gru``: ``GRUCell(r, E)``;
``film``: ``sigmoid(W r) * E + U r``.

Every non-trivial operation ends in ``Linear + BatchNorm`` (affine-free in the search). Each module has ``pre_bn``
(the output before that BatchNorm) and ``bn``, with ``module(...) == module.bn(module.pre_bn(...))``: the fused
mixed operation folds the BatchNorm into :func:`snas_fast.mixed_edge` (see :mod:`.supernet`). Message passing uses
PyG's scatter (``torch_geometric.utils.scatter``, torch's ``scatter_reduce`` underneath); nothing hand-written.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

__all__ = ["EDGE_OPS", "NODE_OPS", "EdgeInput", "EdgeOp", "NodeAgg", "edge_input", "make_edge_op", "make_node_op"]

#: The node operations, in the column order of a cell's node ``log_alpha``.
NODE_OPS: Tuple[str, ...] = ("none", "identity", "mean", "sum", "max")
#: The edge operations, in the column order of a cell's edge ``log_alpha``.
EDGE_OPS: Tuple[str, ...] = ("none", "identity", "cat", "gru", "film")


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """``Linear -> ReLU -> Linear``: ``[*, d_in] -> [*, d_out]``."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_out))


class NodeAgg(nn.Module):
    """A gated aggregation (``mean``, ``sum`` or ``max``) followed by ``Linear + BatchNorm1d``.

    ``forward(V [N, F], E [E, F], edge_index [2, E]) -> [N, F]``: ``scale, shift = MLP(E)``,
    ``m = sigmoid(scale) * V[src] + shift`` (``[E, F]``), ``a = reduce_{e: dst(e) = t} m_e`` (``[N, F]``; 0 for a node
    without incoming edges), then ``BN(Linear(a))``.
    """

    def __init__(self, F: int, reduce: str, affine: bool = False):
        super().__init__()
        if reduce not in ("mean", "sum", "max"):
            raise ValueError(f"reduce: expected mean, sum or max, got {reduce!r}")
        self.reduce = reduce
        self.gate = mlp(F, F, 2 * F)
        self.lin = nn.Linear(F, F)
        self.bn = nn.BatchNorm1d(F, affine=affine)

    def pre_bn(self, V: Tensor, E: Tensor, edge_index: Tensor) -> Tensor:
        src, dst = edge_index
        scale, shift = self.gate(E).chunk(2, dim=-1)  # [E, F] each
        message = torch.sigmoid(scale) * V[src] + shift  # [E, F]
        return self.lin(scatter(message, dst, dim=0, dim_size=V.shape[0], reduce=self.reduce))  # [N, F]

    def forward(self, V: Tensor, E: Tensor, edge_index: Tensor) -> Tensor:
        return self.bn(self.pre_bn(V, E, edge_index))


class EdgeInput(nn.Module):
    """``r = ReLU(Linear([V_s, V_t, V_s - V_t]))``: ``(V [N, F], edge_index [2, E]) -> [E, F]``, the input of an
    edge mixed operation's non-trivial candidates.

    Computed on the nodes, then gathered: with ``Linear``'s weight ``[W_s, W_t, W_d]`` (``[F, 3F]``),
    ``r = ReLU(V_s (W_s + W_d)^T + V_t (W_t - W_d)^T + b)``, two ``[N, F] x [F, F]`` products instead of one
    ``[E, 3F] x [3F, F]`` (E is 30x N on sbm-cluster); the same function of the same parameters (tested against
    the concatenation)."""

    def __init__(self, F: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3 * F, F), nn.ReLU())

    def forward(self, V: Tensor, edge_index: Tensor) -> Tensor:
        linear = self.mlp[0]
        w_s, w_t, w_d = linear.weight.chunk(3, dim=1)  # [F, F] each
        at_source = V @ (w_s + w_d).T  # [N, F]
        at_target = torch.addmm(linear.bias, V, (w_t - w_d).T)  # [N, F]
        return torch.relu(at_source[edge_index[0]] + at_target[edge_index[1]])


def edge_input(F: int) -> EdgeInput:
    return EdgeInput(F)


class EdgeOp(nn.Module):
    """An edge operation ``cat``, ``gru`` or ``film`` followed by ``Linear + BatchNorm1d``.

    ``forward(r [E, F], E [E, F]) -> [E, F]``: ``cat``: ``MLP([r, E])``; ``gru``: ``GRUCell(input=r, hidden=E)``;
    ``film``: ``sigmoid(W r) * E + U r``; then ``BN(Linear(.))``.
    """

    def __init__(self, F: int, kind: str, affine: bool = False):
        super().__init__()
        if kind not in ("cat", "gru", "film"):
            raise ValueError(f"kind: expected cat, gru or film, got {kind!r}")
        self.kind = kind
        if kind == "cat":
            self.body = nn.Sequential(nn.Linear(2 * F, F), nn.ReLU())
        elif kind == "gru":
            self.body = nn.GRUCell(F, F)
        else:
            self.body = nn.Linear(F, 2 * F)  # [W; U] r
        self.lin = nn.Linear(F, F)
        self.bn = nn.BatchNorm1d(F, affine=affine)

    def pre_bn(self, r: Tensor, E: Tensor) -> Tensor:
        if self.kind == "cat":
            h = self.body(torch.cat([r, E], dim=-1))
        elif self.kind == "gru":
            h = self.body(r, E)
        else:
            w, u = self.body(r).chunk(2, dim=-1)
            h = torch.sigmoid(w) * E + u
        return self.lin(h)

    def forward(self, r: Tensor, E: Tensor) -> Tensor:
        return self.bn(self.pre_bn(r, E))


def make_node_op(name: str, F: int, affine: bool = False) -> Optional[nn.Module]:
    """The module of node operation ``name`` (None for ``none`` and ``identity``, which have none)."""
    if name not in NODE_OPS:
        raise ValueError(f"name: expected a node operation {list(NODE_OPS)}, got {name!r}")
    return NodeAgg(F, name, affine) if name in ("mean", "sum", "max") else None


def make_edge_op(name: str, F: int, affine: bool = False) -> Optional[nn.Module]:
    """The module of edge operation ``name`` (None for ``none`` and ``identity``)."""
    if name not in EDGE_OPS:
        raise ValueError(f"name: expected an edge operation {list(EDGE_OPS)}, got {name!r}")
    return EdgeOp(F, name, affine) if name in ("cat", "gru", "film") else None
