"""Graph architecture search on EGNAS's space (:mod:`snas_fast.spaces.gnn`): the search, the retraining of a derived
genotype and the PyG baselines, each a :class:`~snas_fast.engine.loop.Task` run by the one loop
(:func:`~snas_fast.engine.loop.fit`: run directory, metrics, atomic checkpoint, exact resume).

    snas-fast search --space gnn --dataset sbm-cluster --out runs/gnn-sbm
    snas-fast train --space gnn --genotype runs/gnn-sbm --dataset sbm-cluster --out runs/gnn-sbm-child
    snas-fast train --space gnn --baseline gcn --param-budget runs/gnn-sbm-child --dataset sbm-cluster --out ...

The search (``--strategy``): ``snas`` (single level: weights and ``log_alpha`` from one backward of the loss under a
Gumbel sample at the epoch's temperature, every mixed operation one :func:`snas_fast.gumbel_mixed_op`), or
``darts`` (DARTS first order: ``log_alpha`` on a search-validation batch, the weights on a training batch, both
under ``softmax(log_alpha)`` through :func:`snas_fast.mixed_op`). The Gumbel noise of a step is drawn from
(seed, epoch, step), so a resumed run draws what an uninterrupted one draws. Every mixed operation is derived by
its argmax (``none`` allowed). One process (no torchrun for the graph commands).

A batch is a PyG ``Batch`` and its targets (the graphs' classes, or the classes of the nodes in ``target_mask``):
the loop sees ``(batch, target)`` pairs, as it sees ``(images, labels)``.
"""
from __future__ import annotations

import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine import distributed
from ..engine.config import RunConfig, RunError, setting
from ..engine.data import eval_loader, train_loader
from ..engine.loop import Callback, EpochEnd, Task, evaluate, fit, recalibrate_bn
from ..engine.rundir import RunDir
from ..engine.seeds import make_generator, seed_everything
from ..spaces.gnn.datasets import DATASETS, load_dataset
from ..spaces.gnn.genotype import GraphGenotype
from ..spaces.gnn.operations import EDGE_OPS, NODE_OPS
from ..spaces.gnn.space import GnnSpace
from ..spaces.gnn.supernet import MIXED, GraphNetwork, GraphSupernet
from . import convergence
from .snas import SearchWarning

__all__ = ["BASELINES", "GnnError", "GnnSearch", "GnnSearchConfig", "GnnTrainConfig", "GraphBaseline",
           "GraphRetraining", "collate", "compare_table", "resolve_graph_genotype", "search", "train"]

GENOTYPE_FILE = "genotype.json"
BASELINES = ("gcn", "gin", "gated")
_NOISE_STREAM = 0x676E6E  # "gnn": the search's Gumbel noise, apart from the other uses of seed_for


class GnnError(RunError):
    """A graph search or retraining that cannot start or go on; one-line message."""


def collate(items) -> Tuple[object, Tensor]:
    """PyG ``Data`` items -> ``(Batch, target)``: ``target`` the graphs' classes, or the classes of the nodes in
    ``target_mask`` (node tasks)."""
    from torch_geometric.data import Batch

    batch = Batch.from_data_list(items)
    return batch, (batch.y[batch.target_mask] if "target_mask" in batch else batch.y)


def _scored(logits: Tensor, batch) -> Tensor:
    """The rows of ``logits`` the batch's target scores (the nodes in ``target_mask``, or every graph)."""
    return logits[batch.target_mask] if "target_mask" in batch else logits


