"""The SNAS search loop: single-level (weights and log_alpha from one backward) or DARTS's first-order bi-level,
with the resource penalty, the temperature schedule, warm-up, drop-path, per-epoch evaluation of the supernet
and of its derived child, and a run directory that survives interruption.

Run directory (``config.out``):
    config.json       the full configuration (``--resume`` reads it back)
    metrics.jsonl     one JSON line per epoch
    genotype.json     the current derivation, plus ``normal_alpha`` / ``reduce_alpha`` (softmax(log_alpha), 14x8)
    checkpoint.pt     model, optimizers, schedule, RNG states; written atomically after every epoch
    alphas.png, cell_normal.png, cell_reduce.png, curves.png
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import costs as cost_model
from . import schedules
from .supernet import Supernet


class SearchError(RuntimeError):
    """A search that cannot go on (non-finite loss, unusable configuration); its message is one line."""


@dataclass
class SearchConfig:
    """Every setting of a search; the defaults follow the official SNAS recipe (see ../docs and snas.md)."""

    dataset: str = "digits"
    data_dir: Optional[str] = None
    data_limit: Optional[int] = None
    out: str = "runs/search"
    seed: int = 0
    epochs: int = 10
    batch_size: int = 64
    layers: int = 5
    channels: int = 8
    mixed: str = "fused"
    pool_bn: bool = False
    sampling: str = "step"  # one Z per step per cell type | per cell | per example
    hard: bool = False  # straight-through one-hot samples (GDAS-style)
    bilevel: bool = False  # DARTS first order: log_alpha from held-out batches, alternating
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_optimizer: str = "sgd"  # sgd (single-GPU recipe) | adam (multi-GPU recipe)
    arch_lr: float = 3e-4
    arch_weight_decay: float = 0.0
    arch_betas: Tuple[float, float] = (0.5, 0.999)
    warmup_epochs: int = 0  # epochs with log_alpha frozen
    tau_schedule: str = "linear"  # linear | exponential
    tau0: float = 1.0
    tau_min: float = 0.03
    tau_epochs: int = 150  # length of the linear schedule (the official 150, whatever --epochs is)
    tau_rate: float = 0.95  # exponential schedule: tau0 * rate^epoch, floored at tau_min
    resource_lambda: float = 1.5e-3
    penalty: str = "log"  # log | linear
    drop_path: float = 0.0
    bn_recalibration: int = 0  # batches used to recalibrate BatchNorm before evaluating the child
    num_workers: int = 0
    device: str = "cpu"

    def validate(self) -> None:
        choices = {"mixed": ("fused", "eager"), "sampling": ("step", "cell", "example"),
                   "arch_optimizer": ("sgd", "adam"), "tau_schedule": ("linear", "exponential"),
                   "penalty": ("log", "linear"), "dataset": ("digits", "cifar10")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise SearchError(f"{name}: expected one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "layers", "channels", "tau_epochs"):
            if getattr(self, name) < 1:
                raise SearchError(f"{name}: expected an integer >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.drop_path < 1.0:
            raise SearchError(f"drop_path: expected a probability in [0, 1), got {self.drop_path}")
        if not (self.tau0 > 0 and self.tau_min > 0):
            raise SearchError(f"tau0, tau_min: expected temperatures > 0, got {self.tau0}, {self.tau_min}")

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
    return schedules.linear_tau(epoch, config.tau0, config.tau_min, config.tau_epochs)


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


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj, path: str) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    tmp = f"{path}.tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json_atomic(data, path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


@torch.no_grad()
def evaluate(model: Supernet, loader, tau: float, child: bool, device) -> Tuple[float, float]:
    """(mean loss, accuracy) of the supernet (a sample at ``tau``) or of its derived child on ``loader``."""
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model.forward_child(x) if child else model(x, tau)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        total += y.numel()
    return loss_sum / max(total, 1), correct / max(total, 1)


@torch.no_grad()
def recalibrate_bn(model: Supernet, loader, batches: int, device) -> None:
    """Re-estimates every BatchNorm's running statistics on ``batches`` training batches of the child."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    model.train()
    for i, (x, _) in enumerate(loader):
        if i >= batches:
            break
        model.forward_child(x.to(device))


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


