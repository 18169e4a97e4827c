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

On graphs (a PyG ``Batch`` for ``x``) the examples are the rows of the logits: the nodes of a node task, the graphs
of a graph task; a ReLU call with another number of rows (edges, or nodes before a graph task's pooling) does not
count. That is this package's extension of NASWOT, which was defined on images. ``K``'s rank is at most twice the
units counted, so it is singular (every score ``-inf``) when the batch holds more examples than that, or when
examples share their codes: on a graph task only the classifier's ReLU counts, on a node task only the ReLUs of
node rows (measured on digits-graph at width 32: every architecture scored ``-inf``, with batches of 128 and of 32
graphs). The strategy then warns (:class:`~snas_fast.search.base.SearchWarning`): its pick is the first draw.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn

from ..engine import distributed
from ..engine.config import NetworkConfig, RunError, setting
from .base import CandidateSearch

__all__ = ["NaswotConfig", "NaswotError", "Naswot", "score"]


class NaswotError(RunError):
    """A NASWOT run that cannot start (bad setting); one-line message."""


def _relus(model: nn.Module) -> List[nn.Module]:
    return [m for m in model.modules() if "ReLU" in type(m).__name__]


def score(model: nn.Module, x) -> float:
    """NASWOT's ``log|K|`` of ``model`` on the batch ``x [B, ...]`` (or a PyG ``Batch`` of graphs; see the module
    docstring); ``-inf`` when ``K`` is singular. ``model``'s forward returns logits ``[B, classes]`` or a tuple whose
    first entry is the logits. Its parameters' gradients are left as they were (the backward that marks the ReLUs is
    discarded) and its mode is restored."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    graphs = not torch.is_tensor(x) and hasattr(x, "edge_index")
    if not graphs and (not torch.is_tensor(x) or x.dim() < 2 or x.shape[0] < 1):
        raise ValueError(f"x: expected a batch tensor [B, ...] with B >= 1 or a batch of graphs, got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    relus = _relus(model)
    reached = set()
    K = None

    def mark(module):
        def hook(_module, _inputs, output):
            if torch.is_tensor(output) and output.requires_grad:
                output.register_hook(lambda grad: reached.add(id(module)))
        return hook

    def count(_module, inputs):
        if id(_module) not in reached or inputs[0].shape[0] != K.shape[0]:
            return
        c = (inputs[0].detach().flatten(1) > 0).to(torch.float64)
        K.add_(c @ c.t()).add_((1.0 - c) @ (1.0 - c).t())

    was_training = model.training
    grads = {p: p.grad for p in model.parameters()}
    model.train()
    handles = [m.register_forward_hook(mark(m)) for m in relus]
    try:
        out = model(x.clone() if graphs else x.clone().requires_grad_(x.is_floating_point()))
        logits = out[0] if isinstance(out, (tuple, list)) else out
        logits.backward(torch.ones_like(logits))
        K = torch.zeros(logits.shape[0], logits.shape[0], dtype=torch.float64, device=logits.device)
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
class NaswotConfig(NetworkConfig):
    """Settings of a NASWOT search: ``archs`` architectures of the space, each built as its untrained child network
    (the space's search size: ``layers`` cells, ``channels`` channels on DARTS's), scored on one training batch of
    ``batch_size``."""

    Error = NaswotError
    roles = ("search",)

    out: str = setting("runs/naswot", "run directory")
    archs: int = setting(100, "architectures to score")
    batch_size: Optional[int] = setting(128, "examples in the scoring batch (NASWOT's 128)", kind=int)

    def validate(self) -> None:
        super().validate()
        self.check_ints(("archs",), 1)


class Naswot(CandidateSearch):
    """Draw ``config.archs`` architectures from the space's prior, score each untrained child network by
    :func:`score` (:class:`~snas_fast.search.evaluators.NaswotEvaluator`), keep the best. Writes ``scores.json``
    (every architecture and score) and ``genotype.json``."""

    name = "naswot"
    config_class = NaswotConfig
    needs = ("data", "sample", "child")
    stream = 0x6E617377  # "nasw"
    score_key = "score"

    def evaluator(self, config, space, data, run, generator):
        from .evaluators import NaswotEvaluator

        return NaswotEvaluator(space, data, config.batch_size, config.seed, generator,
                               distributed.context(config.device).device)

    def propose(self, config, space, history, generator):
        return space.sample(generator)
