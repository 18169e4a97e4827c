"""The SNAS search loop: single-level (weights and log_alpha from one backward) or DARTS's first-order bi-level,
with the resource penalty, the temperature schedule, warm-up, drop-path, per-epoch evaluation of the supernet
and of its derived child, and a run directory that survives interruption.

Run directory (``config.out``):
    config.json       the full configuration (``--resume`` reads it back)
    metrics.jsonl     one JSON line per epoch: losses and accuracies (the supernet's are those of one network
                      sampled at the epoch's tau, the child's of the derived cells; both on search-validation, with
                      BatchNorm recalibrated), tau, and how far the architecture moved (:func:`arch_convergence`)
    genotype.json     the current derivation, plus ``normal_alpha`` / ``reduce_alpha`` (softmax(log_alpha), 14x8)
                      and ``initial_genotype`` (the untrained supernet's derivation)
    checkpoint.pt     model, optimizers, schedule; written atomically after every epoch
    alphas.png, cell_normal.png, cell_reduce.png, curves.png

Randomness is a function of (seed, epoch, step, rank) alone (:func:`seed_epoch`, :func:`gumbel_noise_for_step`,
the DistributedSampler's ``seed + epoch``), so a resumed run draws exactly what an uninterrupted one draws.
In a process group (torchrun) the search is data-parallel; see :func:`search` and :mod:`snas_fast.distributed`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import costs as cost_model
from . import convergence, distributed, schedules
from .genotypes import Genotype, derive
from .search_space import PRIMITIVES
from .supernet import Supernet


class SearchError(RuntimeError):
    """A search that cannot go on (non-finite loss, unusable configuration); its message is one line."""


class SearchWarning(UserWarning):
    """A search that ran but did not search: its derived cells are those of the untrained supernet, or few of its
    edges left uniform (:func:`snas_fast.convergence.unmoved_warning`)."""


#: Named sets of settings. A field a config leaves at None takes its recipe's value (explicit values win).
#: - ``short`` (default): a search that moves its architecture within the steps a short run has: tau annealed over
#:   the run itself (``tau_epochs`` None), Adam for ``log_alpha`` as in SNAS's multi-GPU recipe (betas (0.5, 0.999),
#:   weight decay 1e-3) at a rate measured on the digits (README, "The search"), and BatchNorm recalibrated before
#:   each evaluation of the supernet and of the child. Sized for the embedded digits.
#: - ``snas-cifar``: SNAS's official single-GPU CIFAR-10 search exactly (snas.md): 150 epochs, 8 cells, C = 16,
#:   SGD 3e-4 for ``log_alpha``, tau linear 1 -> 0.03 over 150 epochs, drop-path 0.3, no recalibration.
#: A recipe is applied once, when a config is built (``dataclasses.replace`` of ``recipe`` alone changes nothing
#: else); ``tau_epochs`` None under ``snas-cifar`` is its 150 (give the run's epochs to anneal over the run).
RECIPES: Dict[str, Dict[str, object]] = {
    "short": dict(epochs=20, layers=5, channels=8, arch_optimizer="adam", arch_lr=0.1, arch_weight_decay=1e-3,
                  tau_epochs=None, drop_path=0.0, bn_recalibration=20),
    "snas-cifar": dict(epochs=150, layers=8, channels=16, arch_optimizer="sgd", arch_lr=3e-4, arch_weight_decay=0.0,
                       tau_epochs=150, drop_path=0.3, bn_recalibration=0),
    "custom": {},  # every setting given (a config.json written before recipes existed reads back as this)
}


@dataclass
class SearchConfig:
    """Every setting of a search. Fields left at None take the value of ``recipe`` (:data:`RECIPES`); the others
    follow the official SNAS recipe (snas.md). ``tau_epochs`` None: the linear schedule spans the run's epochs."""

    recipe: str = "short"  # short (moves the architecture within a short run) | snas-cifar (the paper's settings)
    dataset: str = "digits"
    data_dir: Optional[str] = None
    data_limit: Optional[int] = None
    out: str = "runs/search"
    seed: int = 0
    epochs: Optional[int] = None
    batch_size: int = 64
    layers: Optional[int] = None
    channels: Optional[int] = None
    mixed: str = "fused"
    pool_bn: bool = False
    sampling: str = "step"  # one Z per step per cell type | per cell | per example | hard (= step, hard)
    hard: bool = False  # one-hot samples: only the sampled candidate of each edge runs
    estimator: str = "st"  # log_alpha gradient of hard samples: st (GDAS straight-through) | dsnas (score function)
    bilevel: bool = False  # DARTS first order: log_alpha from held-out batches, alternating
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_optimizer: Optional[str] = None  # sgd (single-GPU recipe) | adam (multi-GPU recipe)
    arch_lr: Optional[float] = None
    arch_weight_decay: Optional[float] = None
    arch_betas: Tuple[float, float] = (0.5, 0.999)
    warmup_epochs: int = 0  # epochs with log_alpha frozen
    tau_schedule: str = "linear"  # linear | exponential
    tau0: float = 1.0
    tau_min: float = 0.03
    tau_epochs: Optional[int] = None  # length of the linear schedule; None: the run's epochs
    tau_rate: float = 0.95  # exponential schedule: tau0 * rate^epoch, floored at tau_min
    resource_lambda: float = 1.5e-3
    penalty: str = "log"  # log | linear
    drop_path: Optional[float] = None
    bn_recalibration: Optional[int] = None  # training batches that recalibrate BatchNorm before each evaluation
    num_workers: int = 0
    device: str = "cpu"
    # many processes (torchrun; see snas_fast.distributed)
    gumbel_sample: str = "shared"  # shared: every rank draws the same Z | per-rank: each rank its own
    sync_bn: bool = False  # BatchNorm statistics of the global batch (else of each process's batch)
    dist_timeout: float = 1800.0  # seconds a collective may wait for a silent peer before the job fails

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise SearchError(f"recipe: expected one of {', '.join(RECIPES)}, got {self.recipe!r}")
        for name, value in RECIPES[self.recipe].items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def validate(self) -> None:
        unset = [name for name in RECIPES["short"] if name != "tau_epochs" and getattr(self, name) is None]
        if unset:
            raise SearchError(f"{unset[0]}: expected a value (recipe {self.recipe!r} gives none), got None")
        choices = {"mixed": ("fused", "fused_sum", "eager"), "sampling": ("step", "cell", "example", "hard"),
                   "estimator": ("st", "dsnas"),
                   "arch_optimizer": ("sgd", "adam"), "tau_schedule": ("linear", "exponential"),
                   "penalty": ("log", "linear"), "dataset": ("digits", "cifar10"),
                   "gumbel_sample": ("shared", "per-rank")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise SearchError(f"{name}: expected one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "layers", "channels", "tau_epochs"):
            value = getattr(self, name)
            if name == "tau_epochs" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SearchError(f"{name}: expected an integer >= 1, got {value!r}")
        for name in ("bn_recalibration", "warmup_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SearchError(f"{name}: expected an integer >= 0, got {value!r}")
        for name in ("arch_lr", "arch_weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise SearchError(f"{name}: expected a number >= 0, got {value!r}")
        if not 0.0 <= self.drop_path < 1.0:
            raise SearchError(f"drop_path: expected a probability in [0, 1), got {self.drop_path}")
        if not (self.tau0 > 0 and self.tau_min > 0):
            raise SearchError(f"tau0, tau_min: expected temperatures > 0, got {self.tau0}, {self.tau_min}")
        if not self.dist_timeout > 0:
            raise SearchError(f"dist_timeout: expected seconds > 0, got {self.dist_timeout}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SearchConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise SearchError(f"config: unknown settings {unknown}")
        d = dict(d)
        if "arch_betas" in d:
            d["arch_betas"] = tuple(d["arch_betas"])
        return cls(**d)


# ------------------------------------------------------------------------------------------------------------
# Pieces of the loop
# ------------------------------------------------------------------------------------------------------------
def temperature(config: SearchConfig, epoch: int) -> float:
    if config.tau_schedule == "exponential":
        return schedules.exponential_tau(epoch, config.tau0, config.tau_min, config.tau_rate)
    length = config.tau_epochs if config.tau_epochs is not None else config.epochs
    return schedules.linear_tau(epoch, config.tau0, config.tau_min, length)


def cost_tables(model: Supernet, image_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per cell type, the cost tables of its cells stacked, ``[n, 14, 8, 3]`` (params, FLOPs, MAC of every
    candidate of every edge, from the shapes alone: :func:`snas_fast.costs.network_costs`). A supernet of fewer
    than 3 cells has no reduction cell; that type then costs nothing (zeros ``[14, 8, 3]``)."""
    if model.layers >= 3:
        return cost_model.network_costs(model.C, model.layers, image_size, image_size, pool_bn=model.pool_bn)
    normal = cost_model.cell_costs(model.C, image_size, image_size, False, pool_bn=model.pool_bn)
    return normal.expand(model.layers, -1, -1, -1), torch.zeros_like(normal)


def make_optimizers(model: Supernet, config: SearchConfig):
    """(SGD for the weights, SGD or Adam for log_alpha, the cosine schedule of the weights)."""
    weights = torch.optim.SGD(model.weight_parameters(), config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(weights, float(config.epochs), eta_min=config.lr_min)
    if config.arch_optimizer == "adam":
        arch = torch.optim.Adam(model.arch_parameters(), config.arch_lr, betas=config.arch_betas,
                                weight_decay=config.arch_weight_decay)
    else:
        arch = torch.optim.SGD(model.arch_parameters(), config.arch_lr, weight_decay=config.arch_weight_decay)
    return weights, arch, schedule


def save_atomic(obj, path: str) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    tmp = f"{path}.tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str) -> Tuple[Optional[dict], Optional[str]]:
    """``(state, None)`` of a checkpoint written by :func:`save_atomic`, or ``(None, problem)`` for a file that is not
    one. A checkpoint is data: it is read with ``weights_only=True`` (tensors, numbers, strings and plain
    containers), so a crafted file cannot run code. The problem is returned, not raised, so that rank 0 can hand it
    to the other ranks of a process group and every rank stops with the same one-line error."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch each raise their own kinds for a foreign or damaged file
        return None, f"{path}: not a snas-fast checkpoint ({' '.join(str(error).split())[:200]})"
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        return None, f"{path}: not a snas-fast checkpoint (expected a dict with model and epoch)"
    return state, None


def write_json_atomic(data, path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def _forward(model: Supernet, x: torch.Tensor, tau: Optional[float], noise=None, hard: bool = False) -> torch.Tensor:
    """Logits of the derived child (``tau`` None) or of the supernet under a sample at ``tau`` (one-hot if ``hard``,
    as a hard search trains): drawn afresh (``noise`` None) or from ``noise``, a fixed ``(normal, reduce)`` pair in
    the shapes of :func:`gumbel_noise_for_step` with batch 1 (one example's rows are repeated over the batch)."""
    if tau is None:
        return model.forward_child(x)
    if noise is not None and model.sampling == "example":
        noise = [g.expand((x.shape[0],) + tuple(g.shape[1:])) for g in noise]
    return model(x, tau, hard=hard, noise=noise)


@torch.no_grad()
def evaluate(model: Supernet, loader, tau: float, child: bool, device, noise=None,
             hard: bool = False) -> Tuple[float, float]:
    """(mean loss, accuracy) of the supernet (a sample at ``tau``; one sampled network throughout if ``noise`` is
    given, see :func:`_forward`) or of its derived child on ``loader``.

    With a process group, each rank evaluates its share of the data (``loader``'s sampler) and the sums are
    added over the ranks: every rank returns the figures of the whole set."""
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = _forward(model, x, None if child else tau, noise, hard)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        total += y.numel()
    loss_sum, correct, total = distributed.all_reduce_sum([loss_sum, correct, total])
    return loss_sum / max(total, 1), correct / max(total, 1)


@torch.no_grad()
def recalibrate_bn(model: Supernet, loader, batches: int, device, tau: Optional[float] = None, noise=None,
                   hard: bool = False) -> None:
    """Re-estimates every BatchNorm's running statistics (reset, then a cumulative average) on ``batches`` training
    batches of one network: the derived child (``tau`` None), or the supernet under a sample at ``tau`` (the
    sampled network ``noise``, see :func:`_forward`)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    model.train()
    for i, (x, _) in enumerate(loader):
        if i >= batches:
            break
        _forward(model, x.to(device), tau, noise, hard)


def load_search_data(config: SearchConfig):
    """``(train, val, info)`` of the configured dataset, cut to ``data_limit`` examples per split if set."""
    from torch.utils.data import TensorDataset

    from .data import load_dataset

    if config.dataset == "cifar10" and not config.data_dir:
        raise SearchError("--data-dir: cifar10 needs the folder holding cifar-10-batches-py (nothing is downloaded)")
    kw = {} if config.dataset == "digits" else {"data_dir": config.data_dir}
    train, val, info = load_dataset(config.dataset, seed=config.seed, **kw)
    if config.data_limit:
        train, val = (TensorDataset(*(t[: config.data_limit] for t in ds.tensors)) for ds in (train, val))
    return train, val, info


# ------------------------------------------------------------------------------------------------------------
# The search
# ------------------------------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    genotype: object
    val_acc: float
    child_val_acc: float
    history: List[dict] = field(default_factory=list)
    model: Optional[Supernet] = None  # the searched supernet (on every rank, the same weights and log_alpha)
    arch: dict = field(default_factory=dict)  # arch_convergence() at the end: entropy, margins, edges changed
    warning: Optional[str] = None  # convergence.unmoved_warning(), also issued as a SearchWarning


def sampling_mode(config: SearchConfig) -> str:
    """The supernet's sampling granularity: ``--sampling hard`` is one hard sample per step."""
    return "step" if config.sampling == "hard" else config.sampling


def hard_mode(config: SearchConfig) -> bool:
    """Whether only the sampled candidates run (``--hard true`` or ``--sampling hard``)."""
    return config.hard or config.sampling == "hard"


class SearchStep(nn.Module):
    """The supernet's forward and SNAS's resource penalty in one module, what DistributedDataParallel wraps:
    ``forward(x, tau, noise) -> (logits [B, classes], penalty [])``. The penalty is an output of the wrapped
    forward, so DDP sees every path by which ``log_alpha`` gets a gradient. The cost tables are plain attributes
    (constants, not buffers for DDP to broadcast)."""

    def __init__(self, model: Supernet, costs_normal: torch.Tensor, costs_reduce: torch.Tensor, config: SearchConfig):
        super().__init__()
        self.model = model
        self.costs = (costs_normal, costs_reduce)
        self.hard, self.sampling, self.penalty_form = hard_mode(config), sampling_mode(config), config.penalty

    def forward(self, x: torch.Tensor, tau: float, noise=None):
        logits = self.model(x, tau, hard=self.hard, noise=noise)
        z_normal, z_reduce = self.model.last_sample
        if self.sampling == "example":  # the expected cost of the batch: the mean sample
            z_normal, z_reduce = z_normal.mean(0), z_reduce.mean(0)
        penalty = cost_model.resource_penalty(z_normal, z_reduce, *self.costs, form=self.penalty_form)
        return logits, penalty


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seeds torch's, Python's and numpy's global generators from (seed, epoch, rank): what an epoch draws
    (drop-path masks, loader seeds) depends on those alone, so a resumed run draws what an uninterrupted one
    does, and ranks draw different masks."""
    s = distributed.seed_for(seed, epoch, rank)
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % 2 ** 32)


def search(config: SearchConfig, data, resume: bool = False, progress: bool = True) -> SearchResult:
    """Runs (or resumes) a search. ``data`` is ``(train_set, val_set, info)`` from :mod:`snas_fast.data`.

    In a process group (``torchrun``, :func:`snas_fast.distributed.setup`) the search is data-parallel: each rank
    trains on its shard of every batch (``config.batch_size`` per rank), gradients of the weights and of
    ``log_alpha`` are averaged, the Gumbel sample follows ``config.gumbel_sample``, BatchNorm statistics are per
    process unless ``config.sync_bn``, and only rank 0 writes the run directory."""
    config.validate()
    train_set, val_set, info = data
    ctx = distributed.context(config.device)
    device = ctx.device
    ckpt_path = os.path.join(config.out, "checkpoint.pt")
    metrics_path = os.path.join(config.out, "metrics.jsonl")
    if ctx.is_main:
        os.makedirs(config.out, exist_ok=True)

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    model = Supernet(config.channels, info.num_classes, config.layers, in_channels=info.in_channels,
                     mixed=config.mixed, pool_bn=config.pool_bn, sampling=sampling_mode(config),
                     estimator=config.estimator).to(device)
    if config.sync_bn:
        model = distributed.convert_sync_batchnorm(model, ctx)
    costs_normal, costs_reduce = (t.to(device) for t in cost_tables(model, info.image_size))
    train_loader = distributed.train_loader(train_set, config.batch_size, config.seed, ctx, config.num_workers)
    val_loader = distributed.eval_loader(val_set, config.batch_size, ctx, config.num_workers)
    opt_w, opt_a, schedule = make_optimizers(model, config)

    start_epoch, history = 0, []
    # the derivation of the untrained supernet, what every epoch's cells are compared with
    initial_choice = [la.detach().argmax(-1).tolist() for la in model.arch_parameters()]
    state = None
    if resume:  # rank 0 reads the checkpoint and hands it to the others (no shared file system needed)
        found = ctx.is_main and os.path.exists(ckpt_path)
        state, problem = distributed.broadcast_object(read_checkpoint(ckpt_path) if found else (None, None))
        if problem:
            raise SearchError(f"--resume {config.out}: {problem}")
    split_sizes = [len(train_set), len(val_set)]
    if state is not None and state.get("split_sizes") != split_sizes and (config.dataset == "digits"
                                                                         or "split_sizes" in state):
        before = state.get("split_sizes", "unrecorded (made before the digits had a test part)")
        raise SearchError(f"--resume {config.out}: the checkpoint was made on other data splits (search-train and "
                          f"search-validation sizes {before}, now {split_sizes}): start the search again")
    if state is not None:
        model.load_state_dict(state["model"])
        opt_w.load_state_dict(state["opt_weights"])
        opt_a.load_state_dict(state["opt_arch"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, history = state["epoch"] + 1, state["history"]
        initial_choice = state.get("initial_choice", initial_choice)  # the same seeded init either way
        if ctx.is_main:
            _truncate_metrics(metrics_path, start_epoch)
    elif ctx.is_main:
        write_json_atomic(config.to_dict(), os.path.join(config.out, "config.json"))
        open(metrics_path, "w").close()
    # DDP broadcasts rank 0's parameters and buffers and averages every gradient, log_alpha's included. A soft
    # sample reaches every parameter; a hard one may leave candidates unrun (find_unused_parameters).
    net = distributed.wrap_ddp(SearchStep(model, costs_normal, costs_reduce, config), ctx,
                               find_unused_parameters=hard_mode(config))

    rows: List[dict] = []
    for epoch in range(start_epoch, config.epochs):
        seed_epoch(config.seed, epoch, ctx.rank)
        tau = temperature(config, epoch)
        model.drop_path_prob = config.drop_path * epoch / max(config.epochs, 1)
        update_arch = epoch >= config.warmup_epochs
        # the data order of an epoch depends on (seed, epoch) alone, so a resumed run sees the same batches
        train_loader.sampler.set_epoch(epoch)
        stats = _train_epoch(net, model, config, ctx, train_loader, val_loader, opt_w, opt_a, tau, update_arch,
                             epoch, progress and ctx.is_main)
        schedule.step()
        distributed.broadcast_buffers(model)  # every rank evaluates (and rank 0 saves) rank 0's BN statistics
        # the supernet's figures are those of one network sampled at tau (the same on every rank), its BatchNorm
        # recalibrated as the child's is: the network SNAS's claim compares the child with
        sampled = evaluation_noise(model, config, ctx, epoch)
        val_loss, val_acc = evaluate_recalibrated(model, config, train_loader, val_loader, tau, False, device, sampled)
        child_acc = evaluate_recalibrated(model, config, train_loader, val_loader, tau, True, device)[1]
        normal_alpha, reduce_alpha = (a.tolist() for a in model.alphas())
        genotype = model.genotype("edge_all")
        arch = arch_convergence(model, initial_choice)
        row = dict(epoch=epoch, tau=tau, lr=opt_w.param_groups[0]["lr"], **stats, val_loss=val_loss,
                   val_acc=val_acc, child_val_acc=child_acc, **_flatten(arch))
        rows.append(row)
        history.append(dict(normal_alpha=normal_alpha, reduce_alpha=reduce_alpha))
        if ctx.is_main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            write_json_atomic(dict(genotype=genotype.to_dict(), normal_alpha=normal_alpha,
                                   reduce_alpha=reduce_alpha, epoch=epoch,
                                   initial_genotype=_genotype_of_choice(initial_choice).to_dict()),
                              os.path.join(config.out, "genotype.json"))
            save_atomic(dict(model=model.state_dict(), opt_weights=opt_w.state_dict(), opt_arch=opt_a.state_dict(),
                             schedule=schedule.state_dict(), epoch=epoch, history=history,
                             initial_choice=initial_choice, split_sizes=split_sizes, config=config.to_dict()),
                        ckpt_path)
            _write_plots(config.out, history, genotype, metrics_path, arch)
            if progress:
                print(f"epoch {epoch + 1}/{config.epochs}: train_acc {stats['train_acc']:.3f} val_acc {val_acc:.3f} "
                      f"child_val_acc {child_acc:.3f} tau {tau:.3f} entropy {arch['normal']['entropy']:.2f}/"
                      f"{arch['reduce']['entropy']:.2f} decided {arch['normal']['decided']}+"
                      f"{arch['reduce']['decided']} changed {arch['changed_edges']}", flush=True)

    if ctx.is_main:
        rows = _read_metrics(metrics_path)
    last = rows[-1] if rows else {}
    arch = arch_convergence(model, initial_choice)
    warning = convergence.unmoved_warning(arch["changed_edges"], arch["normal"]["decided"] + arch["reduce"]["decided"],
                                          arch["normal"]["edges"] + arch["reduce"]["edges"])
    if warning is not None:
        warnings.warn(warning, SearchWarning, stacklevel=2)
    return SearchResult(model.genotype("edge_all"), last.get("val_acc", math.nan), last.get("child_val_acc", math.nan),
                        history, model, arch, warning)


def arch_convergence(model: Supernet, initial_choice) -> dict:
    """``{"normal": stats, "reduce": stats, "changed_edges": n}``: per cell type
    :func:`snas_fast.convergence.arch_stats` of ``softmax(log_alpha)`` (plus ``"edges"``), and the number of edges,
    over both types, whose derived op differs from ``initial_choice`` (the untrained supernet's argmax columns)."""
    out, changed = {}, 0
    for kind, probs, initial in zip(("normal", "reduce"), model.alphas(), initial_choice):
        out[kind] = dict(convergence.arch_stats(probs), edges=probs.shape[0])
        changed += convergence.changed_edges(probs, initial)
    out["changed_edges"] = changed
    return out


def _genotype_of_choice(choice) -> Genotype:
    """The edge_all genotype whose edges run the columns ``choice = (normal [14], reduce [14])``."""
    normal, reduce = (F.one_hot(torch.tensor(c), len(PRIMITIVES)).double() for c in choice)
    return derive(normal, reduce, rule="edge_all")


def _flatten(arch: dict) -> dict:
    """:func:`arch_convergence` as flat metric columns: ``normal_entropy``, ``reduce_margin``, ...,
    ``changed_edges``."""
    flat = {f"{kind}_{k}": v for kind in ("normal", "reduce") for k, v in arch[kind].items() if k != "edges"}
    flat["changed_edges"] = arch["changed_edges"]
    return flat


_EVAL_PHASE = 2  # the noise stream of the network sampled for an epoch's evaluation (0, 1: training steps)


def _noise_shapes(model: Supernet, config: SearchConfig, batch: int) -> List[Tuple[int, ...]]:
    """The shapes ``[normal, reduce]`` of the Gumbel noise :meth:`Supernet.sample` takes for ``config.sampling``."""
    shapes = []
    for n, la in zip(model.cell_counts(), model.arch_parameters()):
        lead = {"step": (), "cell": (max(n, 1),), "example": (batch,)}[sampling_mode(config)]
        shapes.append(lead + tuple(la.shape))
    return shapes


def gumbel_noise_for_step(model: Supernet, config: SearchConfig, ctx, epoch: int, step: int, batch: int,
                          phase: int = 0) -> List[torch.Tensor]:
    """The Gumbel noise ``[normal, reduce]`` of one step, in the shapes :meth:`Supernet.sample` takes for
    ``config.sampling``, drawn by :func:`snas_fast.distributed.gumbel_noise` under ``config.gumbel_sample``."""
    return distributed.gumbel_noise(_noise_shapes(model, config, batch), config.seed, epoch, step, ctx,
                                    config.gumbel_sample, phase=phase, per_example=config.sampling == "example",
                                    device=ctx.device)


def evaluation_noise(model: Supernet, config: SearchConfig, ctx, epoch: int) -> List[torch.Tensor]:
    """The Gumbel noise of the one network an epoch's evaluation samples, the same on every rank: the shapes of
    :func:`gumbel_noise_for_step` with batch 1 (see :func:`_forward`)."""
    return distributed.gumbel_noise(_noise_shapes(model, config, 1), config.seed, epoch, 0, ctx, "shared",
                                    phase=_EVAL_PHASE, device=ctx.device)


def _train_epoch(net, model, config, ctx, train_loader, val_loader, opt_w, opt_a, tau, update_arch, epoch,
                 progress) -> Dict[str, float]:
    from tqdm import tqdm

    device = ctx.device
    net.train()
    seen, correct, loss_sum, penalty_sum = 0, 0, 0.0, 0.0
    start = time.perf_counter()
    val_iter = iter(val_loader) if config.bilevel else None
    bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=not progress,
               dynamic_ncols=True)
    for step, (x, y) in enumerate(bar):
        x, y = x.to(device), y.to(device)
        if config.bilevel and update_arch:  # DARTS first order: log_alpha on a held-out batch, weights frozen
            try:
                xv, yv = next(val_iter)
            except StopIteration:
                val_iter = iter(val_loader)
                xv, yv = next(val_iter)
            opt_a.zero_grad(set_to_none=True)
            noise = gumbel_noise_for_step(model, config, ctx, epoch, step, xv.shape[0], phase=1)
            loss_v, _, _ = _loss(net, config, xv.to(device), yv.to(device), tau, noise)
            loss_v.backward()
            opt_a.step()
        opt_w.zero_grad(set_to_none=True)
        opt_a.zero_grad(set_to_none=True)
        noise = gumbel_noise_for_step(model, config, ctx, epoch, step, x.shape[0])
        loss, logits, penalty = _loss(net, config, x, y, tau, noise)
        if not torch.isfinite(loss):
            raise SearchError(f"the loss became {loss.item()} at epoch {epoch + 1}: the run stops; the checkpoint "
                              f"of the last finished epoch is intact (lower the learning rates or lambda)")
        loss.backward()
        nn.utils.clip_grad_norm_(model.weight_parameters(), config.grad_clip)
        opt_w.step()
        if update_arch and not config.bilevel:  # single level: the same batch, the same backward
            opt_a.step()
        n = y.numel()
        seen += n
        loss_sum += loss.item() * n
        penalty_sum += penalty.item() * n
        correct += (logits.argmax(1) == y).sum().item()
        rate = seen / max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", tau=f"{tau:.3f}",
                        img_s=f"{rate:.0f}")
    elapsed = time.perf_counter() - start
    seen, correct, loss_sum, penalty_sum = distributed.all_reduce_sum([seen, correct, loss_sum, penalty_sum])
    return dict(train_loss=loss_sum / max(seen, 1), train_acc=correct / max(seen, 1),
                penalty=penalty_sum / max(seen, 1), images_per_s=seen / max(elapsed, 1e-9), epoch_s=elapsed)


def _loss(net, config, x, y, tau, noise):
    """Cross entropy + lambda * the resource penalty under the sample the forward used (SNAS's loss)."""
    logits, penalty = net(x, tau, noise)
    return F.cross_entropy(logits, y) + config.resource_lambda * penalty, logits, penalty


def evaluate_recalibrated(model: Supernet, config: SearchConfig, train_loader, val_loader, tau: float, child: bool,
                          device, noise=None) -> Tuple[float, float]:
    """:func:`evaluate` of the supernet (the network sampled by ``noise`` at ``tau``) or of its derived child, after
    :func:`recalibrate_bn` on ``config.bn_recalibration`` training batches of that same network (0: the running
    statistics of training as they are). The model's weights, BatchNorm buffers and momenta are restored after."""
    hard = hard_mode(config) and not child
    if config.bn_recalibration <= 0:
        return evaluate(model, val_loader, tau, child=child, device=device, noise=noise, hard=hard)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    momenta = {m: m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    drop_path = model.drop_path_prob
    try:
        model.drop_path_prob = 0.0
        recalibrate_bn(model, train_loader, config.bn_recalibration, device, tau=None if child else tau, noise=noise,
                       hard=hard)
        # each rank recalibrated on its own shard: every rank evaluates rank 0's statistics, one network
        distributed.broadcast_buffers(model)
        return evaluate(model, val_loader, tau, child=child, device=device, noise=noise, hard=hard)
    finally:
        model.load_state_dict(saved)
        model.drop_path_prob = drop_path
        for m, momentum in momenta.items():
            m.momentum = momentum


def _read_metrics(path: str) -> List[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _truncate_metrics(path: str, epochs: int) -> None:
    """Drops metric lines of epochs after the checkpoint (an epoch that was interrupted is run again)."""
    rows = _read_metrics(path) if os.path.exists(path) else []
    with open(path, "w") as f:
        for row in rows[:epochs]:
            f.write(json.dumps(row) + "\n")


def _write_plots(out: str, history, genotype, metrics_path, arch) -> None:
    from . import plots

    title = convergence.summary(arch, len(PRIMITIVES), sep="\n")
    plots.plot_alphas(history, os.path.join(out, "alphas.png"), title=title)
    plots.plot_cell(genotype.normal, os.path.join(out, "cell_normal.png"), "normal cell")
    plots.plot_cell(genotype.reduce, os.path.join(out, "cell_reduce.png"), "reduction cell")
    plots.plot_curves(_read_metrics(metrics_path), os.path.join(out, "curves.png"),
                      keys=["train_loss", "val_loss", "train_acc", "val_acc", "child_val_acc"])
