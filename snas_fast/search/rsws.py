"""Random search with weight sharing (Li & Talwalkar 2019, ``randomNAS_release``): the space's supernet is trained
with one architecture drawn from the space's prior per step, the zero op included (:meth:`SearchSpace.sample
<snas_fast.spaces.SearchSpace.sample>` with ``zero=True``; on DARTS's: per intermediate node two distinct inputs and
an op from all the primitives, normal and reduction cells apart), only that path running (the supernet's hard
path). Then ``archs`` architectures are drawn and each is scored by its accuracy with the shared weights on
``minibatches`` validation batches in eval mode; the ``top`` best are scored again on the whole search-validation
split, and the best of those is the result.

The training is a :class:`~snas_fast.engine.loop.Task` of the one loop: the same checkpoint, resume, NaN stop and
run directory as SNAS's search.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import data as datasets
from .._progress import bar
from ..engine import distributed
from ..engine.config import RunError, TrainingConfig, setting
from ..engine.data import eval_loader, train_loader
from ..engine.loop import Task, evaluate, fit
from ..engine.rundir import RunDir
from ..engine.seeds import make_generator, seed_everything
from .base import Strategy

__all__ = ["RswsConfig", "RswsError", "RswsResult", "Rsws", "SharedWeightsConfig", "arch_weights"]


class RswsError(RunError):
    """A weight-sharing random search that cannot start or go on; one-line message."""


@dataclass
class SharedWeightsConfig(TrainingConfig):
    """A supernet trained one path per step (``epochs``, the weights' optimiser with a cosine rate down to
    ``lr_min``), at the space's search size: what :class:`RswsTraining` reads."""

    roles = ("search", "supernet")

    epochs: int = setting(20, "epochs of supernet training, one path per step")
    lr_min: float = setting(0.001, "weights: final learning rate")


@dataclass
class RswsConfig(SharedWeightsConfig):
    """The supernet's training, paths drawn uniformly, and the selection (``archs`` x ``minibatches``, then the
    ``top`` re-scored on the whole validation split)."""

    Error = RswsError

    out: str = setting("runs/rsws", "run directory")
    archs: int = setting(1000, "architectures scored with the shared weights")
    minibatches: int = setting(10, "validation batches that score each architecture")
    top: int = setting(10, "best architectures scored again on the whole validation split")

    def validate(self) -> None:
        super().validate()
        self.check_ints(("archs", "minibatches", "top"), 1)


def arch_weights(model, space, arch) -> Tuple[List[Tensor], List[List[int]]]:
    """The one-hot weights of ``arch`` in ``model`` (one per ``log_alpha``) and their chosen columns: what
    :meth:`~snas_fast.spaces.OneShot.run_arch` takes to run that architecture alone with the shared weights
    (edges a top-2 cell does not list run ``none``)."""
    device = model.arch_parameters()[0].device
    weights = [w.to(device) for w in space.arch_weights(arch)]
    return weights, [w.argmax(-1).tolist() for w in weights]


class RswsTraining(Task):
    """The supernet trained one uniformly drawn path per step (weights only; there are no architecture weights)."""

    nan_hint = "lower the learning rate"

    def __init__(self, config: SharedWeightsConfig, data, ctx, space):
        train_set, val_set, info = data
        self.config, self.ctx, self.space = config, ctx, space
        seed_everything(config.seed)
        self.model = space.supernet().to(ctx.device)
        self.train_loader = train_loader(train_set, config.batch_size, config.seed, ctx, config.num_workers)
        self.val_set = val_set
        self.optimizer, self.schedule = config.weight_optimizer(self.model.weight_parameters())
        # a drawn path leaves the other candidates unrun
        self.net = distributed.wrap_ddp(_ArchForward(self.model), ctx, find_unused_parameters=True)
        self.generator = None

    def begin_epoch(self, epoch: int) -> Dict[str, float]:
        # the paths of an epoch: a function of (seed, epoch) alone, the same on every rank
        self.generator = make_generator(self.config.seed, epoch, 0x72737773)  # "rsws"
        self.net.train()
        return dict(lr=self.optimizer.param_groups[0]["lr"])

    def draw(self):
        """The path of the next step: an architecture drawn from the space's prior, the zero op included."""
        return self.space.sample(self.generator, zero=True)

    def loss(self, x: Tensor, y: Tensor, epoch: int, step: int):
        weights, choices = arch_weights(self.model, self.space, self.draw())
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.net(x, weights, choices)
        return F.cross_entropy(logits, y), logits, {}

    def clipped_parameters(self):
        return self.model.weight_parameters()

    def end_epoch(self, epoch: int) -> Dict[str, object]:
        self.schedule.step()
        distributed.broadcast_buffers(self.model)
        return {}


class _ArchForward(nn.Module):
    """``forward(x, weights, choices) = model.run_arch(...)``: what DistributedDataParallel wraps."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, weights, choices=None):
        return self.model.run_arch(x, weights, choices)


@dataclass
class RswsResult:
    genotype: object
    score: float  # search-validation accuracy with the shared weights
    scores: List[float] = field(default_factory=list)  # minibatch accuracy of every scored architecture
    genotypes: List[object] = field(default_factory=list)
    model: object = None
    seconds: float = 0.0


def shared_weight_accuracy(model, space, arch, loader, device, batches: int = 0) -> float:
    """Accuracy of ``arch`` (an architecture of ``space``) run with ``model``'s shared weights in eval mode on
    ``loader`` (its first ``batches`` batches; 0: all)."""
    weights, choices = arch_weights(model, space, arch)

    def batched():
        for i, batch in enumerate(loader):
            if batches and i >= batches:
                return
            yield batch

    return evaluate(lambda x: model.run_arch(x, weights, choices), model, batched(), device)[1]


class Rsws(Strategy):
    name = "rsws"
    config_class = RswsConfig
    needs = ("data", "supernet")

    def run(self, config: RswsConfig, data, resume: bool = False, progress: bool = True,
            callbacks: Sequence = ()) -> RswsResult:
        config.validate()
        ctx = distributed.context(config.device)
        space = self.space_for(config, data[2])
        start = time.perf_counter()
        task = RswsTraining(config, data, ctx, space)
        fit(task, resume, progress, callbacks)
        model, device = task.model, ctx.device
        # selection: a shuffled validation order fixed by the seed, so every architecture sees the same batches
        gen = make_generator(config.seed, 0x73656C65)  # "sele"
        val = task.val_set
        order = torch.randperm(len(val), generator=gen)
        loader = eval_loader(datasets.subset(val, order.tolist()), config.batch_size, ctx, config.num_workers)
        genotypes, scores = [], []
        for _ in bar(range(config.archs), "rsws selection", progress):
            g = space.sample(gen, zero=True)
            genotypes.append(g)
            scores.append(shared_weight_accuracy(model, space, g, loader, device, config.minibatches))
        top = sorted(range(len(scores)), key=lambda i: -scores[i])[: config.top]
        full = {i: shared_weight_accuracy(model, space, genotypes[i], loader, device) for i in top}
        best = max(top, key=lambda i: full[i])
        seconds = time.perf_counter() - start
        run = RunDir(config.out, ctx)
        run.write_json("selection.json", [dict(genotype=space.to_dict(genotypes[i]), minibatch_acc=scores[i],
                                               val_acc=full[i]) for i in top])
        run.write_json("genotype.json", dict(genotype=space.to_dict(genotypes[best]), score=full[best],
                                             source="rsws"))
        return RswsResult(genotypes[best], full[best], scores, genotypes, model, seconds)
