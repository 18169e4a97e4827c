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
    score is its accuracy on search-validation (the retraining's "test" part here). A candidate already trained
    there is read back only if it is this architecture trained with these settings (its ``genotype.json`` and
    ``config.json``); anything else there is trained again."""

    def __init__(self, config, data, folder: str):
        self.config, self.data, self.folder = config, data, folder

    def score(self, arch, index: int, callbacks: Sequence = ()) -> float:
        return self.trained_score(arch, f"candidate_{index:03d}", callbacks)

    def trained_score(self, arch, name: str, callbacks: Sequence = ()) -> float:
        """The score of ``arch`` trained in ``folder/name`` (read back if it is there)."""
        import dataclasses

        from ..engine.retrain import train

        out = os.path.join(self.folder, name)
        config = dataclasses.replace(self.config, out=out)
        if not self._done(config, arch):
            train(config, self.data, genotype=arch, progress=False, callbacks=callbacks)
        with open(os.path.join(out, "summary.json")) as f:
            return json.load(f)["test_acc"]  # the candidate's "test" part is search-validation

    def _done(self, config, arch) -> bool:
        """Whether ``config.out`` holds ``arch`` trained to the end with ``config``'s settings."""
        paths = [os.path.join(config.out, name) for name in ("summary.json", "genotype.json", "config.json")]
        if not all(os.path.exists(p) for p in paths):
            return False
        try:
            with open(paths[1]) as f:
                trained = json.load(f).get("genotype")
            with open(paths[2]) as f:
                settings = json.load(f)
        except (OSError, ValueError):
            return False
        space = config.space_object()
        return (trained == json.loads(json.dumps(space.to_dict(arch)))
                and settings == json.loads(json.dumps(config.to_dict())))


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
    with ``config``'s settings carried to the retraining recipe (its ``epochs``, network size, ...), each candidate
    under ``folder``; ``label``: the source its candidates' ``genotype.json`` names."""
    if space.lacks("query") is None:
        return TabularEvaluator(space)
    from ..engine.retrain import TrainConfig

    # overwrite: a candidate without its summary.json was interrupted and starts again
    return TrainedEvaluator(config.carried_to(TrainConfig, out=folder, genotype=label, overwrite=True), data, folder)
