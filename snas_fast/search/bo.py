"""Bayesian optimisation on any space (``bo``): Auto-Keras's GP with UCB (:mod:`snas_fast.search.bayes`, the kernel
of ``morph-bo``) generalised from network morphisms to every space through its :meth:`encode
<snas_fast.spaces.SearchSpace.encode>` (a fixed-length vector) or, where it has none, its :meth:`distance
<snas_fast.spaces.SearchSpace.distance>` (a Bourgain embedding of it, Auto-Keras's way with the edit distance).

``initial`` architectures are drawn from the space's prior; then every step fits the GP
(:class:`~snas_fast.search.bayes.FeatureSurrogate`: a Laplace kernel on the features, its lengthscale and noise by
the marginal likelihood) to every score so far and evaluates the candidate of highest UCB (β = 2.576) among
``candidates`` new ones: mutations of the ten best so far and draws from the prior, half each (NASLib's and
BANANAS's acquisition search by mutation). The lengthscale and noise are chosen after every evaluation up to 50,
then after every tenth (:func:`choice_point`). Every random choice is drawn from the seed's generator and the
history, so a resumed run proposes what an uninterrupted one does."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..engine.config import RunError, setting
from .base import CandidateSearch, seen_key
from .bayes import BETA, BourgainEmbedding, FeatureSurrogate, l1_distances
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


#: the GP's lengthscale and noise are chosen again by the marginal likelihood after every evaluation up to this
#: many, then after every tenth (a function of the history alone, so a resumed run chooses the same)
CHOOSE_EVERY_UP_TO = 50


def choice_point(n: int) -> int:
    """The number of evaluations whose history chose the GP's hyperparameters used at ``n`` evaluations."""
    return n if n <= CHOOSE_EVERY_UP_TO else n - n % 10


def features(space, archs, observed, cache: Optional[dict] = None) -> np.ndarray:
    """``[len(archs), D]``: the space's encodings (kept in ``cache`` by :func:`seen_key` when given), or a Bourgain
    embedding of its distance with anchors among ``observed``."""
    if space.lacks("encode") is None:
        if cache is None:
            cache = {}
        rows = []
        for a in archs:
            key = seen_key(space, a)
            if key not in cache:
                cache[key] = space.encode(a).double().numpy()
            rows.append(cache[key])
        return np.stack(rows)
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
        x = features(space, observed + candidates, observed, self.encodings)
        at = choice_point(len(history))
        if self.hyper is None or self.hyper[0] != at:  # the grid's choice on the history of its choice point
            y = np.asarray(metrics[:at])
            self.hyper = (at, FeatureSurrogate.choose(l1_distances(x[:at], x[:at]), y))
        surrogate = FeatureSurrogate(x[: len(observed)], metrics, config.beta, self.hyper[1])
        return candidates[int(np.argmax(surrogate.acquire(x[len(observed):])))]

    def start(self, config, space, generator) -> None:
        self.encodings, self.hyper = {}, None
