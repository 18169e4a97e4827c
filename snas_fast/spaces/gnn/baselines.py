"""PyG baselines of the graph space (:meth:`GnnSpace.baseline <snas_fast.spaces.gnn.space.GnnSpace.baseline>`):
hand-designed message-passing networks that a searched genotype is measured against, at the same parameter count
(``snas-fast train --space gnn --baseline gcn|gin|gated|gat|sage --param-budget ...``)."""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["BASELINES", "GraphBaseline"]

BASELINES = ("gcn", "gin", "gated", "gat", "sage")
#: the baselines that read edge features
EDGE_FEATURES = ("gated", "gat")
GAT_HEADS = 4


class GraphBaseline(nn.Module):
    """A PyG baseline: node and edge stems, ``layers`` x (conv -> BatchNorm -> ReLU, residual), the readout of
    :class:`~snas_fast.spaces.gnn.supernet.GraphNetwork` (mean pooling for graphs, the same classifier MLP).
    ``kind``: ``gcn`` (GCNConv, no edge features), ``gin`` (GINConv with a 2-layer MLP, no edge features),
    ``gated`` (ResGatedGraphConv with edge features, Bresson & Laurent's gated GCN), ``gat`` (GATConv, 4 heads of
    ``hidden / 4`` concatenated, edge features in the attention; ``hidden`` a multiple of 4) or ``sage``
    (SAGEConv, mean aggregation, no edge features)."""

    def __init__(self, kind: str, in_dim: int, edge_dim: int, hidden: int, num_classes: int, layers: int,
                 task: str):
        super().__init__()
        from torch_geometric.nn import GATConv, GCNConv, GINConv, ResGatedGraphConv, SAGEConv

        if kind not in BASELINES:
            raise ValueError(f"kind: expected one of {', '.join(BASELINES)}, got {kind!r}")
        if kind == "gat" and hidden % GAT_HEADS:
            raise ValueError(f"hidden: gat concatenates {GAT_HEADS} heads, expected a multiple of {GAT_HEADS}, "
                             f"got {hidden}")
        self.kind, self.task = kind, task
        self.node_stem = nn.Linear(in_dim, hidden)
        self.edge_stem = nn.Linear(edge_dim, hidden) if kind in EDGE_FEATURES else None
        make = dict(gcn=lambda: GCNConv(hidden, hidden),
                    gin=lambda: GINConv(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))),
                    gated=lambda: ResGatedGraphConv(hidden, hidden, edge_dim=hidden),
                    gat=lambda: GATConv(hidden, hidden // GAT_HEADS, heads=GAT_HEADS, edge_dim=hidden),
                    sage=lambda: SAGEConv(hidden, hidden))[kind]
        self.convs = nn.ModuleList(make() for _ in range(layers))
        self.bns = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(layers))
        self.classifier = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, batch) -> Tensor:
        from torch_geometric.nn import global_mean_pool

        h = self.node_stem(batch.x)
        e = self.edge_stem(batch.edge_attr) if self.edge_stem is not None else None
        for conv, bn in zip(self.convs, self.bns):
            out = conv(h, batch.edge_index, e) if e is not None else conv(h, batch.edge_index)
            h = h + F.relu(bn(out))
        if self.task == "graph":
            h = global_mean_pool(h, batch.batch, size=batch.num_graphs)
        return self.classifier(h)
