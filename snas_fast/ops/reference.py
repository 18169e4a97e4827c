"""Plain eager PyTorch versions of the fused ops: the oracle of the tests and the baseline of the benchmarks.

Everything here is written the way one-shot NAS code writes it (DARTS's ``sum(w * op(x) for w, op in ...)``,
GDAS's straight-through ``h - z.detach() + z``), with autograd doing the backward. The Gumbel noise that the
kernels draw internally is reproduced exactly by :func:`philox_gumbel`, so the reference and the kernels give
the same sample for the same ``torch.manual_seed``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

Candidates = Union[Tensor, Sequence[Optional[Tensor]]]

_MASK32 = 0xFFFFFFFF


def _as_list(ys: Candidates) -> list:
    return list(ys.unbind(0)) if isinstance(ys, Tensor) else list(ys)


def _column(weights: Tensor, k: int, like: Tensor) -> Tensor:
    """Weight k, shaped to broadcast against a candidate: a scalar for [K], [B, 1, ...] for [B, K]."""
    if weights.dim() == 1:
        return weights[k]
    return weights[:, k].reshape((-1,) + (1,) * (like.dim() - 1))


def mixed_op(ys: Candidates, weights: Tensor) -> Tensor:
    """``sum_k weights[..., k] * ys[k]``, skipping candidates that are ``None`` (zero ops).

    Args:
        ys: ``[K, *S]`` tensor, or K tensors of shape ``S`` (``None`` for a zero op).
        weights: ``[K]``, or ``[B, K]`` with ``B = S[0]``.
    Returns:
        ``[*S]``.
    """
    out = None
    for k, y in enumerate(_as_list(ys)):
        if y is None:
            continue
        term = _column(weights, k, y) * y
        out = term if out is None else out + term
    return out


def _philox_first_word(seed: int, counter: Tensor) -> Tensor:
    """Philox4x32-10 of counters ``counter`` (int64) with a 64-bit seed; the first output word (as int64)."""
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    c0, c1 = counter & _MASK32, (counter >> 32) & _MASK32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    a, b = 0xD2511F53, 0xCD9E8D57
    for _ in range(10):
        p0, p1 = a * c0, b * c2  # int64 products wrap; their low 32 bits are exact
        hi0 = _mulhi32(a, c0)
        hi1 = _mulhi32(b, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, p1 & _MASK32, hi0 ^ c3 ^ k1, p0 & _MASK32
        k0, k1 = (k0 + 0x9E3779B9) & _MASK32, (k1 + 0xBB67AE85) & _MASK32
    return c0


def _mulhi32(a: int, x: Tensor) -> Tensor:
    """High 32 bits of the 64-bit product of the constant a and x (both < 2^32), without int64 overflow."""
    a_lo, a_hi = a & 0xFFFF, a >> 16
    x_lo, x_hi = x & 0xFFFF, x >> 16
    mid = a_hi * x_lo + ((a_lo * x_lo) >> 16)
    mid2 = a_lo * x_hi + (mid & 0xFFFF)
    return (a_hi * x_hi + (mid >> 16) + (mid2 >> 16)) & _MASK32


def philox_gumbel(shape, seed: int, offset: int, device=None, dtype=torch.float32) -> Tensor:
    """The Gumbel noise the kernels draw for a logits table of ``shape`` from ``(seed, offset)``.

    Element i (row-major) is ``-log(-log(u))`` with ``u = ((r >> 9) + 0.5) * 2^-23`` and r the first word of
    Philox4x32-10 at counter ``offset + i`` (see csrc/philox.h), computed in ``dtype``: the kernels use their
    accumulation type (float32, or float64 for float64 candidates).
    """
    n = 1
    for s in shape:
        n *= int(s)
    counter = torch.arange(n, dtype=torch.int64, device=device) + offset
    u = _uniform(_philox_first_word(int(seed), counter), dtype)
    l1 = torch.log(u.double()).to(dtype)  # each log in float64, rounded once (as csrc/philox.h and Triton)
    return (-torch.log(-l1.double()).to(dtype)).reshape(tuple(shape))


def _uniform(r: Tensor, dtype: torch.dtype) -> Tensor:
    """32 random bits (int64 holding a uint32) to a uniform in [2^-24, 1 - 2^-24], exact in float32."""
    return ((r >> 9).to(dtype) + 0.5) * 2.0**-23


def draw_rng() -> Tensor:
    """``(seed, offset)`` for one internal Gumbel draw, from torch's default (CPU) generator: int64, shape [2]."""
    return torch.randint(0, 2**62, (2,), dtype=torch.int64)


def gumbel_softmax(log_alpha: Tensor, tau: float, noise: Tensor) -> Tensor:
    """``softmax((log_alpha + noise) / tau)`` over the last dimension (the concrete distribution's sample)."""
    return torch.softmax((log_alpha + noise) / tau, dim=-1)


def straight_through(z: Tensor) -> Tensor:
    """GDAS's hard sample: the one-hot argmax in the forward, the gradient of the soft ``z`` in the backward."""
    hard = torch.nn.functional.one_hot(z.argmax(-1), z.shape[-1]).to(z.dtype)
    return hard - z.detach() + z


