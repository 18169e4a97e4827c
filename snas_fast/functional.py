"""The public ops: :func:`mixed_op` and :func:`gumbel_mixed_op`.

They check their arguments (raising ``TypeError``/``ValueError`` that name the argument), pick the backend
(:mod:`snas_fast._backend`) and call its registered op, whose backward is one registered op too.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import _backend, _ops, reference

Candidates = Union[Tensor, Sequence[Optional[Tensor]]]


def _candidates(ys: Candidates) -> Tuple[List[Tensor], List[int], int]:
    """The live candidates, their indices and K, checked to agree in shape, dtype and device."""
    if isinstance(ys, Tensor):
        if ys.dim() == 0:
            raise ValueError(f"ys: expected a [K, *S] tensor or a sequence of K tensors, got a 0-d tensor")
        items = list(ys.unbind(0))
    elif isinstance(ys, (list, tuple)):
        items = list(ys)
    else:
        raise TypeError(f"ys: expected a [K, *S] tensor or a sequence of K tensors, got {type(ys).__name__}")
    if not items:
        raise ValueError("ys: expected at least one candidate, got an empty sequence")
    live = [k for k, y in enumerate(items) if y is not None]
    if not live:
        raise ValueError("ys: expected at least one candidate that is a tensor, got only None (zero ops)")
    first = items[live[0]]
    for k in live:
        y = items[k]
        if not isinstance(y, Tensor):
            raise TypeError(f"ys[{k}]: expected a tensor or None, got {type(y).__name__}")
        if not y.is_floating_point():
            raise TypeError(f"ys[{k}]: expected a floating-point tensor, got dtype {y.dtype}")
        if y.dtype != first.dtype:
            raise TypeError(f"ys[{k}]: expected dtype {first.dtype} like ys[{live[0]}], got {y.dtype}")
        if y.shape != first.shape:
            raise ValueError(f"ys[{k}]: expected shape {tuple(first.shape)} like ys[{live[0]}], got {tuple(y.shape)}")
        if y.device != first.device:
            raise ValueError(f"ys[{k}]: expected device {first.device} like ys[{live[0]}], got {y.device}")
    return [items[k] for k in live], live, len(items)


def _check_table(name: str, table, K: int, like: Tensor) -> None:
    """A weight table: floating, [K] or [B, K] with B = like.shape[0], on like's device."""
    if not isinstance(table, Tensor):
        raise TypeError(f"{name}: expected a tensor of shape [K] or [B, K], got {type(table).__name__}")
    if not table.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {table.dtype}")
    if table.dim() not in (1, 2):
        raise ValueError(f"{name}: expected shape [K] or [B, K] with K = {K}, got {tuple(table.shape)}")
    if table.shape[-1] != K:
        raise ValueError(f"{name}: expected K = {K} (the number of candidates in ys), got shape {tuple(table.shape)}")
    if table.dim() == 2 and (like.dim() == 0 or table.shape[0] != like.shape[0]):
        batch = like.shape[0] if like.dim() else "none (0-d candidates)"
        raise ValueError(
            f"{name}: a [B, K] table needs B equal to the candidates' first dimension ({batch}), "
            f"got shape {tuple(table.shape)}"
        )
    if table.device != like.device:
        raise ValueError(f"{name}: expected device {like.device} like the candidates, got {table.device}")


def _check_tau(tau) -> float:
    if isinstance(tau, Tensor):
        if tau.numel() != 1:
            raise ValueError(f"tau: expected a number or a one-element tensor, got shape {tuple(tau.shape)}")
        tau = tau.item()
    if isinstance(tau, bool) or not isinstance(tau, (int, float)):
        raise TypeError(f"tau: expected a float > 0, got {type(tau).__name__}")
    if not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau: expected a finite temperature > 0, got {tau}")
    return float(tau)


def mixed_op(ys: Candidates, weights: Tensor) -> Tensor:
    """The weighted sum of candidate outputs, ``sum_k weights[..., k] * ys[k]``, in one fused kernel.

    Drop-in for DARTS's ``sum(w * op(x) for w, op in zip(weights, ops))``; differentiable in ``ys`` and
    ``weights`` (the backward is one kernel too).

    Args:
        ys: ``[K, *S]`` tensor, or a sequence of K tensors of shape ``S``; ``None`` entries are zero ops,
            neither computed nor read.
        weights: ``[K]`` (one weight per candidate) or ``[B, K]`` with ``B = S[0]`` (one row per example).
    Returns:
        ``[*S]``, the dtype of ``ys``.
    """
    live_ys, live, K = _candidates(ys)
    _check_table("weights", weights, K, live_ys[0])
    backend = _backend.resolve(live_ys[0].device)
    if backend == "reference":
        return reference.mixed_op(ys, weights)
    return _ops.op(backend, "mixed_op_fwd")(live_ys, live, weights)


def gumbel_mixed_op(
    ys: Candidates,
    log_alpha: Tensor,
    tau: float,
    *,
    noise: Optional[Tensor] = None,
    hard: bool = False,
    return_weights: bool = False,
):
    """SNAS's mixed op: ``Z = softmax((log_alpha + g) / tau)`` and ``sum_k Z_k * ys[k]``, in one kernel.

    ``g`` is ``noise`` when given; otherwise Gumbel noise drawn inside the kernel by a counter-based RNG
    (Philox) from a (seed, offset) pair taken from torch's default generator, so ``torch.manual_seed`` makes
    runs reproducible. The backward reuses the saved ``Z`` (K numbers), never the noise.

    Args:
        ys: ``[K, *S]`` tensor, or a sequence of K tensors of shape ``S`` (``None``: a zero op).
        log_alpha: ``[K]`` logits, or ``[B, K]`` with ``B = S[0]`` (one sample per example).
        tau: temperature, finite and > 0.
        noise: Gumbel noise shaped like ``log_alpha`` (a constant: it gets no gradient), or None.
        hard: use ``one_hot(argmax Z)`` in the forward with the straight-through gradient of the soft ``Z``.
        return_weights: also return the weights used (soft ``Z``, or the straight-through one-hot).
    Returns:
        ``out`` of shape ``S``, or ``(out, weights)`` with weights shaped like ``log_alpha`` and differentiable
        in ``log_alpha`` (use them for SNAS's expected resource cost).
    """
    live_ys, live, K = _candidates(ys)
    _check_table("log_alpha", log_alpha, K, live_ys[0])
    tau = _check_tau(tau)
    if noise is not None:
        if not isinstance(noise, Tensor) or not noise.is_floating_point():
            raise TypeError(f"noise: expected a floating-point tensor or None, got {type(noise).__name__}")
        if noise.shape != log_alpha.shape:
            raise ValueError(f"noise: expected the shape of log_alpha, {tuple(log_alpha.shape)}, got {tuple(noise.shape)}")
        if noise.device != log_alpha.device:
            raise ValueError(f"noise: expected device {log_alpha.device} like log_alpha, got {noise.device}")
    backend = _backend.resolve(live_ys[0].device)
    if backend == "reference":
        return reference.gumbel_mixed_op(ys, log_alpha, tau, noise=noise, hard=hard, return_weights=return_weights)
    rng = reference.draw_rng() if noise is None else None
    out, z = _ops.op(backend, "gumbel_mixed_op_fwd")(live_ys, live, log_alpha, tau, noise, rng, bool(hard))
    if not return_weights:
        return out
    return out, (reference.straight_through(z) if hard else z)
