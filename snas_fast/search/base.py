"""The :class:`Strategy` protocol: what every search strategy offers the command line and the comparisons, so
that any strategy runs on any space with the same budget, loop and retraining. A strategy knows its settings (a
:class:`~snas_fast.engine.config.RunConfig` subclass), how to load its data, and how to run; its result has a
``genotype`` that ``snas-fast train`` retrains."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, Sequence


class Strategy(ABC):
    """A search strategy (SNAS's is :class:`snas_fast.search.snas.Snas`)."""

    #: its name on the command line
    name: str = ""
    #: its settings, a RunConfig subclass whose fields carry their flags
    config_class: type = object
    #: named changes of its settings (ablations): ``snas-fast compare --strategies <name>+<variant>`` runs the
    #: strategy with ``config_class(**variants[variant])`` over its defaults
    variants: Dict[str, Dict[str, object]] = {}

    @abstractmethod
    def load_data(self, config):
        """``(train, val, info)`` the search trains and validates on."""

    @abstractmethod
    def run(self, config, data, resume: bool = False, progress: bool = True, callbacks: Sequence = ()):
        """Runs (or resumes) the search; returns a result with a ``genotype``."""
