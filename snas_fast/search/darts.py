"""First-order DARTS (Liu, Simonyan, Yang, ICLR 2019): the bi-level baseline every user of a one-shot NAS library
expects, on any space with a supernet. The supernet runs under ``softmax(log_alpha)`` (no sample, no temperature);
``log_alpha`` takes a step on a search-validation batch, then the weights on a training batch (the first-order
approximation: the weights' update is not differentiated through). No resource penalty (``--lambda 0``). The search
itself is SNAS's (:func:`snas_fast.search.snas.search`: the loop, the recipe, the evaluation of the supernet and of
the derived child, the convergence figures, resume): only the weights differ (:class:`~snas_fast.search.snas.
SnasSampler` with ``gumbel=False``). The architecture is derived by the space's rule (DARTS's own cell: ``--rule
top2``; the default keeps every edge's strongest op, as SNAS does)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence, Tuple

from ..engine.loop import Callback
from ..engine.config import setting
from .snas import SearchConfig, SearchResult, SnasSampler, Snas, search

__all__ = ["Darts", "DartsConfig"]


@dataclass
class DartsConfig(SearchConfig):
    """SNAS's settings with DARTS's: bi-level, no penalty; the sampling settings unused (hidden from the flags)."""

    hidden: ClassVar[Tuple[str, ...]] = ("sampling", "hard", "estimator", "tau_schedule", "tau_start", "tau_end",
                                         "tau_epochs", "penalty", "gumbel_sample", "bilevel")

    out: str = setting("runs/darts", "run directory")
    bilevel: bool = setting(True, "DARTS first-order bi-level updates (always, for darts)")
    resource_lambda: float = setting(0.0, "weight of the resource penalty (DARTS has none)", flag="lambda")

    def validate(self) -> None:
        super().validate()
        if not self.bilevel:
            raise self.Error("bilevel: first-order DARTS is bi-level (give snas --bilevel false for one level)")

    def sampler(self) -> SnasSampler:
        """``softmax(log_alpha)``, every step."""
        return SnasSampler(gumbel=False)


class Darts(Snas):
    name = "darts"
    config_class = DartsConfig
    variants = {}

    def run(self, config: DartsConfig, data, resume: bool = False, progress: bool = True,
            callbacks: Sequence[Callback] = ()) -> SearchResult:
        return search(config, data, resume, progress, callbacks)
