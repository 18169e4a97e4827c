"""Retraining an architecture from scratch: the evaluation every strategy's result gets, on any trainable space
(the space builds the network: :meth:`SearchSpace.child <snas_fast.spaces.SearchSpace.child>`).

Images (the DARTS/SNAS evaluation recipe): SGD with momentum and a cosine learning rate, an auxiliary head whose
loss is weighted 0.4, cutout, random crop (and horizontal flip on CIFAR-10), drop-path ramped linearly from 0 to
``drop_path`` over the epochs, gradient clipping; the last, incomplete batch of an epoch is dropped. The paper's
CIFAR-10 setting is ``--layers 20 --channels 36 --epochs 600 --batch-size 96 --drop-path 0.2`` (snas.md); the
defaults here are a small network for the digits. Graphs: Adam at 3e-3 with a cosine rate, 30 epochs, BatchNorm's
statistics re-estimated on 20 training batches before each test evaluation (:data:`RETRAIN_DEFAULTS`). A space's
baseline network (``--baseline``, e.g. the graph space's PyG networks) trains by the same recipe, its width chosen
to come closest to ``--param-budget`` parameters.

Run directory (``config.out``), like the search's:
    config.json       the full configuration (``--resume`` reads it back)
    genotype.json     what is trained: ``{"genotype": ..., "source": ...}`` (so ``--genotype DIR`` works on it), or
                      ``{"baseline": ..., "budget": ..., "width": ...}``
    metrics.jsonl     one JSON line per epoch: losses, accuracies, learning rate, drop-path, images/s
    checkpoint.pt     model, optimizer, schedule; written atomically after every epoch
    curves.png        the learning curves
    summary.json      the final test accuracy and loss, the parameter count (auxiliary head excluded, and included)

The test split: CIFAR-10's ``test_batch``; for the digits, the fixed test quarter no search trains or validates on
(:func:`snas_fast.data.images.digits_split_indices`); the graph datasets' fixed test graphs; training uses the
search's train and validation parts together. Randomness is a function of (seed, epoch, rank), as in the search. In
a process group (torchrun) training is data-parallel (DistributedDataParallel, a DistributedSampler,
``config.batch_size`` per rank); only rank 0 writes the run directory.
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
from torch import Tensor, nn

from ..spaces import get_space, space_names, space_of_dict
from ..spaces.darts.networks import count_parameters
from . import distributed
from .config import RunError, TrainingConfig, setting
from .data import eval_loader, train_loader
from .loop import Callback, Task, drop_path_prob, evaluate, fit, recalibrate_bn
from .rundir import RunDir
from .seeds import make_generator, seed_everything

__all__ = [
    "RETRAIN_DEFAULTS",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "augment",
    "baseline_for_budget",
    "cutout_length",
    "drop_path_prob",
    "load_train_data",
    "resolve_genotype",
    "train",
]

GENOTYPE_FILE = "genotype.json"

#: The retraining recipe's defaults by the kind of data (on top of :data:`~snas_fast.engine.config.KIND_DEFAULTS`).
RETRAIN_DEFAULTS: Dict[str, Dict[str, object]] = {
    "images": dict(epochs=10, drop_path=0.2, auxiliary_weight=0.4, bn_recalibration=0),
    # on sbm-cluster the running averages lagged the weights so far that a GCN scored 0.36 in eval mode where batch
    # statistics gave 0.56 (0.55 after the re-estimation)
    "graphs": dict(epochs=30, drop_path=0.0, auxiliary_weight=0.0, bn_recalibration=20),
    "table": dict(epochs=1, drop_path=0.0, auxiliary_weight=0.0, bn_recalibration=0),  # nothing is trained
}


def retrain_defaults(config) -> Dict[str, object]:
    """:data:`RETRAIN_DEFAULTS` of ``config``'s space's kind of data, under the space's own retraining defaults
    (:meth:`SearchSpace.defaults <snas_fast.spaces.SearchSpace.defaults>`, role ``"child"``); none for an unknown
    space (validate names it)."""
    if config.space not in space_names():
        return {}
    space = config.space_object()
    return dict(RETRAIN_DEFAULTS[space.data_kind or "table"], **space.defaults("child"))


class TrainError(RunError):
    """A retraining that cannot start or go on (bad genotype, bad setting, non-finite loss); one-line message."""


def genotype_space(spec) -> Optional[str]:
    """The space the genotype ``spec`` (:func:`resolve_genotype`'s) names, where it says (None: unreadable, or it
    does not say)."""
    if not isinstance(spec, str) or not spec:
        return None
    path = Path(spec).expanduser()
    path = path / GENOTYPE_FILE if path.is_dir() else path
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("genotype"), dict):
        data = data["genotype"]
    name = space_of_dict(data)
    return name if name in space_names() else None


@dataclass
class TrainConfig(TrainingConfig):
    """Every setting of a retraining. The optimiser, auxiliary weight, cutout and drop-path follow DARTS's and
    SNAS's evaluation recipe on images, the graph recipe on graphs (:data:`RETRAIN_DEFAULTS`); the network size
    defaults to the space's retraining size (DARTS: 8 cells, C = 16)."""

    Error = TrainError
    roles = ("child",)

    space: Optional[str] = setting(None, "search space of the genotype (default: the space its JSON names, else "
                                         "darts)", kind=str)
    genotype: Optional[str] = setting("DARTS_V2", "a published genotype (DARTS_V2, SNAS_mild_edge_all, ...), a "
                                                  "genotype JSON file, or a search run directory (its genotype.json)",
                                      kind=str)
    out: str = setting("runs/train", "run directory")
    epochs: Optional[int] = setting(None, "training epochs (10 on images, 30 on graphs, unless given)", kind=int)
    auxiliary_weight: Optional[float] = setting(None, "weight of the auxiliary head's loss (0: no head; 0.4 on "
                                                      "images, 0 on graphs, unless given)", kind=float)
    cutout: Optional[int] = setting(None, "images: side of the cutout square, 0 for none (default: half the image "
                                          "side)", kind=int)
    augment: bool = setting(True, "images: random crop, and horizontal flip on CIFAR-10")
    drop_path: Optional[float] = setting(None, "final drop-path probability (ramped linearly from 0; 0.2 on "
                                               "images, 0 on graphs, unless given)", kind=float)
    bn_recalibration: Optional[int] = setting(None, "training batches that re-estimate BatchNorm's statistics before "
                                                    "each test evaluation (0: the running averages as they are; "
                                                    "0 on images, 20 on graphs, unless given)", kind=int)

    def __post_init__(self):
        if self.space is None:  # the genotype's own space
            self.space = genotype_space(self.genotype) if self.baseline == "none" else None
            self.space = self.space or "darts"
        super().__post_init__()

    def default_sources(self):
        return [retrain_defaults(self)] + super().default_sources()

    def validate(self) -> None:
        super().validate()
        if self.cutout is not None and self.cutout < 0:
            raise TrainError(f"cutout: expected a side >= 0 (0: off) or None, got {self.cutout}")
        self.check_numbers(("auxiliary_weight",), 0.0)
        self.check_ints(("bn_recalibration",), 0)
        space = self.space_object()
        if self.baseline != "none":
            if self.baseline not in space.baselines:
                raise TrainError(f"baseline: space {self.space} has "
                                 f"{'the baselines ' + ', '.join(space.baselines) if space.baselines else 'none'}, "
                                 f"got {self.baseline!r}")
        elif not self.genotype:
            raise genotype_required(space)
        lacks = space.lacks("child")
        if lacks:
            raise TrainError(f"space: {self.space} {lacks}: nothing to train")


