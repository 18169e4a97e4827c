"""The public ops: :func:`mixed_op` and :func:`gumbel_mixed_op`.

They check their arguments (raising ``TypeError``/``ValueError`` that name the argument), pick the backend
(:mod:`snas_fast._backend`) and call its registered op, whose backward is one registered op too.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._checks import check_bool, check_real, check_tau
from . import _backend, reference, registry as _ops

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
    tau = check_tau(tau)
    hard = check_bool("hard", hard)
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


def _check_edge(x, us, weights, cols, stride, running_mean, running_var, batch_stats, momentum, eps, groups
                ) -> Tuple[List[Tensor], List[int]]:
    """The Python-side checks of :func:`mixed_edge` (the C++ op checks again, with the same words)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x: expected a tensor [B, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x: expected the edge input [B, C, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor, got dtype {x.dtype}")
    if isinstance(stride, bool) or stride not in (1, 2):
        raise ValueError(f"stride: expected 1 or 2, got {stride!r}")
    if isinstance(us, Tensor) or not isinstance(us, (list, tuple)):
        raise TypeError(f"us: expected a list of pre-BatchNorm tensors, got {type(us).__name__}")
    us = list(us)
    if len(us) > MAX_EDGE_BN:
        raise ValueError(f"us: at most {MAX_EDGE_BN} BatchNorm-ended candidates per edge, got {len(us)}")
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"groups: expected an int, got {type(groups).__name__}")
    if groups < 1 or x.shape[1] % groups:
        raise ValueError(f"groups: expected a divisor of x's channel count {x.shape[1]} (the candidates see "
                         f"C / groups channels), got {groups}")
    B, C, H, W = x.shape
    C //= groups  # the channels the candidates see
    shape = (B, C, (H - 1) // stride + 1, (W - 1) // stride + 1)
    for m, u in enumerate(us):
        if not isinstance(u, Tensor):
            raise TypeError(f"us[{m}]: expected a tensor, got {type(u).__name__}")
        if tuple(u.shape) != shape:
            raise ValueError(f"us[{m}]: expected shape {shape} (the edge output for x of shape {tuple(x.shape)} at "
                             f"stride {stride} with groups {groups}), got {tuple(u.shape)}")
        if u.dtype != x.dtype:
            raise TypeError(f"us[{m}]: expected dtype {x.dtype} like x, got {u.dtype}")
        if u.device != x.device:
            raise ValueError(f"us[{m}]: expected device {x.device} like x, got {u.device}")
    if not isinstance(weights, Tensor):
        raise TypeError(f"weights: expected a tensor of shape [K] or [B, K], got {type(weights).__name__}")
    if not isinstance(cols, (list, tuple)) or not all(isinstance(c, int) and not isinstance(c, bool) for c in cols):
        raise TypeError(f"cols: expected a list of ints [max, avg, id, bn_0, ...], got {cols!r}")
    cols = list(cols)
    if len(cols) != 3 + len(us):
        raise ValueError(f"cols: expected 3 + len(us) = {3 + len(us)} column indices [max, avg, id, bn_0, ...], "
                         f"got {len(cols)}")
    K = weights.shape[-1] if weights.dim() else 0
    _check_table("weights", weights, K, x)
    named = [c for i, c in enumerate(cols) if not (i < 3 and c == -1)]
    if any(c < 0 or c >= K for c in named) or len(set(named)) != len(named):
        raise ValueError(f"cols: expected distinct columns in [0, {K}) (-1 for an absent pool or identity), got {cols}")
    if stride == 2 and cols[2] != -1:
        raise ValueError(f"cols: the identity term (cols[2] = {cols[2]}) needs stride 1; at stride 2 skip_connect is "
                         "FactorizedReduce, a BatchNorm-ended candidate")
    for name, stats in (("running_mean", running_mean), ("running_var", running_var)):
        if len(stats) not in (0, len(us)):
            raise ValueError(f"{name}: expected an empty list or one tensor per BatchNorm-ended candidate "
                             f"({len(us)}), got {len(stats)}")
        for m, t in enumerate(stats):
            if not isinstance(t, Tensor) or tuple(t.shape) != (C,):
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"{name}[{m}]: expected a tensor of shape ({C},), got {got}")
            if t.device != x.device:
                raise ValueError(f"{name}[{m}]: expected device {x.device} like x, got {t.device}")
            if not t.is_floating_point():
                raise TypeError(f"{name}[{m}]: expected a floating-point tensor, got dtype {t.dtype}")
    if len(running_mean) != len(running_var):
        raise ValueError(f"running_var: expected as many tensors as running_mean ({len(running_mean)}), "
                         f"got {len(running_var)}")
    batch_stats = check_bool("batch_stats", batch_stats)
    momentum = check_real("momentum", momentum)
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum: expected a number in [0, 1], got {momentum}")
    eps = check_real("eps", eps)
    if not eps > 0:
        raise ValueError(f"eps: expected a finite number > 0, got {eps}")
    if us and batch_stats and B * shape[2] * shape[3] == 1:
        raise ValueError(f"us: batch statistics need more than 1 value per channel, got B * Ho * Wo = 1 "
                         f"(x of shape {tuple(x.shape)}, stride {stride})")
    if us and not batch_stats and not running_mean:
        raise ValueError("running_mean: eval mode (batch_stats=False) needs the running statistics, got none")
    return us, cols


#: BatchNorm-ended candidates one :func:`mixed_edge` call takes (kMaxEdgeBn in csrc/mixed_edge.h).
MAX_EDGE_BN = 8


def batch_norm_args(bns: Sequence[torch.nn.BatchNorm2d]) -> dict:
    """The BatchNorm keywords of :func:`mixed_edge` for the candidates' trailing BatchNorm modules ``bns`` (one
    mode, momentum and eps, the first's): ``batch_stats``, ``running_mean``, ``running_var``, ``momentum``, ``eps``,
    as the modules would use them; in training with running statistics it counts the step in every
    ``num_batches_tracked`` (so ``momentum=None``, the cumulative average, sees the new count), as the modules do."""
    if not bns:
        return {}
    bn = bns[0]
    args = dict(batch_stats=bn.training or not bn.track_running_stats, eps=bn.eps)
    if bn.track_running_stats:
        args.update(running_mean=[b.running_mean for b in bns], running_var=[b.running_var for b in bns])
        if bn.training:
            torch._foreach_add_([b.num_batches_tracked for b in bns], 1)
    args["momentum"] = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked.item())
    return args