def gumbel_mixed_op(
    ys: Candidates,
    log_alpha: Tensor,
    tau: float,
    *,
    noise: Optional[Tensor] = None,
    hard: bool = False,
    return_weights: bool = False,
):
    """Eager ``Z = softmax((log_alpha + g) / tau)``, then :func:`mixed_op` with ``Z`` (or its straight-through
    one-hot when ``hard``). ``g`` is ``noise`` or the kernels' Philox noise drawn from the default generator.

    Args:
        ys: ``[K, *S]`` tensor, or K tensors of shape ``S`` (``None`` for a zero op).
        log_alpha: ``[K]`` or ``[B, K]``.
        tau: temperature > 0.
        noise: Gumbel noise shaped like ``log_alpha``, or None.
    Returns:
        ``out`` of shape ``S``, or ``(out, Z)`` with ``return_weights``.
    """
    if noise is None:
        seed, offset = draw_rng().tolist()
        first = next(y for y in _as_list(ys) if y is not None)
        acc = torch.float64 if first.dtype == torch.float64 else torch.float32
        noise = philox_gumbel(log_alpha.shape, seed, offset, device=log_alpha.device, dtype=acc)
    z = gumbel_softmax(log_alpha, tau, noise.to(log_alpha.dtype))
    weights = straight_through(z) if hard else z
    out = mixed_op(ys, weights)
    return (out, weights) if return_weights else out


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
) -> Tensor:
    """The deep-fused edge in eager PyTorch, written as the search space's modules compute it.

    ``out = w[max] * max_pool2d(x, 3, s, 1) + w[avg] * avg_pool2d(x, 3, s, 1, count_include_pad=False)
    + w[id] * x + sum_m w[bn_m] * batch_norm(us[m])`` where ``cols = [max, avg, id, bn_0, ..., bn_{M-1}]``
    names the weight column of each term (``-1``: the term is absent) and ``batch_norm`` is
    ``BatchNorm2d(affine=False)``: batch statistics when ``batch_stats`` (updating ``running_mean[m]`` and
    ``running_var[m]`` in place when given), else the running statistics.

    Args:
        x: ``[B, C, H, W]``, the edge input.
        us: M tensors ``[B, C, Ho, Wo]`` (``Ho = (H - 1) // stride + 1``), the pre-BatchNorm candidate outputs.
        weights: ``[K]`` or ``[B, K]``.
        cols: ``3 + M`` column indices (see above).
    Returns:
        ``[B, C, Ho, Wo]``.
    """
    import torch.nn.functional as F

    max_col, avg_col, id_col, *bn_cols = [int(c) for c in cols]
    out = None

    def add(col: int, y: Tensor) -> None:
        nonlocal out
        term = _column(weights, col, y).to(y.dtype) * y
        out = term if out is None else out + term

    if max_col >= 0:
        add(max_col, F.max_pool2d(x, 3, stride, 1))
    if avg_col >= 0:
        add(avg_col, F.avg_pool2d(x, 3, stride, 1, count_include_pad=False))
    if id_col >= 0:
        add(id_col, x)
    for m, (col, u) in enumerate(zip(bn_cols, us)):
        rm = running_mean[m] if len(running_mean) else None
        rv = running_var[m] if len(running_var) else None
        add(col, F.batch_norm(u, rm, rv, None, None, batch_stats, momentum, eps))
    if out is None:  # every candidate is a zero op: zeros, differentiable (with zero gradients) as the kernels' are
        Ho, Wo = (x.shape[2] - 1) // stride + 1, (x.shape[3] - 1) // stride + 1
        out = x.new_zeros(x.shape[0], x.shape[1], Ho, Wo)
        out.requires_grad_(torch.is_grad_enabled() and (x.requires_grad or weights.requires_grad))
    return out


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle, as PC-DARTS writes it: ``x [B, C, H, W]`` viewed as ``[B, groups, C / groups,
    H, W]``, the two channel axes swapped, flattened back: output channel ``j * groups + g`` is input channel
    ``g * C / groups + j``."""
    B, C, H, W = x.shape
    return x.reshape(B, groups, C // groups, H, W).transpose(1, 2).reshape(B, C, H, W)


def partial_channel_edge(x: Tensor, mix, k: int, stride: int) -> Tensor:
    """PC-DARTS's edge (Xu et al. 2020, ``model_search.py``'s ``MixedOp``): the candidates see only the first
    ``C / k`` channels, ``mix(x[:, :C/k])`` (None: every sampled candidate was the zero op), the other channels
    bypass (max-pooled 2x2 at stride 2, with ``ceil_mode`` so that odd sizes match the candidates' ``ceil(H / 2)``;
    PC-DARTS's even sizes are unchanged), and the edge returns ``channel_shuffle(cat(mixed, bypass), k)``.

    Args:
        x: ``[B, C, H, W]``, ``C`` divisible by ``k``.
        mix: ``[B, C/k, H, W] -> [B, C/k, H', W']`` or None.
    Returns:
        ``[B, C, H', W']``.
    """
    c = x.shape[1] // k
    bypass = x[:, c:]
    if stride == 2:
        bypass = torch.nn.functional.max_pool2d(bypass, 2, 2, ceil_mode=True)
    mixed = mix(x[:, :c])
    if mixed is None:
        mixed = bypass.new_zeros((bypass.shape[0], c) + tuple(bypass.shape[2:]))
    return channel_shuffle(torch.cat([mixed, bypass], dim=1), k)
