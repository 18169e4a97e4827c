"""The :class:`Strategy` protocol, what every search strategy offers the command line and the comparisons, so that any
strategy runs on any space with the same budget, loop and retraining; and :class:`CandidateSearch`, the run
skeleton of the strategies that propose architectures and ask an evaluator how good each is (random search,
NASWOT, regularized evolution, Bayesian optimisation), written once.

A strategy sees a space only through :class:`~snas_fast.spaces.SearchSpace` and says what it needs of it
(``needs``: :data:`~snas_fast.spaces.CAPABILITIES`); on a space that lacks one it is refused in one line
(:meth:`Strategy.refusal`) before anything runs.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .._progress import bar
from ..engine import distributed
from ..engine.rundir import RunDir
from ..engine.seeds import make_generator

__all__ = ["CandidateResult", "CandidateSearch", "NEEDS", "SearchWarning", "Strategy"]

#: What each capability a strategy may need is, in the words of a refusal.
NEEDS = {"data": "data to train on", "decisions": "categorical decisions", "sample": "a prior to draw from",
         "mutate": "a mutation", "encode": "a fixed-length encoding",
         "distance": "an encoding or a distance between architectures", "child": "networks it can train",
         "supernet": "a one-shot supernet", "query": "a benchmark table",
         "morphisms": "function-preserving morphisms"}


class SearchWarning(UserWarning):
    """A search that ran but did not search: a supernet's derived architecture is that of the untrained supernet, or
    few of its rows left uniform (:func:`snas_fast.search.convergence.unmoved_warning`); or no candidate a strategy
    evaluated scored a finite value, so its pick is merely the first."""


class Strategy(ABC):
    """A search strategy (SNAS's is :class:`snas_fast.search.snas.Snas`)."""

    #: its name on the command line
    name: str = ""
    #: its settings, a RunConfig subclass whose fields carry their flags
    config_class: type = object
    #: named changes of its settings (ablations): ``snas-fast compare --strategies <name>+<variant>`` runs the
    #: strategy with ``config_class(**variants[variant])`` over its defaults
    variants: Dict[str, Dict[str, object]] = {}
    #: what it needs of a space (:data:`~snas_fast.spaces.CAPABILITIES`); ``"evaluate"``: networks to train or a
    #: table to query (an :class:`~snas_fast.search.evaluators.Evaluator`)
    needs: Tuple[str, ...] = ()

    def missing(self, space) -> Optional[Tuple[str, str]]:
        """``(need, why)``: the first of :attr:`needs` that ``space`` lacks and the space's reason, or None."""
        for need in self.needs:
            if need == "evaluate":
                if space.lacks("query") is None:
                    continue
                need = "child" if space.lacks("data") is None else "data"
            why = space.lacks(need)
            if why:
                return need, why
        return None

    def refusal(self, space) -> Optional[str]:
        """Why this strategy cannot run on ``space``, in one line, or None when it can."""
        missing = self.missing(space)
        return None if missing is None else f"{self.name} needs {NEEDS[missing[0]]}: space {space.name} {missing[1]}"

    def space_for(self, config, info=None):
        """The run's space (:meth:`DataConfig.bound_space <snas_fast.engine.config.DataConfig.bound_space>`),
        after checking the strategy can run on it (``config.Error``, one line, otherwise)."""
        why = self.refusal(config.space_object())
        if why:
            raise config.Error(f"space: {why}")
        return config.bound_space(info)

    def load_data(self, config):
        """``(train, val, info)`` the search trains and validates on (None: a tabular space has none); refused
        first, in one line, on a space the strategy cannot run on."""
        self.space_for(config)
        return config.load_data()

    @abstractmethod
    def run(self, config, data, resume: bool = False, progress: bool = True, callbacks: Sequence = ()):
        """Runs (or resumes) the search; returns a result with a ``genotype`` (the architecture found) and a
        ``score`` (the strategy's own figure of merit)."""


@dataclass
class CandidateResult:
    genotype: object  # the best architecture
    score: float  # its evaluator's score (search-validation)
    scores: List[float] = field(default_factory=list)  # every candidate's, in evaluation order
    genotypes: List[object] = field(default_factory=list)
    seconds: float = 0.0


class CandidateSearch(Strategy):
    """A strategy that proposes architectures one at a time (:meth:`propose`, from what it has seen) and asks an
    evaluator how good each is (:meth:`evaluator`: by default trained briefly, or looked up in a table;
    :func:`~snas_fast.search.evaluators.evaluator_for`), ``config.archs`` of them; the best is the result.

    Written once here: the settings check, the space, the data, the generator (``stream``: a function of the seed
    alone), the loop over candidates, ``scores.json`` (every candidate, ``score_key``) and ``genotype.json`` (the
    best). A candidate trained before with the same architecture and settings is read back, so ``--resume`` (or a
    rerun with ``--overwrite``) redoes nothing it finished and proposes what the first run proposed; a finished
    search in ``out`` is refused without either."""

    needs = ("evaluate",)
    #: the stream of :func:`~snas_fast.engine.seeds.make_generator` (with the seed) its random choices draw from
    stream: int = 0
    #: the name of a candidate's score in ``scores.json``
    score_key: str = "val_acc"

    def evaluator(self, config, space, data, run: RunDir, generator):
        """How good an architecture is: :func:`~snas_fast.search.evaluators.evaluator_for` by default."""
        from .evaluators import evaluator_for

        return evaluator_for(config, space, data, run.path(""), self.name)

    def start(self, config, space, generator) -> None:
        """Called once before the first :meth:`propose` of a run (a strategy with a model of its own builds it
        here). Default: nothing."""

    @abstractmethod
    def propose(self, config, space, history: List[Tuple[object, float]], generator):
        """The next architecture to evaluate, given ``history``: every ``(architecture, score)`` so far, in
        evaluation order."""

    def run(self, config, data, resume: bool = False, progress: bool = True,
            callbacks: Sequence = ()) -> CandidateResult:
        config.validate()
        ctx = distributed.context(config.device)
        space = self.space_for(config, None if data is None else data[2])
        generator = make_generator(config.seed, self.stream)
        run = RunDir(config.out, ctx)
        if not resume and not config.overwrite and os.path.exists(run.path("scores.json")):
            raise config.Error(f"out: {config.out} holds a search already; continue it with --resume {config.out}, "
                               f"or give --overwrite true to start again there")
        if not (resume and os.path.exists(run.config_path)):
            run.start(config.to_dict())
        evaluator = self.evaluator(config, space, data, run, generator)
        history: List[Tuple[object, float]] = []
        self.start(config, space, generator)
        start = time.perf_counter()
        for k in bar(range(config.archs), self.name, progress and ctx.is_main):
            arch = self.propose(config, space, history, generator)
            history.append((arch, evaluator.score(arch, k, callbacks)))
        seconds = time.perf_counter() - start
        archs, scores = [a for a, _ in history], [s for _, s in history]
        if not any(math.isfinite(s) for s in scores):
            values = ", ".join(sorted({str(s) for s in scores}))
            warnings.warn(f"{self.name}: no candidate scored a finite value ({values}): its pick is merely the first "
                          f"drawn", SearchWarning, stacklevel=2)
        best = max(range(len(scores)), key=lambda i: (not math.isnan(scores[i]), scores[i]))
        run.write_json("scores.json", [{"genotype": space.to_dict(a), self.score_key: s} for a, s in history])
        run.write_json("genotype.json", dict(genotype=space.to_dict(archs[best]), score=scores[best],
                                             source=self.name))
        return CandidateResult(archs[best], scores[best], scores, archs, seconds)


def unseen(space, history, draw: Callable[[], object], tries: int = 100):
    """``draw()`` again until it gives an architecture not in ``history`` (:func:`seen_key`), at most ``tries``
    times (then the last draw): a strategy spends its evaluations on new architectures."""
    seen = {seen_key(space, a) for a, _ in history}
    for _ in range(tries):
        arch = draw()
        if seen_key(space, arch) not in seen:
            break
    return arch


def seen_key(space, arch) -> str:
    """A key equal for the architectures ``space`` holds to be the same (:meth:`SearchSpace.key
    <snas_fast.spaces.SearchSpace.key>`)."""
    return str(space.key(arch))
