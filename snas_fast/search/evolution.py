"""Regularized evolution (Real, Aggarwal, Huang, Le, AAAI 2019, "aging evolution"): the standard query-based baseline
of NAS-Bench-101/201 and NASLib. A population of ``population`` architectures, the first drawn from the space's prior;
then each cycle draws ``sample`` members uniformly (without replacement), mutates the best of them
(:meth:`SearchSpace.mutate <snas_fast.spaces.SearchSpace.mutate>`: one decision changed) into a child not evaluated
before (mutated again otherwise, up to 100 times), evaluates it and removes the oldest member. With age-based
removal the population is always the last ``population`` architectures evaluated, so the search is a function of
its history alone (:meth:`Evolution.propose`): a resumed run proposes what an uninterrupted one does. ``archs``
evaluations in all, the initial population included; the best ever evaluated is the result."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..engine.config import RunError, setting
from .base import CandidateSearch, unseen
from .random import SampledConfig

__all__ = ["Evolution", "EvolutionConfig", "EvolutionError"]


class EvolutionError(RunError):
    """A regularized evolution that cannot start (bad setting); one-line message."""


@dataclass
class EvolutionConfig(SampledConfig):
    """``archs`` evaluations: a ``population`` drawn at random, then cycles of tournament (``sample``) and
    mutation."""

    Error = EvolutionError

    out: str = setting("runs/evolution", "run directory")
    archs: int = setting(100, "architectures evaluated in all (the initial population included)")
    population: Optional[int] = setting(None, "population size (default: 50, Real et al.'s on NAS-Bench-101, or half "
                                              "of --archs when that is smaller, so that some cycles evolve)",
                                        kind=int)
    sample: Optional[int] = setting(None, "members drawn per cycle, the best of them mutated (default: 10, Real et "
                                          "al.'s, or a fifth of the population when that is smaller, at least 2)",
                                    kind=int)

    def default_sources(self):
        archs = self.archs if type(self.archs) is int else 2  # a bad value: validate() names it
        population = self.population if type(self.population) is int else min(50, max(archs // 2, 1))
        return [dict(population=population, sample=min(10, max(population // 5, 2), population))] + \
            super().default_sources()

    def validate(self) -> None:
        super().validate()
        self.check_ints(("population", "sample"), 1)
        if self.sample > self.population:
            raise EvolutionError(f"sample: expected at most population = {self.population}, got {self.sample}")


class Evolution(CandidateSearch):
    name = "evolution"
    config_class = EvolutionConfig
    needs = ("evaluate", "sample", "mutate")
    stream = 0x65766F6C  # "evol"

    def propose(self, config: EvolutionConfig, space, history, generator):
        if len(history) < config.population:
            return unseen(space, history, lambda: space.sample(generator))
        population = history[-config.population:]  # age-based removal: the oldest left first
        drawn = torch.randperm(len(population), generator=generator)[: config.sample].tolist()
        parent = max(drawn, key=lambda i: population[i][1])
        return unseen(space, history, lambda: space.mutate(population[parent][0], generator))
