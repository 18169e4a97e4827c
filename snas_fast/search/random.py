"""Random search (the baseline Bag of Tricks asks every method to beat): ``archs`` distinct architectures drawn
from the space's prior (:meth:`SearchSpace.sample <snas_fast.spaces.SearchSpace.sample>`; DARTS's top-2 form), each
scored by the evaluator (trained ``epochs`` epochs with the retraining recipe on search-train and scored on
search-validation, or looked up in a table); the best is the result. The test part is never touched. Each candidate
is its own run directory under ``out``; a finished one is kept (``--resume`` and reruns skip it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..engine.config import RunError, TrainingConfig, setting
from .base import CandidateResult, CandidateSearch, unseen

__all__ = ["RandomConfig", "RandomError", "RandomResult", "RandomSearch", "SampledConfig"]


class RandomError(RunError):
    """A random search that cannot start (bad setting); one-line message."""


@dataclass
class SampledConfig(TrainingConfig):
    """A strategy that evaluates ``archs`` architectures, each trained ``epochs`` epochs as the network of the
    space's search size (its ``layers``, ``channels``) with the retraining recipe's other settings
    (:class:`~snas_fast.engine.retrain.TrainConfig`)."""

    roles = ("search",)

    archs: int = setting(8, "architectures to evaluate")
    epochs: int = setting(3, "training epochs of each candidate")
    drop_path: Optional[float] = setting(0.0, "drop-path of the candidates' training", kind=float)

    def validate(self) -> None:
        super().validate()
        self.check_ints(("archs",), 1)


@dataclass
class RandomConfig(SampledConfig):
    Error = RandomError

    out: str = setting("runs/random", "run directory")


#: The result of random search (and of every candidate strategy).
RandomResult = CandidateResult


class RandomSearch(CandidateSearch):
    name = "random"
    config_class = RandomConfig
    needs = ("evaluate", "sample")
    stream = 0x72616E64  # "rand"

    def propose(self, config, space, history, generator):
        """A draw from the prior not evaluated before (:meth:`SearchSpace.key
        <snas_fast.spaces.SearchSpace.key>`; a table's isomorphic architectures are one), or, after 100 draws that
        all were, the last of them."""
        return unseen(space, history, lambda: space.sample(generator))
