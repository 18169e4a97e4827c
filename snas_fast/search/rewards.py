"""Rewards of a multi-objective search (MONAS, Hsu et al. 2018): a child's accuracy and its cost in one number.
Pure functions of floats; the constants are ours (MONAS's exact ones were not read from the paper), each named here.

- ``mixed``: ``R = a * acc - (1 - a) * cost / cost_ref`` (MONAS's weighted mix; ``a`` in [0, 1]).
- ``constrained``: ``R = acc`` if ``cost <= budget``, else ``acc - p * (cost / budget - 1)`` (MONAS's constrained
  form with a linear penalty past the budget; ``p`` its slope).
- ``mnas``: ``R = acc * (cost / target) ** w``, ``w = -0.07`` (MnasNet's soft constraint).

:func:`reward` picks one by name, with the settings of a :class:`RewardSettings`.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

__all__ = ["MNAS_W", "REWARDS", "RewardSettings", "constrained", "mixed", "mnas", "reward"]

#: MnasNet's exponent
MNAS_W = -0.07


def _real(name: str, value, low: float = -math.inf, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name}: expected a number > 0, got {value!r}")
    if value < low:
        raise ValueError(f"{name}: expected a number >= {low}, got {value!r}")
    return float(value)


def mixed(acc: float, cost: float, a: float, cost_ref: float) -> float:
    """``a * acc - (1 - a) * cost / cost_ref``: ``a = 1`` is accuracy alone, ``a = 0`` cost alone."""
    a = _real("a", a, 0.0)
    if a > 1:
        raise ValueError(f"a: expected a weight in [0, 1], got {a}")
    return a * _real("acc", acc) - (1 - a) * _real("cost", cost, 0.0) / _real("cost_ref", cost_ref, positive=True)


def constrained(acc: float, cost: float, budget: float, p: float) -> float:
    """``acc`` within the budget, ``acc - p * (cost / budget - 1)`` past it."""
    acc, cost = _real("acc", acc), _real("cost", cost, 0.0)
    budget, p = _real("budget", budget, positive=True), _real("p", p, 0.0)
    return acc if cost <= budget else acc - p * (cost / budget - 1)


def mnas(acc: float, cost: float, target: float, w: float = MNAS_W) -> float:
    """``acc * (cost / target) ** w`` (MnasNet; ``w < 0`` rewards a cost under the target)."""
    acc = _real("acc", acc)
    return acc * (_real("cost", cost, positive=True) / _real("target", target, positive=True)) ** _real("w", w)


REWARDS = ("mixed", "constrained", "mnas")


@dataclass(frozen=True)
class RewardSettings:
    """The reward's name and constants: ``a`` and ``cost_ref`` (mixed), ``budget`` and ``p`` (constrained),
    ``budget`` as the target and ``w`` (mnas). Costs are in the unit of the search's objective."""

    name: str = "mixed"
    a: float = 0.9
    cost_ref: float = 1.0
    budget: float = 1.0
    p: float = 1.0
    w: float = MNAS_W


def reward(settings: RewardSettings, acc: float, cost: float) -> float:
    """The reward ``settings.name`` of a child with accuracy ``acc`` and cost ``cost``."""
    if settings.name == "mixed":
        return mixed(acc, cost, settings.a, settings.cost_ref)
    if settings.name == "constrained":
        return constrained(acc, cost, settings.budget, settings.p)
    if settings.name == "mnas":
        return mnas(acc, cost, settings.budget, settings.w)
    raise ValueError(f"reward: expected one of {', '.join(REWARDS)}, got {settings.name!r}")