# ------------------------------------------------------------------------------------------------------------
# Policy: small pure functions
# ------------------------------------------------------------------------------------------------------------
def genotype_required(space) -> TrainError:
    """The error of a retraining given nothing to train on ``space``."""
    return TrainError("genotype: required: a published genotype, a genotype JSON file or a search run directory"
                      + (f", or give --baseline {'|'.join(space.baselines)}" if space.baselines else ""))


def resolve_genotype(spec: str, space=None) -> Tuple[object, str]:
    """``(architecture, source)`` for ``--genotype spec``: a published name of ``space``
    (:meth:`SearchSpace.published <snas_fast.spaces.SearchSpace.published>`), a JSON file (an architecture's
    object, or a run directory's ``genotype.json`` whose ``"genotype"`` entry is one), or a run directory (its
    ``genotype.json``: a search's current derivation, or a retraining's genotype). ``space``: a
    :class:`~snas_fast.spaces.SearchSpace` (default DARTS's); an architecture of another space, or anything else,
    raises :class:`TrainError` with a one-line message."""
    from ..spaces import SearchSpace

    space = space if isinstance(space, SearchSpace) else get_space("darts") if space is None else space
    names = space.published()
    listed = f"a published name ({', '.join(names)}), " if names else ""
    if not isinstance(spec, str) or not spec:
        raise TrainError(f"genotype: expected {listed}a genotype JSON file or a run directory, got {spec!r}")
    if spec in names:
        return space.load(spec), spec
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / GENOTYPE_FILE).is_file():
            raise TrainError(f"genotype: {spec} holds no {GENOTYPE_FILE} (expected a search run directory)")
        path = path / GENOTYPE_FILE
    elif not path.exists():
        raise TrainError(f"genotype: {spec} is neither a published genotype ({', '.join(names)}) nor a file or run "
                         f"directory" if names else f"genotype: {spec} is neither a file nor a run directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TrainError(f"genotype: cannot read a JSON genotype from {path} ({' '.join(str(error).split())})") from None
    if isinstance(data, dict) and isinstance(data.get("genotype"), dict):  # a run directory's genotype.json
        data = data["genotype"]
    try:
        return space.from_dict(data), str(path)
    except (TypeError, ValueError) as error:
        raise TrainError(f"genotype: {path} is not a {space.name} genotype ({' '.join(str(error).split())})") \
            from None


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
    """``(train, test, info)``: CIFAR-10's 50k training images and its test batch, or the digits' (or a graph
    dataset's) search parts and their held-out test part; cut to ``data_limit`` examples per split if set. Raises
    DatasetError (one line) on a bad data path."""
    return config.load_data("train_test")


def baseline_for_budget(space, name: str, budget: int, layers: int) -> Tuple[nn.Module, int]:
    """The space's baseline ``name`` whose width (4 .. 1024, even; those the baseline takes) gives the parameter
    count closest to ``budget``; ``(model, width)``."""
    best = None
    for width in range(4, 1025, 2):
        try:
            n = count_parameters(space.baseline(name, width, layers))
        except ValueError:  # a width this baseline cannot have (GAT's heads)
            continue
        if best is None or abs(n - budget) < best[0]:
            best = (abs(n - budget), width)
        if n > budget:
            break
    return space.baseline(name, best[1], layers), best[1]


def _budget(spec: str) -> int:
    """``--param-budget``: an integer, or a run directory (or its summary.json) whose ``params`` it is."""
    if spec.isdigit():
        return int(spec)
    path = Path(spec) / "summary.json" if Path(spec).is_dir() else Path(spec)
    try:
        return int(json.loads(path.read_text())["params"])
    except (OSError, ValueError, KeyError, TypeError):
        raise TrainError(f"param_budget: expected an integer or a run directory with a summary.json, got {spec!r}") \
            from None


# ------------------------------------------------------------------------------------------------------------
# The task
# ------------------------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    test_acc: float
    test_loss: float
    params: int  # auxiliary head excluded, as the papers count
    genotype: object  # the architecture trained (None for a baseline)
    history: List[dict] = field(default_factory=list)  # the metrics rows
    model: Optional[nn.Module] = None
    model_name: str = "derived"  # "derived" (a genotype) or the baseline's name


_AUGMENT_STREAM = 0x61756720  # "aug ": keeps the augmentation stream apart from other uses of seed_for


def _description(config: TrainConfig, ctx, space, genotype, resume: bool) -> dict:
    """What is trained (``genotype.json``'s content): the genotype given, else the run directory's (resume), else a
    baseline at its budget, else ``config.genotype``'s; rank 0 decides and hands it to the others."""
    if genotype is not None:
        return dict(genotype=space.to_dict(genotype), source=config.genotype)
    chosen = None
    if ctx.is_main:
        saved = os.path.join(config.out, GENOTYPE_FILE)
        if resume and os.path.exists(saved):
            with open(saved) as f:
                chosen = json.load(f)
        elif config.baseline != "none":
            chosen = dict(baseline=config.baseline,
                          budget=_budget(config.param_budget) if config.param_budget else None)
        else:
            chosen = dict(genotype=space.to_dict(resolve_genotype(config.genotype, space)[0]), source=config.genotype)
    return distributed.broadcast_object(chosen)


def build_model(config: TrainConfig, space, description: dict) -> Tuple[nn.Module, object]:
    """``(network, architecture or None)`` of ``description``: the space's child of the genotype, or its baseline
    (its width chosen for the budget, written into ``description``). A genotype that cannot make a network raises
    :class:`TrainError`."""
    if "baseline" in description:
        name, budget = description["baseline"], description.get("budget")
        if budget:
            model, width = baseline_for_budget(space, name, budget, config.baseline_layers)
        else:
            width = space.baseline_width(name) or config.channels
            model = space.baseline(name, width, config.baseline_layers)
        description["width"] = width
        return model, None
    try:
        arch = space.from_dict(description["genotype"])
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        return space.child(arch, auxiliary=config.auxiliary_weight > 0, memory_format=memory_format), arch
    except ValueError as error:
        raise TrainError(f"genotype: {config.genotype}: {' '.join(str(error).split())}") from None


def _heads(out) -> Tuple[Tensor, Optional[Tensor]]:
    """``(logits, auxiliary logits or None)`` of a network's output (a DARTS network's pair, or logits alone)."""
    return out if isinstance(out, tuple) else (out, None)


class Retraining(Task):
    """A network trained from scratch: the recipe's optimiser with a cosine rate, the auxiliary loss, and on images
    augmentation and drop-path; evaluated on the test part every epoch."""

    def __init__(self, config: TrainConfig, data, model: nn.Module, ctx):
        train_set, test_set, info = data
        self.config, self.ctx = config, ctx
        self.model = model.to(ctx.device)
        self.params = count_parameters(self.model)
        if config.sync_bn:
            self.model = distributed.convert_sync_batchnorm(self.model, ctx)
        self.optimizer, self.schedule = config.weight_optimizer(self.model.parameters())
        self.images = info.kind == "images"
        # the last, incomplete batch is dropped: a batch of one image breaks the auxiliary head's BatchNorm (1x1)
        self.train_loader = train_loader(train_set, config.batch_size, config.seed, ctx, config.num_workers,
                                         drop_last=self.images)
        self.test_loader = eval_loader(test_set, config.batch_size, ctx, config.num_workers)
        self.crop = info.image_size // 8 if self.images and config.augment else 0
        self.flip = self.images and config.augment and config.dataset == "cifar10"
        self.cutout = cutout_length(config, info.image_size) if self.images else 0
        unused = getattr(self.model, "has_unused_parameters", lambda: False)()
        self.net = distributed.wrap_ddp(self.model, ctx, find_unused_parameters=unused)
        self.generator = None

    def begin_epoch(self, epoch: int) -> Dict[str, float]:
        self.generator = make_generator(_AUGMENT_STREAM, self.config.seed, epoch, self.ctx.rank)
        self.model.drop_path_prob = drop_path_prob(self.config.drop_path, epoch, self.config.epochs)
        self.net.train()
        return dict(lr=self.optimizer.param_groups[0]["lr"], drop_path_prob=self.model.drop_path_prob)

    def loss(self, x: Tensor, y: Tensor, epoch: int, step: int):
        if self.images:
            x = augment(x, self.generator, self.crop, self.flip, self.cutout)
        self.optimizer.zero_grad(set_to_none=True)
        logits, logits_aux = _heads(self.net(x))
        loss = F.cross_entropy(logits, y)
        if logits_aux is not None:
            loss = loss + self.config.auxiliary_weight * F.cross_entropy(logits_aux, y)
        return loss, logits, {}

    def end_epoch(self, epoch: int) -> Dict[str, object]:
        """The test figures, BatchNorm's statistics first re-estimated on ``bn_recalibration`` training batches where
        it is set (they stay: training goes on from them, and a resumed run does the same)."""
        self.schedule.step()
        model, device = self.model, self.ctx.device
        distributed.broadcast_buffers(model)  # every rank evaluates (and rank 0 saves) rank 0's BN statistics
        if self.config.bn_recalibration > 0:
            momenta = {m: m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
            recalibrate_bn(lambda x: _heads(model(x))[0], model, self.train_loader, self.config.bn_recalibration,
                           device)
            for m, momentum in momenta.items():
                m.momentum = momentum
            distributed.broadcast_buffers(model)
        test_loss, test_acc = evaluate(lambda x: _heads(model(x))[0], model, self.test_loader, device)
        return dict(test_loss=test_loss, test_acc=test_acc)

    def legend(self) -> str:
        handicaps = [what for what, on in (("augmented images", self.crop or self.flip or self.cutout),
                                           ("drop-path", self.config.drop_path > 0)) if on]
        return ("train_acc: the running accuracy over the epoch's batches, in training mode"
                + "".join(f", with {what}" for what in handicaps)
                + "; test_acc: after the epoch, in eval mode on clean images (so train_acc may sit below it)"
                if handicaps else "")

    def describe(self, row: dict) -> str:
        return (f"train_acc {row['train_acc']:.3f} test_acc {row['test_acc']:.3f} lr {row['lr']:.4f} "
                f"drop_path {row['drop_path_prob']:.3f}")


def train(config: TrainConfig, data, genotype=None, resume: bool = False, progress: bool = True,
          callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Trains (or, with ``resume``, continues) ``genotype`` (an architecture of ``config.space``) on ``data =
    (train, test, info)`` (:func:`load_train_data`). ``genotype`` defaults to the run directory's (resume), a
    baseline (``config.baseline``) or ``config.genotype``'s. ``callbacks``: run after every epoch on the main
    process (:func:`snas_fast.engine.loop.fit`), e.g. :func:`snas_fast.viz.callbacks.train_plots`, which
    ``snas-fast train`` passes."""
    config.validate()
    ctx = distributed.context(config.device)
    space = config.bound_space(data[2])
    description = _description(config, ctx, space, genotype, resume)
    seed_everything(config.seed)
    model, arch = build_model(config, space, description)  # before anything is written
    task = Retraining(config, data, model, ctx)
    rows = fit(task, resume, progress, callbacks, on_start=lambda run: run.write_json(GENOTYPE_FILE, description))
    last = rows[-1] if rows else {}
    name = description.get("baseline") or "derived"
    result = TrainResult(last.get("test_acc", math.nan), last.get("test_loss", math.nan), task.params, arch, rows,
                         task.model, name)
    RunDir(config.out, ctx).write_json("summary.json", dict(
        test_acc=result.test_acc, test_loss=result.test_loss, params=task.params,
        params_with_auxiliary=count_parameters(task.model, auxiliary=True), epochs=len(rows),
        genotype_source=description.get("source"), model=name, dataset=config.dataset,
        width=description.get("width", config.channels)))
    return result
