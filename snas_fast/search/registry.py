"""The strategies by name (``snas-fast compare --strategies``), imported when asked for."""
from __future__ import annotations

import importlib
from typing import Tuple

from .base import Strategy

_STRATEGIES = {
    "snas": "snas_fast.search.snas:Snas",
    "snas-pt": "snas_fast.search.snas_pt:SnasPt",
    "random": "snas_fast.search.random:RandomSearch",
    "rsws": "snas_fast.search.rsws:Rsws",
    "naswot": "snas_fast.search.naswot:Naswot",
    "monas": "snas_fast.search.monas:Monas",
    "morph-bo": "snas_fast.search.morph:MorphSearch",
    "morph-random": "snas_fast.search.morph:MorphRandom",
    "morph-bfs": "snas_fast.search.morph:MorphBfs",
}


def strategy_names() -> Tuple[str, ...]:
    return tuple(_STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """A new instance of the strategy ``name`` (see :func:`strategy_names`)."""
    if name not in _STRATEGIES:
        raise ValueError(f"strategy: expected one of {', '.join(_STRATEGIES)}, got {name!r}")
    module, _, attribute = _STRATEGIES[name].partition(":")
    return getattr(importlib.import_module(module), attribute)()