def mixed_edge(
    x: Tensor,
    us: Sequence[Tensor],
    weights: Tensor,
    cols: Sequence[int],
    stride: int = 1,
    *,
    running_mean: Sequence[Tensor] = (),
    running_var: Sequence[Tensor] = (),
    batch_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    groups: int = 1,
) -> Tensor:
    """One search-space edge with its candidates' tails fused: the pools, the identity and the trailing
    affine-free BatchNorms, weighted and summed, in one kernel forward (after a statistics pass) and two backward.

    ``out = w[max] * maxpool3x3(x) + w[avg] * avgpool3x3(x) + w[id] * x + sum_m w[bn_m] * BN(us[m])``, with
    ``cols = [max, avg, id, bn_0, ..., bn_{M-1}]`` the weight column of each term (``-1``: that pool or the
    identity is not a candidate; columns not named are zero ops). The pools are DARTS's (3x3, padding 1, the
    edge's stride; average without the padding) and are computed from ``x`` inside the kernel: pool outputs, pool
    indices and normalised candidates are never stored. ``BN`` is ``BatchNorm2d(affine=False)``: batch statistics
    when ``batch_stats`` (and ``running_mean[m]``/``running_var[m]`` updated in place exactly as BatchNorm2d
    updates them, when given), else the running statistics (eval mode).

    Args:
        x: ``[B, C, H, W]``, the edge input.
        us: M (0..8) tensors ``[B, C, Ho, Wo]``, ``Ho = (H - 1) // stride + 1``: each BatchNorm-ended candidate's
            output before its BatchNorm.
        weights: ``[K]`` or ``[B, K]`` (one row per example).
        cols: ``3 + M`` ints, see above.
        stride: 1 or 2 (2: the identity is not allowed; skip_connect is then a BatchNorm-ended candidate).
        groups: partial channels (PC-DARTS) when > 1: the edge above runs on the first ``C / groups`` channels of
            ``x`` (``us[m]`` are then ``[B, C / groups, Ho, Wo]``, the statistics per those channels), the other
            channels bypass (max-pooled 2x2 at stride 2), and the output is
            ``channel_shuffle(cat(edge, bypass), groups)`` (:func:`snas_fast.reference.partial_channel_edge`),
            each channel written once where the shuffle puts it: no concatenated or shuffled copy.
    Returns:
        ``[B, C, Ho, Wo]`` in ``x``'s layout (NCHW or channels_last), differentiable in ``x``, every ``us[m]`` and
        ``weights``.
    """
    running_mean, running_var = list(running_mean), list(running_var)
    us, cols = _check_edge(x, us, weights, cols, stride, running_mean, running_var, batch_stats, momentum, eps, groups)
    backend = _backend.resolve(x.device)
    if backend == "reference":
        def edge(x):
            return reference.mixed_edge(x, us, weights, cols, stride, running_mean=running_mean,
                                        running_var=running_var, batch_stats=batch_stats, momentum=momentum, eps=eps)

        return edge(x) if groups == 1 else reference.partial_channel_edge(x, edge, groups, stride)
    out, _, _ = _ops.mixed_edge_fwd(backend)(x, us, weights, cols, stride, bool(batch_stats), running_mean,
                                             running_var, float(momentum), float(eps), groups)
    return out
