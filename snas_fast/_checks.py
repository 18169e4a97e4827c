"""Argument checks shared by every layer: one line each, naming the argument, what was expected and what came."""
from __future__ import annotations

import math
import numbers


def check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int if it is an integer (not a bool) ``>= minimum``; else TypeError / ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def check_tau(tau) -> float:
    """A Gumbel-softmax temperature as a float: any real scalar (Python, NumPy) or one-element tensor, finite and
    ``> 0``. A tensor that requires grad is refused (no gradient reaches tau); TypeError / ValueError otherwise."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(tau, torch.Tensor):
        if tau.numel() != 1:
            raise ValueError(f"tau: expected a number or a one-element tensor, got shape {tuple(tau.shape)}")
        if tau.requires_grad:
            raise ValueError("tau: expected a constant; got a tensor that requires grad (no gradient flows to tau: "
                             "pass tau.detach() or a float)")
        tau = tau.item()
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real):
        raise TypeError(f"tau: expected a float > 0, got {type(tau).__name__}")
    tau = float(tau)
    if not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau: expected a finite temperature > 0, got {tau}")
    return tau


def check_real(name: str, value) -> float:
    """``value`` as a float if it is a finite real scalar (Python, NumPy; not a bool); TypeError / ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    return value


def check_memory_format(value):
    """``value`` if it is ``torch.contiguous_format`` (NCHW) or ``torch.channels_last`` (NHWC); ValueError otherwise."""
    import torch

    if value not in (torch.contiguous_format, torch.channels_last):
        raise ValueError(f"memory_format: expected torch.contiguous_format or torch.channels_last, got {value!r}")
    return value


def check_bool(name: str, value) -> bool:
    """``value`` if it is a bool (NumPy's too); TypeError otherwise (``"no"`` is not False)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise TypeError(f"{name}: expected True or False, got {type(value).__name__} {value!r}")
