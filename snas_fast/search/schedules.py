"""Temperature schedules of the Gumbel-softmax sample: pure functions of the epoch (fractional epochs allowed,
for a per-step schedule). The learning rate's cosine schedule is torch's ``CosineAnnealingLR``."""
from __future__ import annotations

import math
import numbers

__all__ = ["exponential_tau", "linear_tau"]


def _check_real(name: str, value, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name}: expected a number > 0, got {value}")
    if value < 0:
        raise ValueError(f"{name}: expected a number >= 0, got {value}")
    return value


def _check_taus(tau0, tau_min):
    tau0 = _check_real("tau0", tau0, positive=True)
    tau_min = _check_real("tau_min", tau_min, positive=True)
    if tau_min > tau0:
        raise ValueError(f"tau_min: expected at most tau0 = {tau0}, got {tau_min}")
    return tau0, tau_min


def linear_tau(epoch: float, tau0: float = 1.0, tau_min: float = 0.03, length: float = 150) -> float:
    """SNAS's schedule (snas.md): ``tau = (1 - epoch / length) * (tau0 - tau_min) + tau_min`` for
    ``0 <= epoch <= length``, and ``tau_min`` after ``length``. Defaults: SNAS's 1.0 -> 0.03 over 150 epochs."""
    epoch = _check_real("epoch", epoch)
    tau0, tau_min = _check_taus(tau0, tau_min)
    length = _check_real("length", length, positive=True)
    if epoch >= length:
        return tau_min
    return (1.0 - epoch / length) * (tau0 - tau_min) + tau_min


def exponential_tau(epoch: float, tau0: float, tau_min: float, rate: float) -> float:
    """``tau = max(tau_min, tau0 * exp(-rate * epoch))`` (the Gumbel-softmax paper's annealing, Jang et al. 2017);
    ``rate >= 0`` per epoch (0 keeps ``tau0``)."""
    epoch = _check_real("epoch", epoch)
    tau0, tau_min = _check_taus(tau0, tau_min)
    rate = _check_real("rate", rate)
    return max(tau_min, tau0 * math.exp(-rate * epoch))
