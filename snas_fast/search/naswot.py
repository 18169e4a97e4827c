"""NASWOT (Mellor et al., ICML 2021, ``nas-without-training`` v2): a score of an untrained network from the binary
activation codes of one batch, and the strategy that keeps the best-scoring of N random genotypes.

:func:`score`: hooks on every module whose type name contains ``ReLU``. One forward and a backward of the logits
mark the ReLUs the backward reaches (those on the gradient path); a second forward of the batch then adds, for every
call of a marked ReLU, ``c cᵀ + (1 − c)(1 − c)ᵀ`` to ``K [B, B]`` (float64), where ``c [B, units]`` is 1 where the
ReLU's input is positive: ``K[i, j]`` counts the units where examples i and j agree. A ReLU called twice counts
twice. The network stays in train mode (BatchNorm on batch statistics). ``score = log|K|`` (``slogdet``, sign
ignored); a singular ``K`` scores ``-inf`` (ranked last, never an exception).

Only ReLU *modules* are seen. The evaluation networks (:class:`~snas_fast.NetworkCIFAR`) run every ReLU as a module, so
every one counts. The fused supernet's edges compute one shared ``relu(x)`` functionally (no module): scored on a
supernet, those ReLUs would not count, which is why the strategy scores the child networks, not the supernet.
The score is not normalised by depth: compare networks of one size (the strategy does).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import List, Sequence

import torch
from torch import Tensor, nn

from .._progress import bar
from ..engine import distributed
from ..engine.config import RunConfig, RunError, setting
from ..engine.rundir import RunDir
from ..engine.seeds import make_generator, seed_everything
from ..spaces import get_space
from .base import Strategy

__all__ = ["NaswotConfig", "NaswotError", "Naswot", "score"]


class NaswotError(RunError):
    """A NASWOT run that cannot start (bad setting); one-line message."""


def _relus(model: nn.Module) -> List[nn.Module]:
    return [m for m in model.modules() if "ReLU" in type(m).__name__]


def score(model: nn.Module, x: Tensor) -> float:
    """NASWOT's ``log|K|`` of ``model`` on the batch ``x [B, ...]`` (see the module docstring); ``-inf`` when ``K`` is
    singular. ``model``'s forward returns logits or a tuple whose first entry is the logits. Its parameters'
    gradients are left as they were (the backward that marks the ReLUs is discarded) and its mode is restored."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not torch.is_tensor(x) or x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"x: expected a batch tensor [B, ...] with B >= 1, got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    relus = _relus(model)
    reached = set()
    K = torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device)

    def mark(module):
        def hook(_module, _inputs, output):
            if torch.is_tensor(output) and output.requires_grad:
                output.register_hook(lambda grad: reached.add(id(module)))
        return hook

    def count(_module, inputs):
        if id(_module) not in reached:
            return
        c = (inputs[0].detach().flatten(1) > 0).to(torch.float64)
        K.add_(c @ c.t()).add_((1.0 - c) @ (1.0 - c).t())

    was_training = model.training
    grads = {p: p.grad for p in model.parameters()}
    model.train()
    handles = [m.register_forward_hook(mark(m)) for m in relus]
    try:
        out = model(x.clone().requires_grad_(x.is_floating_point()))
        logits = out[0] if isinstance(out, (tuple, list)) else out
        logits.backward(torch.ones_like(logits))
    finally:
        for h in handles:
            h.remove()
    handles = [m.register_forward_pre_hook(count) for m in relus]
    try:
        with torch.no_grad():
            model(x.clone())
    finally:
        for h in handles:
            h.remove()
        for p, g in grads.items():
            p.grad = g
        model.train(was_training)
    sign, logdet = torch.linalg.slogdet(K)
    return -math.inf if sign.item() == 0 or not math.isfinite(logdet.item()) else float(logdet.item())


@dataclass
class NaswotConfig(RunConfig):
    """Settings of a NASWOT search: ``archs`` random genotypes, each built as the evaluation network of
    ``layers`` cells and ``channels`` channels, scored on one training batch of ``batch_size``."""

    Error = NaswotError

    out: str = setting("runs/naswot", "run directory")
    archs: int = setting(100, "random genotypes to score")
    batch_size: int = setting(128, "examples in the scoring batch (NASWOT's 128)")
    layers: int = setting(5, "cells of each scored network")
    channels: int = setting(8, "channels of the first cells (C) of each scored network")
    epochs: int = 1  # no training

    def validate(self) -> None:
        super().validate()
        self.check_ints(("archs",), 1)


@dataclass
class NaswotResult:
    genotype: object
    score: float
    scores: List[float] = field(default_factory=list)  # per drawn genotype, in draw order
    genotypes: List[object] = field(default_factory=list)
    seconds: float = 0.0


class Naswot(Strategy):
    """Draw ``config.archs`` genotypes uniformly (:meth:`SearchSpace.random_genotype`), score each untrained child
    network by :func:`score`, keep the best. Writes ``scores.json`` (every genotype and score) and ``genotype.json``."""

    name = "naswot"
    config_class = NaswotConfig

    def load_data(self, config: NaswotConfig):
        return config.load_data()

    def run(self, config: NaswotConfig, data, resume: bool = False, progress: bool = True,
            callbacks: Sequence = ()) -> NaswotResult:
        config.validate()
        train_set, _, info = data
        ctx = distributed.context(config.device)
        space = get_space(config.space)
        gen = make_generator(config.seed, 0x6E617377)  # "nasw"
        idx = torch.randperm(len(train_set), generator=gen)[: config.batch_size]
        x = train_set.tensors[0][idx].to(ctx.device)
        start = time.perf_counter()
        genotypes, scores = [], []
        for k in bar(range(config.archs), "naswot", progress):
            g = space.random_genotype(gen)
            seed_everything(config.seed + k)  # each network's initialisation, reproducible
            net = space.network(g, config.channels, info.num_classes, config.layers, False,
                                in_channels=info.in_channels).to(ctx.device)
            genotypes.append(g)
            scores.append(score(net, x))
        seconds = time.perf_counter() - start
        best = max(range(len(scores)), key=lambda i: scores[i])
        run = RunDir(config.out, ctx)
        run.start(config.to_dict())
        run.write_json("scores.json", [dict(genotype=g.to_dict(), score=s) for g, s in zip(genotypes, scores)])
        run.write_json("genotype.json", dict(genotype=genotypes[best].to_dict(), score=scores[best],
                                             source="naswot"))
        return NaswotResult(genotypes[best], scores[best], scores, genotypes, seconds)
