"""How good is an architecture? One question, answered by an :class:`Evaluator` (NASLib's ``query``): a strategy
that proposes architectures asks it and never cares how the answer is found.

- :class:`TrainedEvaluator`: the architecture's network trained from scratch for a few epochs with the retraining
  recipe (:func:`snas_fast.engine.retrain.train`) on search-train, scored by its search-validation accuracy; each
  candidate in its own run directory, read back when it is there already (resume, reruns);
- :class:`TabularEvaluator`: a lookup of the search metric in a published benchmark table
  (:meth:`SearchSpace.query <snas_fast.spaces.SearchSpace.query>`), for the spaces a table backs;
- :class:`NaswotEvaluator`: NASWOT's training-free score of the untrained network
  (:func:`snas_fast.search.naswot.score`).

The test part is never read: a search's answers come from search-validation (or a table's validation metric).
"""
from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from typing import Sequence

import torch

__all__ = ["Evaluator", "NaswotEvaluator", "TabularEvaluator", "TrainedEvaluator", "evaluator_for"]


class Evaluator(ABC):
    """``score(arch, index) -> float``: higher is better; ``index`` numbers the candidates of one search."""

    @abstractmethod
    def score(self, arch, index: int, callbacks: Sequence = ()) -> float:
        """The score of ``arch``, the search's ``index``-th candidate."""


class TrainedEvaluator(Evaluator):
    """Short training: ``config`` (a :class:`~snas_fast.engine.retrain.TrainConfig`, its ``out`` unused) trains each
    candidate from scratch on ``data = (search-train, search-validation, info)`` in ``folder/candidate_<k>``; the
    score is its accuracy on search-validation (the retraining's "test" part here)."""

    def __init__(self, config, data, folder: str):
        self.config, self.data, self.folder = config, data, folder

    def score(self, arch, index: int, callbacks: Sequence = ()) -> float:
        return self.trained_score(arch, f"candidate_{index:03d}", callbacks)

    def trained_score(self, arch, name: str, callbacks: Sequence = ()) -> float:
        """The score of ``arch`` trained in ``folder/name`` (read back if it is there)."""
        import dataclasses

        from ..engine.retrain import train

        out = os.path.join(self.folder, name)
        summary = os.path.join(out, "summary.json")
        if not os.path.exists(summary):
            train(dataclasses.replace(self.config, out=out), self.data, genotype=arch, progress=False,
                  callbacks=callbacks)
        with open(summary) as f:
            return json.load(f)["test_acc"]  # the candidate's "test" part is search-validation


class TabularEvaluator(Evaluator):
    """A lookup of ``metric`` (the search's: ``"valid"``) in the space's table."""

    def __init__(self, space, metric: str = "valid"):
        self.space, self.metric = space, metric

    def score(self, arch, index: int, callbacks: Sequence = ()) -> float:
        return float(self.space.query(arch, self.metric))


class NaswotEvaluator(Evaluator):
    """NASWOT's ``log|K|`` of the space's untrained child network on one batch of ``data``'s search-train part
    (``batch`` examples drawn from ``generator``); the network of candidate ``k`` is initialised from seed
    ``seed + k``."""

    def __init__(self, space, data, batch: int, seed: int, generator: torch.Generator, device):
        from .. import data as datasets

        train_set = data[0]
        idx = torch.randperm(len(train_set), generator=generator)[:batch]
        self.x = datasets.batch_of(train_set, idx.tolist()).to(device)
        self.space, self.seed, self.device = space, seed, device

    def score(self, arch, index: int, callbacks: Sequence = ()) -> float:
        from ..engine.seeds import seed_everything
        from .naswot import score

        seed_everything(self.seed + index)  # each network's initialisation, reproducible
        return score(self.space.child(arch).to(self.device), self.x)


def evaluator_for(config, space, data, folder: str, label: str) -> Evaluator:
    """The evaluator of a search on ``space``: a table's lookup where one backs the space, else short training
    with ``config``'s retraining recipe (its ``epochs``, network size, ...; :meth:`train_config`), each candidate
    under ``folder``; ``label``: the source its candidates' ``genotype.json`` names."""
    if space.lacks("query") is None:
        return TabularEvaluator(space)
    from ..engine.retrain import TrainConfig

    # overwrite: a candidate without its summary.json was interrupted and starts again
    return TrainedEvaluator(config.carried_to(TrainConfig, out=folder, genotype=label, overwrite=True), data, folder)