@dataclass
class GraphRunConfig(RunConfig):
    """Settings shared by the graph search and retraining: ``--layers`` is the number of cells, ``--channels`` the
    hidden width F of every node and edge state."""

    Error = GnnError

    dataset: str = setting("digits-graph", "digits-graph (8x8 digits as grid graphs), sbm-cluster (benchmarking-gnns' "
                                           "CLUSTER generator) or karate (PyG's KarateClub); all offline",
                           choices=DATASETS)
    space: str = setting("gnn", "search space: gnn (EGNAS's graph space)", choices=("gnn",))
    layers: int = setting(2, "cells")
    channels: int = setting(32, "hidden width F of the node and edge states")
    nodes: int = setting(2, "intermediate states per cell")
    batch_size: int = setting(32, "graphs per batch")

    def validate(self) -> None:
        super().validate()
        self.check_ints(["nodes"], 1)
        if distributed.context(self.device).distributed:
            raise GnnError("the graph commands run in one process; start them without torchrun")

    def load_data(self, split: str = "search"):
        """``(train, val, info)`` (``"search"``) or ``(train, test, info)`` (``"train_test"``): lists of PyG
        ``Data``, each cut to ``data_limit`` graphs if set."""
        try:
            first, second, info = load_dataset(self.dataset, self.seed).split(split)
        except ValueError as error:
            raise GnnError(str(error)) from None
        n = self.data_limit
        return (first[:n], second[:n], info) if n else (first, second, info)


