"""Retraining a genotype from scratch: the DARTS/SNAS evaluation recipe on :class:`~snas_fast.NetworkCIFAR`.

SGD with momentum and a cosine learning rate, an auxiliary head whose loss is weighted 0.4, cutout, random crop
(and horizontal flip on CIFAR-10), drop-path ramped linearly from 0 to ``drop_path`` over the epochs, gradient
clipping; the last, incomplete batch of an epoch is dropped. The paper's CIFAR-10 setting is ``--layers 20 --channels 36 --epochs 600 --batch-size 96
--drop-path 0.2`` (snas.md); the defaults here are a small network for the digits.

Run directory (``config.out``), like the search's:
    config.json       the full configuration (``--resume`` reads it back)
    genotype.json     the genotype trained, ``{"genotype": ..., "source": ...}`` (so ``--genotype DIR`` works on it)
    metrics.jsonl     one JSON line per epoch: losses, accuracies, learning rate, drop-path, images/s
    checkpoint.pt     model, optimizer, schedule; written atomically after every epoch
    curves.png        the learning curves
    summary.json      the final test accuracy and loss, the parameter count (auxiliary head excluded, and included)

The test split: CIFAR-10's ``test_batch``; for the digits, the fixed test quarter no search trains or validates on
(:func:`snas_fast.data.digits_split_indices`); training uses the search's train and validation parts together.
Randomness is a function of (seed, epoch, rank), as in the search. In a process group (torchrun) training is
data-parallel (DistributedDataParallel, a DistributedSampler, ``config.batch_size`` per rank); only rank 0 writes
the run directory.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..spaces import get_space
from ..spaces.darts import genotypes
from ..spaces.darts.genotypes import Genotype
from ..spaces.darts.networks import NetworkCIFAR, count_parameters
from ..spaces.morph.net import MorphNet
from ..spaces.morph.spec import FORMAT as MORPH_FORMAT, Spec
from . import distributed
from .config import CHANNELS_LAST_HELP, RunConfig, RunError, setting
from .data import eval_loader, train_loader
from .loop import Callback, Task, drop_path_prob, evaluate, fit
from .rundir import RunDir
from .seeds import make_generator, seed_everything

__all__ = [
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "augment",
    "cutout_length",
    "drop_path_prob",
    "load_train_data",
    "resolve_genotype",
    "train",
]

GENOTYPE_FILE = "genotype.json"


class TrainError(RunError):
    """A retraining that cannot start or go on (bad genotype, bad setting, non-finite loss); one-line message."""


@dataclass
class TrainConfig(RunConfig):
    """Every setting of a retraining. The optimiser, auxiliary weight, cutout and drop-path follow DARTS's and
    SNAS's evaluation recipe; the network size and epochs default to a small run on the digits."""

    Error = TrainError

    genotype: str = setting("DARTS_V2", "a published genotype (DARTS_V2, SNAS_mild_edge_all, ...), a genotype JSON "
                                        "file, or a search run directory (its genotype.json)")
    out: str = setting("runs/train", "run directory")
    epochs: int = setting(10, "training epochs")
    layers: int = setting(8, "cells in the network (20 in the papers' CIFAR-10 setting)")
    channels: int = setting(16, "channels of the first cells, C (36 in the papers' CIFAR-10 setting)")
    channels_last: bool = setting(False, CHANNELS_LAST_HELP)
    auxiliary_weight: float = setting(0.4, "weight of the auxiliary head's loss (0: no head)")
    cutout: Optional[int] = setting(None, "side of the cutout square, 0 for none (default: half the image side)",
                                    kind=int)
    augment: bool = setting(True, "random crop, and horizontal flip on CIFAR-10")
    drop_path: float = setting(0.2, "final drop-path probability (ramped linearly from 0)")

    def validate(self) -> None:
        super().validate()
        if self.cutout is not None and self.cutout < 0:
            raise TrainError(f"cutout: expected a side >= 0 (0: off) or None, got {self.cutout}")
        if self.auxiliary_weight < 0:
            raise TrainError(f"auxiliary_weight: expected a weight >= 0, got {self.auxiliary_weight}")