def search(config: SearchConfig, data, resume: bool = False, progress: bool = True) -> SearchResult:
    """Runs (or resumes) a search. ``data`` is ``(train_set, val_set, info)`` from :mod:`snas_fast.data`."""
    from .data import make_loaders  # noqa: local import keeps `import snas_fast` light

    config.validate()
    train_set, val_set, info = data
    device = torch.device(config.device)
    os.makedirs(config.out, exist_ok=True)
    ckpt_path = os.path.join(config.out, "checkpoint.pt")
    metrics_path = os.path.join(config.out, "metrics.jsonl")

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    model = Supernet(config.channels, info.num_classes, config.layers, in_channels=info.in_channels,
                     mixed=config.mixed, pool_bn=config.pool_bn, sampling=config.sampling).to(device)
    costs_normal, costs_reduce = (t.to(device) for t in cost_tables(model, info.image_size))
    train_loader, val_loader = make_loaders(train_set, val_set, config.batch_size, config.seed,
                                            num_workers=config.num_workers)
    opt_w, opt_a, schedule = make_optimizers(model, config)

    start_epoch, history = 0, []
    if resume and os.path.exists(ckpt_path):
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt_w.load_state_dict(state["opt_weights"])
        opt_a.load_state_dict(state["opt_arch"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, history = state["epoch"] + 1, state["history"]
        set_rng_state(state["rng"])
        _truncate_metrics(metrics_path, start_epoch)
    else:
        write_json_atomic(config.to_dict(), os.path.join(config.out, "config.json"))
        open(metrics_path, "w").close()

    for epoch in range(start_epoch, config.epochs):
        tau = temperature(config, epoch)
        model.drop_path_prob = config.drop_path * epoch / max(config.epochs, 1)
        update_arch = epoch >= config.warmup_epochs
        # the data order of an epoch depends on (seed, epoch) alone, so a resumed run sees the same batches
        if train_loader.generator is not None:
            train_loader.generator.manual_seed(config.seed * 1000003 + epoch)
        stats = _train_epoch(model, config, train_loader, val_loader, opt_w, opt_a, tau, update_arch,
                             costs_normal, costs_reduce, device, epoch, progress)
        schedule.step()
        rng_after_train = rng_state()
        val_loss, val_acc = evaluate(model, val_loader, tau, child=False, device=device)
        child_acc = _evaluate_child(model, config, train_loader, val_loader, device)
        set_rng_state(rng_after_train)  # evaluation does not change what the next epoch draws
        normal_alpha, reduce_alpha = (a.tolist() for a in model.alphas())
        genotype = model.genotype("edge_all")
        row = dict(epoch=epoch, tau=tau, lr=opt_w.param_groups[0]["lr"], **stats, val_loss=val_loss,
                   val_acc=val_acc, child_val_acc=child_acc)
        history.append(dict(normal_alpha=normal_alpha, reduce_alpha=reduce_alpha))
        with open(metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        write_json_atomic(dict(genotype=genotype.to_dict(), normal_alpha=normal_alpha, reduce_alpha=reduce_alpha,
                               epoch=epoch), os.path.join(config.out, "genotype.json"))
        save_atomic(dict(model=model.state_dict(), opt_weights=opt_w.state_dict(), opt_arch=opt_a.state_dict(),
                         schedule=schedule.state_dict(), epoch=epoch, history=history, rng=rng_state(),
                         config=config.to_dict()), ckpt_path)
        _write_plots(config.out, history, genotype, metrics_path)
        if progress:
            print(f"epoch {epoch + 1}/{config.epochs}: train_acc {stats['train_acc']:.3f} val_acc {val_acc:.3f} "
                  f"child_val_acc {child_acc:.3f} tau {tau:.3f}", flush=True)

    rows = _read_metrics(metrics_path)
    last = rows[-1] if rows else {}
    return SearchResult(model.genotype("edge_all"), last.get("val_acc", math.nan), last.get("child_val_acc", math.nan),
                        history)


def _train_epoch(model, config, train_loader, val_loader, opt_w, opt_a, tau, update_arch, costs_normal,
                 costs_reduce, device, epoch, progress) -> Dict[str, float]:
    from tqdm import tqdm

    model.train()
    seen, correct, loss_sum, penalty_sum = 0, 0, 0.0, 0.0
    start = time.perf_counter()
    val_iter = iter(val_loader) if config.bilevel else None
    bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=not progress,
               dynamic_ncols=True)
    for x, y in bar:
        x, y = x.to(device), y.to(device)
        if config.bilevel and update_arch:  # DARTS first order: log_alpha on a held-out batch, weights frozen
            try:
                xv, yv = next(val_iter)
            except StopIteration:
                val_iter = iter(val_loader)
                xv, yv = next(val_iter)
            opt_a.zero_grad(set_to_none=True)
            loss_v, _, _ = _loss(model, config, xv.to(device), yv.to(device), tau, costs_normal, costs_reduce)
            loss_v.backward()
            opt_a.step()
        opt_w.zero_grad(set_to_none=True)
        opt_a.zero_grad(set_to_none=True)
        loss, logits, penalty = _loss(model, config, x, y, tau, costs_normal, costs_reduce)
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
    return dict(train_loss=loss_sum / max(seen, 1), train_acc=correct / max(seen, 1),
                penalty=penalty_sum / max(seen, 1), images_per_s=seen / max(elapsed, 1e-9), epoch_s=elapsed)


def _loss(model, config, x, y, tau, costs_normal, costs_reduce):
    """Cross entropy + lambda * the resource penalty under the sample the forward used (SNAS's loss)."""
    logits = model(x, tau, hard=config.hard)
    z_normal, z_reduce = model.last_sample
    if config.sampling == "example":  # the expected cost of the batch: the mean sample
        z_normal, z_reduce = z_normal.mean(0), z_reduce.mean(0)
    penalty = cost_model.resource_penalty(z_normal, z_reduce, costs_normal, costs_reduce, form=config.penalty)
    return F.cross_entropy(logits, y) + config.resource_lambda * penalty, logits, penalty


def _evaluate_child(model, config, train_loader, val_loader, device) -> float:
    if config.bn_recalibration <= 0:
        return evaluate(model, val_loader, 1.0, child=True, device=device)[1]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    momenta = {m: m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    try:
        recalibrate_bn(model, train_loader, config.bn_recalibration, device)
        return evaluate(model, val_loader, 1.0, child=True, device=device)[1]
    finally:
        model.load_state_dict(saved)
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


def _write_plots(out: str, history, genotype, metrics_path) -> None:
    from . import plots

    plots.plot_alphas(history, os.path.join(out, "alphas.png"))
    plots.plot_cell(genotype.normal, os.path.join(out, "cell_normal.png"), "normal cell")
    plots.plot_cell(genotype.reduce, os.path.join(out, "cell_reduce.png"), "reduction cell")
    plots.plot_curves(_read_metrics(metrics_path), os.path.join(out, "curves.png"),
                      keys=["train_loss", "val_loss", "train_acc", "val_acc", "child_val_acc"])