# ------------------------------------------------------------------------------------------------------------
# The search
# ------------------------------------------------------------------------------------------------------------
@dataclass
class GnnSearchConfig(GraphRunConfig):
    """Every setting of a graph search. EGNAS trains the weights by SGD at 0.025 and ``log_alpha`` by Adam at 3e-4
    over 50 epochs; in a short run on the CPU their SGD left the digits-graph supernet at chance after 3 epochs
    (Adam at 3e-3: 0.27 train accuracy), so here the weights take Adam (cosine rate) and ``log_alpha`` Adam at a
    rate that moves it within the run."""

    out: str = setting("runs/gnn-search", "run directory")
    epochs: int = setting(10, "search epochs")
    lr: float = setting(0.003, "weights: Adam learning rate (cosine schedule)")
    lr_min: float = setting(0.0, "weights: final learning rate")
    weight_decay: float = setting(0.0, "weights: weight decay")
    strategy: str = setting("snas", "snas (Gumbel sample, single level) or darts (softmax weights, first-order "
                                    "bi-level)", choices=("snas", "darts"))
    mixed: str = setting("fused", "fused (gumbel_mixed_op / mixed_op on the candidates), fused_edge (their "
                                  "BatchNorms folded into mixed_edge, prefixes recomputed) or eager (plain PyTorch)",
                         choices=MIXED)
    arch_lr: float = setting(0.03, "log_alpha: Adam learning rate")
    arch_weight_decay: float = setting(1e-3, "log_alpha: weight decay")
    tau_start: float = setting(1.0, "initial temperature (snas)")
    tau_end: float = setting(0.1, "final temperature, reached at the last epoch (linear schedule)")
    bn_recalibration: int = setting(5, "training batches that recalibrate BatchNorm before the derived child is "
                                       "evaluated (0: none)")

    def validate(self) -> None:
        super().validate()
        for name in ("arch_lr", "arch_weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise GnnError(f"{name}: expected a number >= 0, got {value!r}")
        for name in ("tau_start", "tau_end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value)
                                                                                     and value > 0):
                raise GnnError(f"{name}: expected a temperature > 0, got {value!r}")
        if self.tau_end > self.tau_start:
            raise GnnError(f"tau_end: expected at most tau_start = {self.tau_start}, got {self.tau_end}")
        self.check_ints(["bn_recalibration"], 0)


def temperature(config: GnnSearchConfig, epoch: int) -> float:
    """Linear from ``tau_start`` (first epoch) to ``tau_end`` (last epoch)."""
    return config.tau_start + (config.tau_end - config.tau_start) * epoch / max(config.epochs - 1, 1)


def gumbel_noise(shapes, seed: int, epoch: int, step: int, phase: int = 0) -> Tuple[Tensor, ...]:
    """Gumbel noise of the given shapes, a function of (seed, epoch, step, phase) alone."""
    g = make_generator(_NOISE_STREAM, seed, epoch, step, phase)
    return tuple(-torch.empty(s).exponential_(generator=g).log() for s in shapes)


def arch_figures(model: GraphSupernet, initial: Sequence[Sequence[Sequence[int]]]) -> dict:
    """Convergence figures (:mod:`snas_fast.search.convergence`) of every cell's node and edge ``softmax(log_alpha)``:
    ``{"node": stats over all cells' links, "edge": ..., "cells": [{"node": stats, "edge": stats}, ...],
    "changed": mixed operations whose argmax left ``initial`` (the untrained supernet's)}``."""
    node, edge = model.alphas()
    out = dict(cells=[])
    for kind, probs in (("node", node), ("edge", edge)):
        out[kind] = dict(convergence.arch_stats(probs.reshape(-1, probs.shape[-1])),
                         edges=probs.shape[0] * probs.shape[1])
    for c in range(node.shape[0]):
        out["cells"].append(dict(node=convergence.arch_stats(node[c]), edge=convergence.arch_stats(edge[c])))
    now = torch.stack([node.argmax(-1), edge.argmax(-1)])
    out["changed"] = int((now != torch.as_tensor(initial)).sum())
    return out


@dataclass
class GnnSearchResult:
    genotype: GraphGenotype
    val_acc: float  # the supernet under softmax(log_alpha), search-validation
    child_val_acc: float  # the derived child with the supernet's weights, BatchNorm recalibrated
    history: List[dict]
    model: GraphSupernet
    arch: dict
    warning: Optional[str] = None


class GnnSearch(Task):
    """EGNAS's search (SNAS or DARTS first order) as a task of :func:`snas_fast.engine.loop.fit`."""

    bar_columns = ("tau",)
    nan_hint = "lower the learning rates"

    def __init__(self, config: GnnSearchConfig, data, ctx):
        train_set, val_set, info = data
        self.config, self.ctx, self.info = config, ctx, info
        seed_everything(config.seed)
        self.space = GnnSpace(config.nodes, config.layers)
        self.model = self.space.supernet(config.channels, info.num_classes, config.layers, in_dim=info.in_dim,
                                         edge_dim=info.edge_dim, task=info.task, mixed=config.mixed).to(ctx.device)
        self.opt_w = torch.optim.Adam(self.model.weight_parameters(), config.lr, weight_decay=config.weight_decay)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_w, float(config.epochs),
                                                                   eta_min=config.lr_min)
        self.opt_a = torch.optim.Adam(self.model.arch_parameters(), config.arch_lr, betas=(0.5, 0.999),
                                      weight_decay=config.arch_weight_decay)
        self.train_loader = train_loader(train_set, config.batch_size, config.seed, ctx, config.num_workers,
                                         collate_fn=collate)
        self.val_loader = eval_loader(val_set, config.batch_size, ctx, config.num_workers, collate_fn=collate)
        node, edge = self.model.alphas()
        self.initial = [node.argmax(-1).tolist(), edge.argmax(-1).tolist()]
        self.history: List[dict] = []
        self.arch = arch_figures(self.model, self.initial)
        self.tau, self.val_iter = 1.0, None

    def state_dict(self) -> dict:
        return dict(model=self.model.state_dict(), opt_weights=self.opt_w.state_dict(),
                    opt_arch=self.opt_a.state_dict(), schedule=self.schedule.state_dict(), history=self.history,
                    initial=self.initial)

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt_w.load_state_dict(state["opt_weights"])
        self.opt_a.load_state_dict(state["opt_arch"])
        self.schedule.load_state_dict(state["schedule"])
        self.history, self.initial = state["history"], state["initial"]
        self.arch = arch_figures(self.model, self.initial)

    def begin_epoch(self, epoch: int) -> Dict[str, float]:
        self.tau = temperature(self.config, epoch)
        self.val_iter = iter(self.val_loader) if self.config.strategy == "darts" else None
        self.model.train()
        return dict(tau=self.tau, lr=self.opt_w.param_groups[0]["lr"])

    def _logits(self, batch, epoch: int, step: int, phase: int = 0) -> Tensor:
        if self.config.strategy == "darts":
            return _scored(self.model(batch, None), batch)
        noise = gumbel_noise(self.model.noise_shapes(), self.config.seed, epoch, step, phase)
        return _scored(self.model(batch, self.tau, tuple(n.to(self.ctx.device) for n in noise)), batch)

    def loss(self, batch, y: Tensor, epoch: int, step: int):
        if self.config.strategy == "darts":  # DARTS first order: log_alpha on a search-validation batch
            try:
                vb, vy = next(self.val_iter)
            except StopIteration:
                self.val_iter = iter(self.val_loader)
                vb, vy = next(self.val_iter)
            self.opt_a.zero_grad(set_to_none=True)
            vb = vb.to(self.ctx.device)
            F.cross_entropy(self._logits(vb, epoch, step, 1), vy.to(self.ctx.device)).backward()
            self.opt_a.step()
        self.opt_w.zero_grad(set_to_none=True)
        self.opt_a.zero_grad(set_to_none=True)
        logits = self._logits(batch, epoch, step)
        return F.cross_entropy(logits, y), logits, {}

    def update(self, loss: Tensor, epoch: int) -> None:
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.weight_parameters(), self.config.grad_clip)
        self.opt_w.step()
        if self.config.strategy == "snas":  # single level: the same batch, the same backward
            self.opt_a.step()

    def _evaluate(self, weights) -> Tuple[float, float]:
        """(loss, accuracy) on search-validation of the supernet under ``weights`` (``None``: softmax(log_alpha));
        BatchNorm recalibrated first on ``bn_recalibration`` training batches of that network, restored after."""
        model, device = self.model, self.ctx.device

        def forward(batch):
            return _scored(model(batch, None) if weights is None else model.run(batch, weights), batch)

        if self.config.bn_recalibration <= 0:
            return evaluate(forward, model, self.val_loader, device)
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        momenta = {m: m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        try:
            recalibrate_bn(forward, model, self.train_loader, self.config.bn_recalibration, device)
            return evaluate(forward, model, self.val_loader, device)
        finally:
            model.load_state_dict(saved)
            for m, momentum in momenta.items():
                m.momentum = momentum

    def end_epoch(self, epoch: int) -> Dict[str, object]:
        self.schedule.step()
        val_loss, val_acc = self._evaluate(None)
        child = tuple(w.to(self.ctx.device) for w in self.space.encode(self.model.genotype()))
        child_acc = self._evaluate(child)[1]
        node, edge = self.model.alphas()
        self.history.append(dict(node_alpha=node.tolist(), edge_alpha=edge.tolist()))
        self.arch = arch_figures(self.model, self.initial)
        a = self.arch
        return dict(val_loss=val_loss, val_acc=val_acc, child_val_acc=child_acc,
                    **{f"{k}_{s}": a[k][s] for k in ("node", "edge") for s in ("entropy", "margin", "decided")},
                    changed_ops=a["changed"])

    def legend(self) -> str:
        return ("val_acc: the supernet under softmax(log_alpha); child_val_acc: the derived genotype with the "
                "supernet's weights (search-validation); entropy node/edge (uniform log 5 = 1.61 nats)")

    def describe(self, row: dict) -> str:
        return (f"train_acc {row['train_acc']:.3f} val_acc {row['val_acc']:.3f} child_val_acc "
                f"{row['child_val_acc']:.3f} tau {row['tau']:.3f} entropy {row['node_entropy']:.2f}/"
                f"{row['edge_entropy']:.2f} decided {row['node_decided']}+{row['edge_decided']} "
                f"changed {row['changed_ops']}")

    def write_genotype(self, end: EpochEnd) -> None:
        """``genotype.json``: the current derivation, ``softmax(log_alpha)``, the convergence figures per cell and
        the untrained supernet's derivation."""
        last = self.history[-1]
        initial = GraphGenotype(self.config.nodes, tuple(
            (tuple(NODE_OPS[k] for k in n), tuple(EDGE_OPS[k] for k in e))
            for n, e in zip(*self.initial)))
        end.run.write_json(GENOTYPE_FILE, dict(
            genotype=self.model.genotype().to_dict(), node_alpha=last["node_alpha"], edge_alpha=last["edge_alpha"],
            arch=self.arch, epoch=end.row["epoch"], dataset=self.info.to_dict(),
            initial_genotype=initial.to_dict()))


def search(config: GnnSearchConfig, data, resume: bool = False, progress: bool = True,
           callbacks: Sequence[Callback] = ()) -> GnnSearchResult:
    """Runs (or resumes) a graph search on ``data = (train, val, info)`` (``config.load_data()``). Warns
    (:class:`~snas_fast.search.snas.SearchWarning`) when the architecture did not move."""
    config.validate()
    ctx = distributed.context(config.device)
    task = GnnSearch(config, data, ctx)
    rows = fit(task, resume, progress, [task.write_genotype, *callbacks])
    last = rows[-1] if rows else {}
    a = task.arch
    warning = convergence.unmoved_warning(a["changed"], a["node"]["decided"] + a["edge"]["decided"],
                                          a["node"]["edges"] + a["edge"]["edges"])
    if warning is not None:
        warnings.warn(warning, SearchWarning, stacklevel=2)
    return GnnSearchResult(task.model.genotype(), last.get("val_acc", math.nan), last.get("child_val_acc", math.nan),
                           task.history, task.model, a, warning)


def describe_arch(arch: dict) -> str:
    """One line of the convergence figures of :func:`arch_figures`."""
    parts = [convergence.describe({"node ops": arch["node"], "edge ops": arch["edge"]}, len(NODE_OPS))]
    for c, cell in enumerate(arch["cells"]):
        parts.append(f"cell {c}: entropy {cell['node']['entropy']:.2f}/{cell['edge']['entropy']:.2f}, margin "
                     f"{cell['node']['margin']:.3f}/{cell['edge']['margin']:.3f} (node/edge)")
    parts.append(f"{arch['changed']} mixed operations changed since the start")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------------------------
# Retraining and baselines
# ------------------------------------------------------------------------------------------------------------
@dataclass
class GnnTrainConfig(GraphRunConfig):
    """A network trained from scratch: a searched genotype (``--genotype``) or a PyG baseline (``--baseline``), with
    one recipe: Adam with a cosine rate, gradient clipping."""

    genotype: Optional[str] = setting(None, "a graph search's run directory, or its genotype.json", kind=str)
    baseline: str = setting("none", "train a PyG baseline instead of a genotype: gcn (GCNConv), gin (GINConv) or "
                                    "gated (ResGatedGraphConv, edge-featured)", choices=("none",) + BASELINES)
    baseline_layers: int = setting(4, "baseline: message-passing layers")
    param_budget: Optional[str] = setting(None, "baseline: its width is chosen to come closest to this many "
                                                "parameters (an integer, or a run directory whose summary.json gives "
                                                "them); default: --channels", kind=str)
    bn_recalibration: int = setting(20, "training batches that re-estimate BatchNorm's statistics (a cumulative "
                                        "average) before each test evaluation (0: the running averages as they are)")
    out: str = setting("runs/gnn-train", "run directory")
    epochs: int = setting(30, "training epochs")
    lr: float = setting(0.003, "Adam learning rate (cosine schedule)")
    weight_decay: float = setting(0.0, "weight decay")

    def validate(self) -> None:
        super().validate()
        self.check_ints(["baseline_layers"], 1)
        self.check_ints(["bn_recalibration"], 0)
        if self.baseline == "none" and not self.genotype:
            raise GnnError("genotype: required (a graph search's run directory or genotype.json), or give "
                           "--baseline gcn|gin|gated")
        if self.baseline != "none" and self.genotype:
            raise GnnError(f"genotype: a baseline ({self.baseline}) trains no genotype; drop --genotype")


def resolve_graph_genotype(spec: str) -> Tuple[GraphGenotype, str]:
    """``(genotype, source)`` of a graph search's run directory or a genotype JSON file; a DARTS genotype, an
    unreadable file or anything else raises :class:`GnnError` with one line."""
    if not isinstance(spec, str) or not spec:
        raise GnnError(f"genotype: expected a graph search's run directory or a genotype JSON file, got {spec!r}")
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / GENOTYPE_FILE
        if not path.is_file():
            raise GnnError(f"genotype: {spec} holds no {GENOTYPE_FILE} (expected a graph search's run directory)")
    elif not path.is_file():
        raise GnnError(f"genotype: {spec} is neither a file nor a run directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GnnError(f"genotype: cannot read a JSON genotype from {path} ({' '.join(str(error).split())})") from None
    if isinstance(data, dict) and isinstance(data.get("genotype"), dict):
        data = data["genotype"]
    try:
        return GraphGenotype.from_dict(data), str(path)
    except (TypeError, ValueError) as error:
        raise GnnError(f"genotype: {path} is not a gnn genotype ({' '.join(str(error).split())})") from None


class GraphBaseline(nn.Module):
    """A PyG baseline: node and edge stems, ``layers`` x (conv -> BatchNorm -> ReLU, residual), the readout of
    :class:`~snas_fast.spaces.gnn.supernet.GraphNetwork` (mean pooling for graphs, the same classifier MLP).
    ``kind``: ``gcn`` (GCNConv, no edge features), ``gin`` (GINConv with a 2-layer MLP, no edge features) or
    ``gated`` (ResGatedGraphConv with edge features, Bresson & Laurent's gated GCN)."""

    def __init__(self, kind: str, in_dim: int, edge_dim: int, hidden: int, num_classes: int, layers: int,
                 task: str):
        super().__init__()
        from torch_geometric.nn import GCNConv, GINConv, ResGatedGraphConv

        if kind not in BASELINES:
            raise ValueError(f"kind: expected one of {', '.join(BASELINES)}, got {kind!r}")
        self.kind, self.task = kind, task
        self.node_stem = nn.Linear(in_dim, hidden)
        self.edge_stem = nn.Linear(edge_dim, hidden) if kind == "gated" else None
        make = dict(gcn=lambda: GCNConv(hidden, hidden),
                    gin=lambda: GINConv(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))),
                    gated=lambda: ResGatedGraphConv(hidden, hidden, edge_dim=hidden))[kind]
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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def baseline_for_budget(kind: str, info, budget: int, layers: int) -> Tuple[GraphBaseline, int]:
    """The baseline whose width (4 .. 1024) gives the parameter count closest to ``budget``; ``(model, width)``."""
    best = None
    for width in range(4, 1025, 2):
        n = count_parameters(GraphBaseline(kind, info.in_dim, info.edge_dim, width, info.num_classes, layers,
                                           info.task))
        if best is None or abs(n - budget) < best[0]:
            best = (abs(n - budget), width)
        if n > budget:
            break
    width = best[1]
    return GraphBaseline(kind, info.in_dim, info.edge_dim, width, info.num_classes, layers, info.task), width