# ------------------------------------------------------------------------------------------------------------
# Policy: small pure functions
# ------------------------------------------------------------------------------------------------------------
def genotype_from_dict(d, space=None):
    """The genotype of a JSON object: a morphable network's description (its ``format`` is
    :data:`snas_fast.spaces.morph.spec.FORMAT`), else a DARTS-family :class:`Genotype` of ``space``."""
    if isinstance(d, dict) and d.get("format") == MORPH_FORMAT:
        return Spec.from_dict(d)
    return Genotype.from_dict(d, space)


def resolve_genotype(spec: str, space=None) -> Tuple[Genotype, str]:
    """``(genotype, source)`` for ``--genotype spec``: a published name (:func:`snas_fast.genotypes.available`),
    a JSON file (a genotype dict, or a run directory's ``genotype.json`` whose ``"genotype"`` entry is one), or a
    run directory (its ``genotype.json``: a search's current derivation, or a retraining's genotype). Anything else
    raises :class:`TrainError` with a one-line message. ``space``: the DARTS-family space whose primitives the
    genotype names (default DARTS's)."""
    names = genotypes.available()
    if not isinstance(spec, str) or not spec:
        raise TrainError(f"genotype: expected a published name ({', '.join(names)}), a genotype JSON file or a "
                         f"run directory, got {spec!r}")
    if spec in names:
        return genotypes.load(spec), spec
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / GENOTYPE_FILE).is_file():
            raise TrainError(f"genotype: {spec} holds no {GENOTYPE_FILE} (expected a search run directory)")
        path = path / GENOTYPE_FILE
    elif not path.exists():
        raise TrainError(f"genotype: {spec} is neither a published genotype ({', '.join(names)}) nor a file or run "
                         f"directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TrainError(f"genotype: cannot read a JSON genotype from {path} ({' '.join(str(error).split())})") from None
    if isinstance(data, dict) and "genotype" in data:  # a run directory's genotype.json
        data = data["genotype"]
    try:
        return genotype_from_dict(data, space), str(path)
    except (TypeError, ValueError) as error:
        raise TrainError(f"genotype: {path} is not a genotype ({' '.join(str(error).split())})") from None


def cutout_length(config: TrainConfig, image_size: int) -> int:
    """The cutout side: ``config.cutout``, or half the image side when it is None (16 on CIFAR-10, DARTS's)."""
    return image_size // 2 if config.cutout is None else int(config.cutout)


def augment(x: Tensor, generator: torch.Generator, crop_padding: int = 0, flip: bool = False,
            cutout: int = 0) -> Tensor:
    """A randomly augmented copy of the batch ``x [B, C, H, W]`` (already normalised), drawing from ``generator``
    (a CPU generator):

    - ``crop_padding = p > 0``: zero-pad by ``p`` on every side and crop a random ``H x W`` window (RandomCrop);
    - ``flip``: mirror each image left-right with probability 1/2;
    - ``cutout = L > 0``: zero an ``L x L`` square (clipped at the border) centred on a uniformly drawn pixel
      (DeVries & Taylor; DARTS's ``utils.Cutout``).
    """
    B, _, H, W = x.shape
    dev = x.device
    if crop_padding > 0:
        p = int(crop_padding)
        padded = F.pad(x, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (B,), generator=generator).to(dev)
        ox = torch.randint(0, 2 * p + 1, (B,), generator=generator).to(dev)
        rows = (oy[:, None] + torch.arange(H, device=dev))[:, :, None]  # [B, H, 1]
        cols = (ox[:, None] + torch.arange(W, device=dev))[:, None, :]  # [B, 1, W]
        x = padded[torch.arange(B, device=dev)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mirror = (torch.rand(B, generator=generator) < 0.5).to(dev)
        x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    if cutout > 0:
        cy = torch.randint(0, H, (B,), generator=generator).to(dev)
        cx = torch.randint(0, W, (B,), generator=generator).to(dev)
        half = int(cutout) // 2
        ys, xs = torch.arange(H, device=dev), torch.arange(W, device=dev)
        in_rows = (ys[None, :] >= cy[:, None] - half) & (ys[None, :] < cy[:, None] + half)  # [B, H]
        in_cols = (xs[None, :] >= cx[:, None] - half) & (xs[None, :] < cx[:, None] + half)  # [B, W]
        hole = in_rows[:, :, None] & in_cols[:, None, :]
        x = x.masked_fill(hole[:, None], 0.0)
    return x


def load_train_data(config: TrainConfig):
    """``(train, test, info)``: CIFAR-10's 50k training images and its test batch, or the digits' search parts and
    their held-out test part; cut to ``data_limit`` examples per split if set. Raises DatasetError (one line) on a
    bad data path."""
    return config.load_data("train_test")


# ------------------------------------------------------------------------------------------------------------
# The task
# ------------------------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    test_acc: float
    test_loss: float
    params: int  # auxiliary head excluded, as the papers count
    genotype: Genotype
    history: List[dict] = field(default_factory=list)  # the metrics rows
    model: Optional[NetworkCIFAR] = None


_AUGMENT_STREAM = 0x61756720  # "aug ": keeps the augmentation stream apart from other uses of seed_for


def build_model(config: TrainConfig, genotype: Genotype, info) -> NetworkCIFAR:
    """The network :func:`train` trains; a genotype that cannot make one raises :class:`TrainError`. A morphable
    network's description (:class:`snas_fast.spaces.morph.Spec`) is its own network (the cell settings unused)."""
    if isinstance(genotype, Spec):
        ours = (info.in_channels, info.num_classes, info.image_size)
        if (genotype.in_channels, genotype.num_classes, genotype.image_size) != ours:
            raise TrainError(f"genotype: {config.genotype}: a network for (in_channels, num_classes, image_size) "
                             f"{(genotype.in_channels, genotype.num_classes, genotype.image_size)}, the data has "
                             f"{ours}")
        return MorphNet(genotype).to(memory_format=torch.channels_last if config.channels_last
                                     else torch.contiguous_format)
    try:
        return get_space(config.space).network(
            genotype, config.channels, info.num_classes, config.layers, config.auxiliary_weight > 0,
            in_channels=info.in_channels,
            memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    except ValueError as error:
        raise TrainError(f"genotype: {config.genotype}: {error}") from None


def _run_genotype(config: TrainConfig, ctx, genotype: Optional[Genotype], resume: bool) -> Tuple[Genotype, str]:
    """The genotype to train: the one given, else the run directory's (resume), else ``config.genotype``'s;
    rank 0 decides and hands it to the others."""
    space = get_space(config.space)
    if genotype is not None:
        return genotype, config.genotype
    chosen = None
    if ctx.is_main:
        saved = os.path.join(config.out, GENOTYPE_FILE)
        if resume and os.path.exists(saved):
            with open(saved) as f:
                d = json.load(f)
            chosen = (d["genotype"], d.get("source", config.genotype))
        else:
            g, source = resolve_genotype(config.genotype, space)
            chosen = (g.to_dict(), source)
    d, source = distributed.broadcast_object(chosen)
    return genotype_from_dict(d, space), source


def _heads(out) -> Tuple[Tensor, Optional[Tensor]]:
    """``(logits, auxiliary logits or None)`` of a network's output (a DARTS network's pair, or logits alone)."""
    return out if isinstance(out, tuple) else (out, None)


class Retraining(Task):
    """A genotype's network trained from scratch: SGD with a cosine rate, the auxiliary loss, augmentation,
    drop-path; evaluated on the test part every epoch."""

    def __init__(self, config: TrainConfig, data, genotype: Genotype, ctx):
        train_set, test_set, info = data
        self.config, self.ctx, self.genotype = config, ctx, genotype
        seed_everything(config.seed)
        self.model = build_model(config, genotype, info).to(ctx.device)  # before anything is written
        self.params = count_parameters(self.model)
        if config.sync_bn:
            self.model = distributed.convert_sync_batchnorm(self.model, ctx)
        self.optimizer = torch.optim.SGD(self.model.parameters(), config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, float(config.epochs),
                                                                   eta_min=config.lr_min)
        # the last, incomplete batch is dropped: a batch of one image breaks the auxiliary head's BatchNorm (1x1)
        self.train_loader = train_loader(train_set, config.batch_size, config.seed, ctx, config.num_workers,
                                         drop_last=True)
        self.test_loader = eval_loader(test_set, config.batch_size, ctx, config.num_workers)
        self.crop = info.image_size // 8 if config.augment else 0
        self.flip = config.augment and config.dataset == "cifar10"
        self.cutout = cutout_length(config, info.image_size)
        self.net = distributed.wrap_ddp(self.model, ctx, find_unused_parameters=self.model.has_unused_parameters())
        self.generator = None

    def state_dict(self) -> dict:
        return dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                    schedule=self.schedule.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])

    def begin_epoch(self, epoch: int) -> Dict[str, float]:
        self.generator = make_generator(_AUGMENT_STREAM, self.config.seed, epoch, self.ctx.rank)
        self.model.drop_path_prob = drop_path_prob(self.config.drop_path, epoch, self.config.epochs)
        self.net.train()
        return dict(lr=self.optimizer.param_groups[0]["lr"], drop_path_prob=self.model.drop_path_prob)

    def loss(self, x: Tensor, y: Tensor, epoch: int, step: int):
        x = augment(x, self.generator, self.crop, self.flip, self.cutout)
        self.optimizer.zero_grad(set_to_none=True)
        logits, logits_aux = _heads(self.net(x))
        loss = F.cross_entropy(logits, y)
        if logits_aux is not None:
            loss = loss + self.config.auxiliary_weight * F.cross_entropy(logits_aux, y)
        return loss, logits, {}

    def end_epoch(self, epoch: int) -> Dict[str, object]:
        self.schedule.step()
        distributed.broadcast_buffers(self.model)  # every rank evaluates (and rank 0 saves) rank 0's BN statistics
        test_loss, test_acc = evaluate(lambda x: _heads(self.model(x))[0], self.model, self.test_loader,
                                       self.ctx.device)
        return dict(test_loss=test_loss, test_acc=test_acc)

    def legend(self) -> str:
        handicaps = [what for what, on in (("augmented images", self.crop or self.flip or self.cutout),
                                           ("drop-path", self.config.drop_path > 0)) if on]
        return ("train_acc: the running accuracy over the epoch's batches, in training mode"
                + "".join(f", with {what}" for what in handicaps)
                + "; test_acc: after the epoch, in eval mode on clean images (so train_acc may sit below it)")

    def describe(self, row: dict) -> str:
        return (f"train_acc {row['train_acc']:.3f} test_acc {row['test_acc']:.3f} lr {row['lr']:.4f} "
                f"drop_path {row['drop_path_prob']:.3f}")


def train(config: TrainConfig, data, genotype: Optional[Genotype] = None, resume: bool = False,
          progress: bool = True, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Trains (or, with ``resume``, continues) ``genotype`` on ``data = (train, test, info)``
    (:func:`load_train_data`). ``genotype`` defaults to the run directory's (resume) or ``config.genotype``'s.
    ``callbacks``: run after every epoch on the main process (:func:`snas_fast.engine.loop.fit`), e.g.
    :func:`snas_fast.viz.callbacks.train_plots`, which ``snas-fast train`` passes."""
    config.validate()
    ctx = distributed.context(config.device)
    genotype, source = _run_genotype(config, ctx, genotype, resume)
    task = Retraining(config, data, genotype, ctx)
    rows = fit(task, resume, progress, callbacks,
               on_start=lambda run: run.write_json(GENOTYPE_FILE, dict(genotype=genotype.to_dict(), source=source)))
    last = rows[-1] if rows else {}
    result = TrainResult(last.get("test_acc", math.nan), last.get("test_loss", math.nan), task.params, genotype,
                         rows, task.model)
    RunDir(config.out, ctx).write_json("summary.json", dict(
        test_acc=result.test_acc, test_loss=result.test_loss, params=task.params,
        params_with_auxiliary=count_parameters(task.model, auxiliary=True), epochs=len(rows), genotype_source=source))
    return result
