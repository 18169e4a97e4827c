"""The strategies by name (``snas-fast compare --strategies``), imported when asked for."""
from __future__ import annotations

from typing import Callable, Dict, Tuple, Union

from .._lazy import make
from .base import Strategy

_STRATEGIES: Dict[str, Union[str, Callable[[], Strategy]]] = {
    "snas": "snas_fast.search.snas:Snas",
    "darts": "snas_fast.search.darts:Darts",
    "snas-pt": "snas_fast.search.snas_pt:SnasPt",
    "random": "snas_fast.search.random:RandomSearch",
    "rsws": "snas_fast.search.rsws:Rsws",
    "naswot": "snas_fast.search.naswot:Naswot",
    "monas": "snas_fast.search.monas:Monas",
    "evolution": "snas_fast.search.evolution:Evolution",
    "bo": "snas_fast.search.bo:BayesianOptimisation",
    "morph-bo": "snas_fast.search.morph:MorphSearch",
    "morph-random": "snas_fast.search.morph:MorphRandom",
    "morph-bfs": "snas_fast.search.morph:MorphBfs",
}


def register_strategy(name: str, factory: Callable[[], Strategy]) -> None:
    """Make ``factory()`` the strategy ``name`` (``snas-fast compare --strategies name``, :func:`get_strategy`)."""
    if not isinstance(name, str) or not name or "+" in name or "@" in name or "," in name:
        raise ValueError(f"name: expected a non-empty name without '+', '@' or ',', got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory: expected a function returning a Strategy, got {type(factory).__name__}")
    _STRATEGIES[name] = factory


def strategy_names() -> Tuple[str, ...]:
    return tuple(_STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """A new instance of the strategy ``name`` (see :func:`strategy_names`)."""
    return make(_STRATEGIES, name, "strategy", Strategy)