def _budget(spec: str) -> int:
    if spec.isdigit():
        return int(spec)
    path = Path(spec) / "summary.json" if Path(spec).is_dir() else Path(spec)
    try:
        return int(json.loads(path.read_text())["params"])
    except (OSError, ValueError, KeyError, TypeError):
        raise GnnError(f"param_budget: expected an integer or a run directory with a summary.json, got {spec!r}") \
            from None


class GraphRetraining(Task):
    """A graph network trained from scratch (Adam, cosine rate), evaluated on the test part every epoch."""

    def __init__(self, config: GnnTrainConfig, data, model: nn.Module, ctx, description: dict):
        train_set, test_set, info = data
        self.config, self.ctx, self.description = config, ctx, description
        self.model = model.to(ctx.device)
        self.params = count_parameters(self.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), config.lr, weight_decay=config.weight_decay)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, float(config.epochs),
                                                                   eta_min=config.lr_min)
        self.train_loader = train_loader(train_set, config.batch_size, config.seed, ctx, config.num_workers,
                                         collate_fn=collate)
        self.test_loader = eval_loader(test_set, config.batch_size, ctx, config.num_workers, collate_fn=collate)

    def state_dict(self) -> dict:
        return dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                    schedule=self.schedule.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])

    def begin_epoch(self, epoch: int) -> Dict[str, float]:
        self.model.train()
        return dict(lr=self.optimizer.param_groups[0]["lr"])

    def loss(self, batch, y: Tensor, epoch: int, step: int):
        self.optimizer.zero_grad(set_to_none=True)
        logits = _scored(self.model(batch), batch)
        return F.cross_entropy(logits, y), logits, {}

    def end_epoch(self, epoch: int) -> Dict[str, object]:
        """The test figures, BatchNorm's statistics first re-estimated on ``bn_recalibration`` training batches:
        on sbm-cluster the running averages lagged the weights so far that a GCN scored 0.36 in eval mode where
        batch statistics gave 0.56 (0.55 after recalibration). The re-estimated statistics stay (training goes on
        from them; a resumed run does the same)."""
        self.schedule.step()
        model, device = self.model, self.ctx.device
        if self.config.bn_recalibration > 0:
            momenta = {m: m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
            recalibrate_bn(model, model, self.train_loader, self.config.bn_recalibration, device)
            for m, momentum in momenta.items():
                m.momentum = momentum
        test_loss, test_acc = evaluate(lambda b: _scored(model(b), b), model, self.test_loader, device)
        return dict(test_loss=test_loss, test_acc=test_acc)

    def describe(self, row: dict) -> str:
        return f"train_acc {row['train_acc']:.3f} test_acc {row['test_acc']:.3f} lr {row['lr']:.5f}"


@dataclass
class GnnTrainResult:
    test_acc: float
    test_loss: float
    params: int
    model_name: str
    history: List[dict] = field(default_factory=list)
    model: Optional[nn.Module] = None


def build_model(config: GnnTrainConfig, info, resume: bool) -> Tuple[nn.Module, dict]:
    """The network to train and its description (``genotype.json``'s content): the run directory's (resume), the
    genotype's, or a baseline at the parameter budget."""
    saved = os.path.join(config.out, GENOTYPE_FILE)
    if resume and os.path.exists(saved):
        with open(saved) as f:
            description = json.load(f)
    elif config.baseline != "none":
        budget = _budget(config.param_budget) if config.param_budget else None
        description = dict(baseline=config.baseline, budget=budget)
    else:
        genotype, source = resolve_graph_genotype(config.genotype)
        description = dict(genotype=genotype.to_dict(), source=source)
    seed_everything(config.seed)
    if "baseline" in description:
        kind, budget = description["baseline"], description["budget"]
        if budget:
            model, width = baseline_for_budget(kind, info, budget, config.baseline_layers)
        else:
            width = config.channels
            model = GraphBaseline(kind, info.in_dim, info.edge_dim, width, info.num_classes, config.baseline_layers,
                                  info.task)
        description["width"] = width
        return model, description
    genotype = GraphGenotype.from_dict(description["genotype"])
    return GraphNetwork(genotype, info.in_dim, info.edge_dim, config.channels, info.num_classes, info.task), description


def train(config: GnnTrainConfig, data, resume: bool = False, progress: bool = True,
          callbacks: Sequence[Callback] = ()) -> GnnTrainResult:
    """Trains (or resumes) a genotype's network or a baseline on ``data = (train, test, info)``
    (``config.load_data("train_test")``); writes ``genotype.json`` (what was trained) and ``summary.json``."""
    config.validate()
    ctx = distributed.context(config.device)
    model, description = build_model(config, data[2], resume)
    task = GraphRetraining(config, data, model, ctx, description)
    rows = fit(task, resume, progress, callbacks, on_start=lambda run: run.write_json(GENOTYPE_FILE, description))
    last = rows[-1] if rows else {}
    name = description.get("baseline") or "derived"
    result = GnnTrainResult(last.get("test_acc", math.nan), last.get("test_loss", math.nan), task.params, name, rows,
                            task.model)
    RunDir(config.out, ctx).write_json("summary.json", dict(
        model=name, test_acc=result.test_acc, test_loss=result.test_loss, params=task.params, epochs=len(rows),
        dataset=config.dataset, width=description.get("width", config.channels),
        source=description.get("source")))
    return result


def compare_table(run_dirs: Sequence[str]) -> str:
    """A Markdown table of retraining runs (their ``summary.json``): model, parameters, epochs, test accuracy."""
    lines = ["| model | parameters | width | epochs | test accuracy |", "|---|---:|---:|---:|---:|"]
    for d in run_dirs:
        with open(os.path.join(d, "summary.json")) as f:
            s = json.load(f)
        lines.append(f"| {s['model']} | {s['params']:,} | {s['width']} | {s['epochs']} | {s['test_acc']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m snas_fast.search.gnn table RUN_DIR ...
    if len(sys.argv) < 3 or sys.argv[1] != "table":
        sys.exit("usage: python -m snas_fast.search.gnn table RUN_DIR [RUN_DIR ...]")
    print(compare_table(sys.argv[2:]))
