"""Bayesian optimisation on any space (``bo``): Auto-Keras's GP with UCB (:mod:`snas_fast.search.bayes`, the kernel
of ``morph-bo``) generalised from network morphisms to every space through its :meth:`encode
<snas_fast.spaces.SearchSpace.encode>` (a fixed-length vector) or, where it has none, its :meth:`distance
<snas_fast.spaces.SearchSpace.distance>` (a Bourgain embedding of it, Auto-Keras's way with the edit distance).

``initial`` architectures are drawn from the space's prior; then every step fits the GP
(:class:`~snas_fast.search.bayes.FeatureSurrogate`: a Laplace kernel on the features, its lengthscale and noise by
the marginal likelihood) to every score so far and evaluates the candidate of highest UCB (β = 2.576) among
``candidates`` new ones: mutations of the ten best so far and draws from the prior, half each (NASLib's and
BANANAS's acquisition search by mutation). Every random choice is drawn from the seed's generator and the history,
so a resumed run proposes what an uninterrupted one does."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..engine.config import RunError, setting
from .base import CandidateSearch, seen_key
from .bayes import BETA, BourgainEmbedding, FeatureSurrogate
from .random import SampledConfig

__all__ = ["BayesianOptimisation", "BoConfig", "BoError", "features"]


class BoError(RunError):
    """A Bayesian optimisation that cannot start (bad setting); one-line message."""


@dataclass
class BoConfig(SampledConfig):
    """``archs`` evaluations, the first ``initial`` drawn at random."""

    Error = BoError

    out: str = setting("runs/bo", "run directory")
    archs: int = setting(30, "architectures evaluated in all (the initial ones included)")
    initial: Optional[int] = setting(None, "architectures drawn at random before the GP proposes (default: 10, or "
                                           "half of --archs when that is smaller)", kind=int)
    candidates: int = setting(100, "new architectures scored by UCB per step (half mutations of the best ten, half "
                                   "draws from the prior)")
    beta: float = setting(BETA, "UCB's weight of the GP's standard deviation (Auto-Keras: 2.576)")

    def default_sources(self):
        archs = self.archs if type(self.archs) is int else 2  # a bad value: validate() names it
        return [dict(initial=min(10, max(archs // 2, 1)))] + super().default_sources()

    def validate(self) -> None:
        super().validate()
        self.check_ints(("initial", "candidates"), 1)
        self.check_numbers(("beta",), 0.0)


def features(space, archs, observed) -> np.ndarray:
    """``[len(archs), D]``: the space's encodings, or a Bourgain embedding of its distance with anchors among
    ``observed``."""
    if space.lacks("encode") is None:
        return torch.stack([space.encode(a) for a in archs]).double().numpy()
    embedding = BourgainEmbedding(list(observed), distance=lambda x, ys: np.array([space.distance(x, y) for y in ys]))
    return embedding.embed(list(archs))


class BayesianOptimisation(CandidateSearch):
    name = "bo"
    config_class = BoConfig
    needs = ("evaluate", "sample", "distance")
    stream = 0x626F2020  # "bo  "

    def propose(self, config: BoConfig, space, history, generator):
        if len(history) < config.initial:
            return space.sample(generator)
        seen = {seen_key(space, a) for a, _ in history}
        best = sorted(history, key=lambda h: -h[1] if math.isfinite(h[1]) else math.inf)[:10]
        mutable = space.lacks("mutate") is None
        candidates, keys = [], set()
        for n in range(config.candidates):
            if mutable and n % 2 == 0:
                arch = space.mutate(best[int(torch.randint(len(best), (1,), generator=generator))][0], generator)
            else:
                arch = space.sample(generator)
            key = seen_key(space, arch)
            if key not in seen and key not in keys:
                keys.add(key)
                candidates.append(arch)
        if not candidates:
            return space.sample(generator)
        observed = [a for a, _ in history]
        finite = [s for _, s in history if math.isfinite(s)]
        floor = min(finite) if finite else 0.0
        metrics = [s if math.isfinite(s) else floor for _, s in history]
        x = features(space, observed + candidates, observed)
        surrogate = FeatureSurrogate(x[: len(observed)], metrics, config.beta)
        return candidates[int(np.argmax(surrogate.acquire(x[len(observed):])))]
