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

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed, genotypes
from .genotypes import Genotype
from .networks import NetworkCIFAR, count_parameters

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


class TrainError(RuntimeError):
    """A retraining that cannot start or go on (bad genotype, bad setting, non-finite loss); one-line message."""


@dataclass
class TrainConfig:
    """Every setting of a retraining. The optimiser, auxiliary weight, cutout and drop-path follow DARTS's and
    SNAS's evaluation recipe; the network size and epochs default to a small run on the digits."""

    genotype: str = "DARTS_V2"  # a published name, a genotype JSON file, or a search run directory
    dataset: str = "digits"
    data_dir: Optional[str] = None
    data_limit: Optional[int] = None
    out: str = "runs/train"
    seed: int = 0
    epochs: int = 10
    batch_size: int = 64
    layers: int = 8
    channels: int = 16
    auxiliary_weight: float = 0.4  # weight of the auxiliary head's loss; 0 builds no head
    cutout: Optional[int] = None  # side of the cutout square; None: half the image side (16 on CIFAR-10); 0: off
    augment: bool = True  # random crop (padding image_size / 8) and, on CIFAR-10, horizontal flip
    drop_path: float = 0.2  # final drop-path probability, ramped linearly from 0
    lr: float = 0.025
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    num_workers: int = 0
    device: str = "cpu"
    sync_bn: bool = False  # many processes: BatchNorm statistics of the global batch (else per process)
    dist_timeout: float = 1800.0  # many processes: seconds a collective waits for a silent peer

    def validate(self) -> None:
        if self.dataset not in ("digits", "cifar10"):
            raise TrainError(f"dataset: expected one of digits, cifar10, got {self.dataset!r}")
        for name in ("epochs", "batch_size", "layers", "channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainError(f"{name}: expected an integer >= 1, got {value!r}")
        if self.cutout is not None and self.cutout < 0:
            raise TrainError(f"cutout: expected a side >= 0 (0: off) or None, got {self.cutout}")
        if not 0.0 <= self.drop_path < 1.0:
            raise TrainError(f"drop_path: expected a probability in [0, 1), got {self.drop_path}")
        if self.auxiliary_weight < 0:
            raise TrainError(f"auxiliary_weight: expected a weight >= 0, got {self.auxiliary_weight}")
        for name in ("lr", "grad_clip", "dist_timeout"):
            if not getattr(self, name) > 0:
                raise TrainError(f"{name}: expected a number > 0, got {getattr(self, name)}")
        if self.data_limit is not None and self.data_limit < 1:
            raise TrainError(f"data_limit: expected an integer >= 1, got {self.data_limit}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TrainError(f"config: unknown settings {unknown}")
        return cls(**d)


# ------------------------------------------------------------------------------------------------------------
# Policy: small pure functions
# ------------------------------------------------------------------------------------------------------------
def resolve_genotype(spec: str) -> Tuple[Genotype, str]:
    """``(genotype, source)`` for ``--genotype spec``: a published name (:func:`snas_fast.genotypes.available`),
    a JSON file (a genotype dict, or a run directory's ``genotype.json`` whose ``"genotype"`` entry is one), or a
    run directory (its ``genotype.json``: a search's current derivation, or a retraining's genotype). Anything else
    raises :class:`TrainError` with a one-line message."""
    names = genotypes.available()
    if not isinstance(spec, str) or not spec:
        raise TrainError(f"--genotype: expected a published name ({', '.join(names)}), a genotype JSON file or a "
                         f"run directory, got {spec!r}")
    if spec in names:
        return genotypes.load(spec), spec
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / GENOTYPE_FILE).is_file():
            raise TrainError(f"--genotype {spec}: the directory holds no {GENOTYPE_FILE} (expected a search run "
                             f"directory)")
        path = path / GENOTYPE_FILE
    elif not path.exists():
        raise TrainError(f"--genotype {spec}: neither a published genotype ({', '.join(names)}) nor a file or run "
                         f"directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TrainError(f"--genotype {path}: cannot read a JSON genotype ({' '.join(str(error).split())})") from None
    if isinstance(data, dict) and "genotype" in data:  # a run directory's genotype.json
        data = data["genotype"]
    try:
        return Genotype.from_dict(data), str(path)
    except (TypeError, ValueError) as error:
        raise TrainError(f"--genotype {path}: not a genotype ({' '.join(str(error).split())})") from None


def cutout_length(config: TrainConfig, image_size: int) -> int:
    """The cutout side: ``config.cutout``, or half the image side when it is None (16 on CIFAR-10, DARTS's)."""
    return image_size // 2 if config.cutout is None else int(config.cutout)


def drop_path_prob(drop_path: float, epoch: int, epochs: int) -> float:
    """DARTS's linear ramp: ``drop_path * epoch / epochs`` (0 in the first epoch)."""
    return drop_path * epoch / max(epochs, 1)


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
    their held-out test part;
    cut to ``data_limit`` examples per split if set. Raises DatasetError (one line) on a bad data path."""
    from torch.utils.data import TensorDataset

    from .data import load_cifar10, load_digits

    if config.dataset == "cifar10":
        if not config.data_dir:
            raise TrainError("--data-dir: cifar10 needs the folder holding cifar-10-batches-py (nothing is "
                             "downloaded)")
        return load_cifar10(config.data_dir, split="train_test", limit=config.data_limit)
    train, test, info = load_digits(seed=config.seed, split="train_test")
    if config.data_limit:
        train, test = (TensorDataset(*(t[: config.data_limit] for t in ds.tensors)) for ds in (train, test))
    return train, test, info


# ------------------------------------------------------------------------------------------------------------
# The loop
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
    """The network :func:`train` trains; a genotype that cannot make one raises :class:`TrainError`."""
    try:
        return NetworkCIFAR(config.channels, info.num_classes, config.layers, config.auxiliary_weight > 0, genotype,
                            in_channels=info.in_channels)
    except ValueError as error:
        raise TrainError(f"--genotype {config.genotype}: {error}") from None


def _run_genotype(config: TrainConfig, ctx, genotype: Optional[Genotype], resume: bool) -> Tuple[Genotype, str]:
    """The genotype to train: the one given, else the run directory's (resume), else ``config.genotype``'s;
    rank 0 decides and hands it to the others."""
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
            g, source = resolve_genotype(config.genotype)
            chosen = (g.to_dict(), source)
    d, source = distributed.broadcast_object(chosen)
    return Genotype.from_dict(d), source


def train(config: TrainConfig, data, genotype: Optional[Genotype] = None, resume: bool = False,
          progress: bool = True) -> TrainResult:
    """Trains (or, with ``resume``, continues) ``genotype`` on ``data = (train, test, info)``
    (:func:`load_train_data`). ``genotype`` defaults to the run directory's (resume) or ``config.genotype``'s."""
    from tqdm import tqdm

    from .trainer import _read_metrics, _truncate_metrics, read_checkpoint, save_atomic, seed_epoch, write_json_atomic

    config.validate()
    train_set, test_set, info = data
    ctx = distributed.context(config.device)
    device = ctx.device
    genotype, source = _run_genotype(config, ctx, genotype, resume)
    ckpt_path = os.path.join(config.out, "checkpoint.pt")
    metrics_path = os.path.join(config.out, "metrics.jsonl")

    torch.manual_seed(config.seed)
    model = build_model(config, genotype, info).to(device)  # before anything is written: a bad cell stops here
    params = count_parameters(model)
    if config.sync_bn:
        model = distributed.convert_sync_batchnorm(model, ctx)
    optimizer = torch.optim.SGD(model.parameters(), config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(config.epochs), eta_min=config.lr_min)
    # the last, incomplete batch is dropped: a batch of one image breaks the auxiliary head's BatchNorm (1x1 map)
    train_loader = distributed.train_loader(train_set, config.batch_size, config.seed, ctx, config.num_workers,
                                            drop_last=True)
    test_loader = distributed.eval_loader(test_set, config.batch_size, ctx, config.num_workers)
    crop = info.image_size // 8 if config.augment else 0
    flip = config.augment and config.dataset == "cifar10"
    cutout = cutout_length(config, info.image_size)

    start_epoch, state = 0, None
    if resume:
        found = ctx.is_main and os.path.exists(ckpt_path)
        state, problem = distributed.broadcast_object(read_checkpoint(ckpt_path) if found else (None, None))
        if problem:
            raise TrainError(f"--resume {config.out}: {problem}")
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch = state["epoch"] + 1
        if ctx.is_main:
            _truncate_metrics(metrics_path, start_epoch)
    elif ctx.is_main:
        os.makedirs(config.out, exist_ok=True)
        write_json_atomic(config.to_dict(), os.path.join(config.out, "config.json"))
        write_json_atomic(dict(genotype=genotype.to_dict(), source=source), os.path.join(config.out, GENOTYPE_FILE))
        open(metrics_path, "w").close()
    net = distributed.wrap_ddp(model, ctx, find_unused_parameters=model.has_unused_parameters())

    rows: List[dict] = []
    for epoch in range(start_epoch, config.epochs):
        seed_epoch(config.seed, epoch, ctx.rank)
        generator = distributed.make_generator(_AUGMENT_STREAM, config.seed, epoch, ctx.rank)
        model.drop_path_prob = drop_path_prob(config.drop_path, epoch, config.epochs)
        train_loader.sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        net.train()
        seen, correct, loss_sum = 0, 0, 0.0
        start = time.perf_counter()
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not (progress and ctx.is_main), dynamic_ncols=True)
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            x = augment(x, generator, crop, flip, cutout)
            optimizer.zero_grad(set_to_none=True)
            logits, logits_aux = net(x)
            loss = F.cross_entropy(logits, y)
            if logits_aux is not None:
                loss = loss + config.auxiliary_weight * F.cross_entropy(logits_aux, y)
            if not torch.isfinite(loss):
                raise TrainError(f"the loss became {loss.item()} at epoch {epoch + 1}: the run stops; the checkpoint "
                                 f"of the last finished epoch is intact (lower the learning rate)")
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            n = y.numel()
            seen += n
            loss_sum += loss.item() * n
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                            img_s=f"{seen / max(time.perf_counter() - start, 1e-9):.0f}")
        elapsed = time.perf_counter() - start
        seen, correct, loss_sum = distributed.all_reduce_sum([seen, correct, loss_sum])
        schedule.step()
        distributed.broadcast_buffers(model)  # every rank evaluates (and rank 0 saves) rank 0's BN statistics
        test_loss, test_acc = evaluate(model, test_loader, device)
        row = dict(epoch=epoch, lr=lr, drop_path_prob=model.drop_path_prob, train_loss=loss_sum / max(seen, 1),
                   train_acc=correct / max(seen, 1), test_loss=test_loss, test_acc=test_acc,
                   images_per_s=seen / max(elapsed, 1e-9), epoch_s=elapsed)
        rows.append(row)
        if ctx.is_main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            save_atomic(dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                             schedule=schedule.state_dict(), epoch=epoch, config=config.to_dict()), ckpt_path)
            _plot(config.out, metrics_path)
            if progress:
                print(f"epoch {epoch + 1}/{config.epochs}: train_acc {row['train_acc']:.3f} test_acc {test_acc:.3f} "
                      f"lr {lr:.4f} drop_path {model.drop_path_prob:.3f}", flush=True)

    if ctx.is_main:
        rows = _read_metrics(metrics_path)
    last = rows[-1] if rows else {}
    result = TrainResult(last.get("test_acc", math.nan), last.get("test_loss", math.nan), params, genotype, rows,
                         model)
    if ctx.is_main:
        write_json_atomic(dict(test_acc=result.test_acc, test_loss=result.test_loss, params=params,
                               params_with_auxiliary=count_parameters(model, auxiliary=True),
                               epochs=len(rows), genotype_source=source), os.path.join(config.out, "summary.json"))
    return result


@torch.no_grad()
def evaluate(model: nn.Module, loader, device) -> Tuple[float, float]:
    """(mean loss, accuracy) of ``model`` in eval mode on ``loader``; with a process group each rank evaluates
    its share and the sums are added over the ranks."""
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits, _ = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        total += y.numel()
    loss_sum, correct, total = distributed.all_reduce_sum([loss_sum, correct, total])
    return loss_sum / max(total, 1), correct / max(total, 1)


def _plot(out: str, metrics_path: str) -> None:
    from . import plots
    from .trainer import _read_metrics

    plots.plot_curves(_read_metrics(metrics_path), os.path.join(out, "curves.png"),
                      keys=["train_loss", "test_loss", "train_acc", "test_acc"])
