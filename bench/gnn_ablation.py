"""Why does the network EGNAS's search derived on sbm-cluster underfit? One change at a time against the same seed
(README, "Graph networks (EGNAS)", the ablation table).

Every variant is the genotype the sbm-cluster search derived (:data:`DERIVED`, README; also the network of
``bench/bench_gnn.py --parts train``) at width 16 with one change, or a PyG baseline, trained with one recipe (Adam
at 3e-3, a cosine rate over every step, batch 16, cross entropy; BatchNorm re-estimated on 20 training batches
before evaluating) on the first ``--graphs`` search-train graphs of sbm-cluster (seed 0), then scored on the
search-validation graphs (what a change is chosen by) and the fixed test graphs (what is reported). One variant per
process, one thread:

    python bench/gnn_ablation.py --variant base --graphs 500 --epochs 15    # one JSON line on stdout

A change that is not in the library (a residual, a self term, a ReLU after each state) is made in this process
only, by replacing one method of the class; :data:`VARIANTS` says what each one is.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from snas_fast.data import IGNORE
from snas_fast.data.graphs import collate, load_dataset
from snas_fast.engine.loop import recalibrate_bn
from snas_fast.spaces.gnn import GraphBaseline, GraphGenotype
from snas_fast.spaces.gnn import operations as O
from snas_fast.spaces.gnn import supernet as S

DERIVED = GraphGenotype(2, ((("max", "max", "identity", "max", "none"), ("film", "gru", "film", "cat", "cat")),
                            (("max", "max", "mean", "mean", "sum"), ("film", "gru", "film", "gru", "gru"))))

#: variant: what it changes (README's table rows)
VARIANTS = {
    "base": "the derived genotype as it is",
    "res": "a residual around each cell: (V, E) + (V1, E1)",
    "self": "a self term in every node operation: + Linear(V_t) before its BatchNorm (GraphSAGE's root weight)",
    "staterelu": "a ReLU on every intermediate state (after the sum of its operations)",
    "noedge": "the readout without the mean of the incoming edge states",
    "bnmsg": "every node operation's BatchNorm moved from after its Linear to the messages, before the aggregation",
    "gatelin": "every node operation's gate MLP (Linear, ReLU, Linear) replaced by one Linear",
    "gatewide": "every node operation's gate MLP with a hidden layer of 2F instead of F",
    "mean": "every max aggregation replaced by mean",
    "sum": "every max aggregation replaced by sum",
    "allmean": "every node operation mean (no none, identity or max)",
    "deep4": "4 cells (the genotype's two cells twice; 2x the parameters)",
    "base_gcn": "PyG GCNConv, 4 layers, width 78 (32.5 k parameters)",
    "base_gcn2": "PyG GCNConv, 2 layers, width 78",
    "base_gated": "PyG ResGatedGraphConv, 4 layers, width 32",
    "base_sage": "PyG SAGEConv, 4 layers, width 58",
}


def _map_nodes(genotype: GraphGenotype, f) -> GraphGenotype:
    return GraphGenotype(genotype.nodes, tuple((tuple(f(o) for o in n), e) for n, e in genotype.cells))


def _patch(variant: str) -> None:
    """The out-of-library changes, in this process only."""
    if variant == "self":
        init, pre_bn = O.NodeAgg.__init__, O.NodeAgg.pre_bn

        def with_root(self, F_, reduce, affine=False):
            init(self, F_, reduce, affine)
            self.root = nn.Linear(F_, F_, bias=False)

        O.NodeAgg.__init__ = with_root
        O.NodeAgg.pre_bn = lambda self, V, E, edge_index: pre_bn(self, V, E, edge_index) + self.root(V)
    elif variant == "bnmsg":
        init = O.NodeAgg.__init__

        def bn_on_messages(self, F_, reduce, affine=False):
            init(self, F_, reduce, affine)
            self.msg_bn, self.bn = self.bn, nn.Identity()

        def pre_bn(self, V, E, edge_index):
            src, dst = edge_index
            scale, shift = self.gate(E).chunk(2, dim=-1)
            message = self.msg_bn(torch.sigmoid(scale) * V[src] + shift)
            return self.lin(O.scatter(message, dst, dim=0, dim_size=V.shape[0], reduce=self.reduce))

        O.NodeAgg.__init__, O.NodeAgg.pre_bn = bn_on_messages, pre_bn
    elif variant in ("gatelin", "gatewide"):
        init = O.NodeAgg.__init__

        def other_gate(self, F_, reduce, affine=False):
            init(self, F_, reduce, affine)
            self.gate = nn.Linear(F_, 2 * F_) if variant == "gatelin" else O.mlp(F_, 2 * F_, 2 * F_)

        O.NodeAgg.__init__ = other_gate
    elif variant == "res":
        forward = S.GraphCell.forward

        def residual(self, V0, V1, E0, E1, edge_index, node_specs, edge_specs, mixed):
            V, E = forward(self, V0, V1, E0, E1, edge_index, node_specs, edge_specs, mixed)
            return V + V1, E + E1

        S.GraphCell.forward = residual
    elif variant == "staterelu":
        def relu_states(self, V0, V1, E0, E1, edge_index, node_specs, edge_specs, mixed):
            Vs, Es = [V0, V1], [E0, E1]
            for i in range(2, self.nodes + 2):
                into = [l for l, (_, t) in enumerate(self.links) if t == i]
                Vs.append(F.relu(sum(self.node_mix[l](Vs[self.links[l][0]], Es[self.links[l][0]], edge_index,
                                                      node_specs[l], mixed) for l in into)))
                Es.append(F.relu(sum(self.edge_mix[l](Vs[self.links[l][0]], Es[self.links[l][0]], edge_index,
                                                      edge_specs[l], mixed) for l in into)))
            return (F.relu(self.v_out(torch.cat(Vs[2:], dim=-1))), F.relu(self.e_out(torch.cat(Es[2:], dim=-1))))

        S.GraphCell.forward = relu_states
    elif variant == "noedge":
        S.scatter = lambda *args, **kwargs: 0.0  # the readout's only scatter


def build(variant: str, width: int) -> nn.Module:
    if variant.startswith("base_"):
        kind = variant[5:].rstrip("0123456789")
        layers = int(variant[-1]) if variant[-1].isdigit() else 4
        return GraphBaseline(kind, 7, 1, width, 6, layers, "node")
    _patch(variant)
    genotype = DERIVED
    if variant in ("mean", "sum"):
        genotype = _map_nodes(DERIVED, lambda o: variant if o == "max" else o)
    elif variant == "allmean":
        genotype = _map_nodes(DERIVED, lambda o: "mean")
    elif variant == "deep4":
        genotype = GraphGenotype(2, DERIVED.cells * 2)
    return S.GraphNetwork(genotype, 7, 1, width, 6, task="node")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    parser.add_argument("--graphs", type=int, default=500, help="search-train graphs trained on")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--width", type=int, default=None, help="default: 16, a baseline's width of VARIANTS")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    width = args.width or {"base_gcn": 78, "base_gcn2": 78, "base_gated": 32, "base_sage": 58}.get(args.variant, 16)
    torch.manual_seed(args.seed)
    data = load_dataset("sbm-cluster", seed=0)
    train, val, test = data.train[:args.graphs], data.val, data.test
    model = build(args.variant, width)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    order = torch.Generator().manual_seed(args.seed)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs * math.ceil(len(train) / 16))

    def batches(part, shuffle):
        idx = torch.randperm(len(part), generator=order).tolist() if shuffle else list(range(len(part)))
        for i in range(0, len(idx), 16):
            yield collate([part[j] for j in idx[i:i + 16]])

    @torch.no_grad()
    def accuracy(part):
        model.eval()
        right = total = 0
        for batch, y in batches(part, False):
            scored = y != IGNORE
            right += int((model(batch).argmax(1)[scored] == y[scored]).sum())
            total += int(scored.sum())
        return right / total

    start = time.time()
    for _ in range(args.epochs):
        model.train()
        right = total = 0
        for batch, y in batches(train, True):
            out = model(batch)
            loss = F.cross_entropy(out, y, ignore_index=IGNORE)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            right, total = right + int((out.argmax(1) == y).sum()), total + y.numel()
    epoch_s = (time.time() - start) / args.epochs
    recalibrate_bn(model, model, batches(train, True), 20, "cpu")
    print(json.dumps(dict(variant=args.variant, graphs=args.graphs, width=width, seed=args.seed,
                          params=sum(p.numel() for p in model.parameters()), train=round(right / total, 4),
                          val=round(accuracy(val), 4), test=round(accuracy(test), 4), epoch_s=round(epoch_s, 1))),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
