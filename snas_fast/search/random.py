"""Random search (the baseline Bag of Tricks asks every method to beat): N genotypes drawn uniformly from the top-2
form (:meth:`SearchSpace.random_genotype`), each trained briefly with the retraining recipe
(:func:`snas_fast.engine.retrain.train`) on search-train and scored by its accuracy on search-validation; the best
is the result. The test part is never touched. Each candidate is its own run directory under ``out``; a finished
one is kept (``--resume`` and reruns skip it)."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import List, Sequence

from ..engine import distributed
from ..engine.config import RunConfig, RunError, setting
from ..engine.retrain import TrainConfig, train
from ..engine.rundir import RunDir
from ..engine.seeds import make_generator
from ..spaces import get_space
from .base import Strategy

__all__ = ["RandomConfig", "RandomError", "RandomResult", "RandomSearch", "train_score"]


class RandomError(RunError):
    """A random search that cannot start (bad setting); one-line message."""


@dataclass
class RandomConfig(RunConfig):
    """``archs`` random genotypes, each trained ``epochs`` epochs as a network of ``layers`` cells and ``channels``
    channels with the retraining recipe's other settings (:class:`~snas_fast.engine.retrain.TrainConfig`)."""

    Error = RandomError

    out: str = setting("runs/random", "run directory")
    archs: int = setting(8, "random genotypes to train and score")
    epochs: int = setting(3, "training epochs of each candidate")
    layers: int = setting(5, "cells of each candidate network")
    channels: int = setting(8, "channels of the first cells (C) of each candidate")
    drop_path: float = setting(0.0, "drop-path of the candidates' training")

    def validate(self) -> None:
        super().validate()
        self.check_ints(("archs",), 1)

    def train_config(self, out: str) -> TrainConfig:
        """The retraining recipe's settings for one candidate, with this run's shared ones."""
        # overwrite: a candidate without its summary.json was interrupted and starts again
        return self.carried_to(TrainConfig, out=out, genotype="random", overwrite=True)


@dataclass
class RandomResult:
    genotype: object
    score: float  # search-validation accuracy after the short training
    scores: List[float] = field(default_factory=list)
    genotypes: List[object] = field(default_factory=list)
    seconds: float = 0.0


def train_score(config: TrainConfig, data, genotype, callbacks: Sequence = ()) -> float:
    """Search-validation accuracy of ``genotype`` trained from scratch by ``config`` on ``data`` = (search-train,
    search-validation, info); a candidate already trained in ``config.out`` (its ``summary.json``) is read back."""
    summary = os.path.join(config.out, "summary.json")
    if not os.path.exists(summary):
        train(config, data, genotype=genotype, progress=False, callbacks=callbacks)
    with open(summary) as f:
        return json.load(f)["test_acc"]  # the candidate's "test" part is search-validation


class RandomSearch(Strategy):
    name = "random"
    config_class = RandomConfig

    def load_data(self, config: RandomConfig):
        return config.load_data()

    def run(self, config: RandomConfig, data, resume: bool = False, progress: bool = True,
            callbacks: Sequence = ()) -> RandomResult:
        config.validate()
        ctx = distributed.context(config.device)
        space = get_space(config.space)
        gen = make_generator(config.seed, 0x72616E64)  # "rand"
        run = RunDir(config.out, ctx)
        if not (resume and os.path.exists(run.config_path)):
            run.start(config.to_dict())
        genotypes, scores, seconds = [], [], 0.0
        for k in range(config.archs):
            g = space.random_genotype(gen)
            start = time.perf_counter()
            scores.append(train_score(config.train_config(run.path(f"candidate_{k:03d}")), data, g, callbacks))
            seconds += time.perf_counter() - start
            genotypes.append(g)
            if progress and ctx.is_main:
                print(f"candidate {k + 1}/{config.archs}: search-validation acc {scores[-1]:.4f}", flush=True)
        best = max(range(len(scores)), key=lambda i: scores[i])
        run.write_json("scores.json", [dict(genotype=g.to_dict(), val_acc=s) for g, s in zip(genotypes, scores)])
        run.write_json("genotype.json", dict(genotype=genotypes[best].to_dict(), score=scores[best],
                                             source="random"))
        return RandomResult(genotypes[best], scores[best], scores, genotypes, seconds)
