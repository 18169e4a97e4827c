"""Registration of the ops: fake kernels for the C++ ops (``torch.ops.snas_fast.*``, schemas and autograd in
csrc/mixed_op.cpp), and the Triton twins (``torch.ops.snas_fast.triton_*``, kernels in snas_fast/kernels) with
their fake kernels and autograd (``register_autograd``).

Each forward op's backward is one registered op (one launch): ``mixed_op_bwd`` or ``gumbel_mixed_op_bwd``.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import _backend, reference

LIB = "snas_fast"


# ---------------------------------------------------------------------------------------------------------
# The Triton twins of the C++ ops: same schemas, same checks left to the public layer, same kernels contract.
# ---------------------------------------------------------------------------------------------------------
def _acc_dtype(ys: List[Tensor]) -> torch.dtype:
    return torch.float64 if ys[0].dtype == torch.float64 else torch.float32


def _table(t: Tensor, acc: torch.dtype) -> Tensor:
    return t.to(acc).contiguous().view(-1, t.shape[-1])


def _dense(t: Tensor) -> bool:
    """Non-overlapping and dense: its elements fill ``numel`` consecutive places of memory (dims of size 1 aside)."""
    expect = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expect:
            return False
        expect *= size
    return True


def keeps_layout(ys: List[Tensor]) -> bool:
    """Whether the kernels read the candidates where they are: one dense layout shared by all (channels_last
    included), first dimension outermost (a [B, K] table's row b weights one block of memory). The C++ twin:
    csrc/mixed_op.cpp, keeps_layout."""
    y0 = ys[0]
    if y0.is_contiguous():
        return all(y.is_contiguous() for y in ys)
    if not _dense(y0):
        return False
    if y0.dim() >= 1 and y0.shape[0] > 1 and y0.stride(0) * y0.shape[0] != y0.numel():
        return False
    return all(y.stride() == y0.stride() for y in ys)


def _in_layout(ys: List[Tensor]) -> List[Tensor]:
    """The candidates as the kernels read them: as they are (:func:`keeps_layout`), else contiguous."""
    return list(ys) if keeps_layout(ys) else [y.contiguous() for y in ys]


def _flat(t: Tensor) -> Tensor:
    """A dense tensor's elements in memory order, as a 1-d view."""
    return t.as_strided((t.numel(),), (1,))


def edge_format(t: Tensor) -> torch.memory_format:
    """The layout the edge kernels read a ``[B, C, *, *]`` tensor in: channels_last when it is contiguous in it (and
    not in NCHW), else NCHW (a copy when it is in neither); outputs take the layout of the input they mirror. The
    C++ twin: csrc/mixed_edge.cpp, edge_format."""
    if not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _edge_inputs(x: Tensor, us: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
    """``x`` in its edge_format, the us all in the edge_format of ``us[0]``: in place when they already are."""
    x = x.contiguous(memory_format=edge_format(x))
    return x, ([u.contiguous(memory_format=edge_format(us[0])) for u in us] if us else [])


def _triton_fwd(ys, live, logits, noise, rng, softmax: bool, tau: float, hard: bool) -> Tuple[Tensor, Tensor]:
    from ..kernels import mixed_op as kernels

    ys = _in_layout(ys)
    acc = _acc_dtype(ys)
    table = _table(logits, acc)
    noise_table = _table(noise, acc) if (softmax and noise is not None) else None
    seed, offset = rng.tolist() if (softmax and noise is None) else (0, 0)
    out = torch.empty_like(ys[0])  # the candidates' layout
    z = torch.empty_like(table) if softmax else None
    if out.numel() == 0:  # no element: only the sample, from the same noise, in plain torch
        if softmax:
            g = noise_table
            if g is None:
                g = reference.philox_gumbel(table.shape, seed, offset, device=table.device, dtype=acc)
            z.copy_(reference.gumbel_softmax(table, tau, g.to(table)))
    else:
        kernels.mixed_op_fwd([_flat(y) for y in ys], list(live), table, noise_table, softmax, tau, hard, seed, offset,
                             _flat(out), z)
    z = z.view(logits.shape).to(logits.dtype) if softmax else torch.empty(0, device=logits.device)
    return out, z


def _triton_bwd(ys, live, w, grad_out, grad_z, jacobian: bool, tau: float, hard: bool):
    from ..kernels import mixed_op as kernels

    ys = _in_layout(ys)
    acc = _acc_dtype(ys)
    table = _table(w, acc)
    grad_out = grad_out.to(ys[0].dtype)
    if grad_out.stride() != ys[0].stride():  # the candidates' layout (stride-0 grads are materialised)
        grad_out = torch.empty_like(ys[0]).copy_(grad_out)
    gz = _table(grad_z, acc) if grad_z is not None else None
    dys = [torch.empty_like(y) for y in ys]
    grad_w = torch.empty_like(table)
    if ys[0].numel() == 0:
        dw = gz if gz is not None else torch.zeros_like(table)
        grad_w.copy_(table * (dw - (table * dw).sum(-1, keepdim=True)) / tau if jacobian else dw)
    else:
        kernels.mixed_op_bwd([_flat(y) for y in ys], list(live), table, _flat(grad_out), gz, jacobian, tau, hard,
                             [_flat(d) for d in dys], grad_w)
    return dys, grad_w.view(w.shape).to(w.dtype)


@torch.library.custom_op(f"{LIB}::triton_mixed_op_fwd", mutates_args=())
def triton_mixed_op_fwd(ys: List[Tensor], live: List[int], weights: Tensor) -> Tensor:
    return _triton_fwd(ys, live, weights, None, None, False, 1.0, False)[0]


@torch.library.custom_op(f"{LIB}::triton_mixed_op_bwd", mutates_args=())
def triton_mixed_op_bwd(
    ys: List[Tensor], live: List[int], weights: Tensor, grad_out: Tensor
) -> Tuple[List[Tensor], Tensor]:
    return _triton_bwd(ys, live, weights, grad_out, None, False, 1.0, False)


@torch.library.custom_op(f"{LIB}::triton_gumbel_mixed_op_fwd", mutates_args=())
def triton_gumbel_mixed_op_fwd(
    ys: List[Tensor],
    live: List[int],
    log_alpha: Tensor,
    tau: float,
    noise: Optional[Tensor],
    rng: Optional[Tensor],
    hard: bool,
) -> Tuple[Tensor, Tensor]:
    return _triton_fwd(ys, live, log_alpha, noise, rng, True, tau, hard)


@torch.library.custom_op(f"{LIB}::triton_gumbel_mixed_op_bwd", mutates_args=())
def triton_gumbel_mixed_op_bwd(
    ys: List[Tensor],
    live: List[int],
    z: Tensor,
    tau: float,
    hard: bool,
    grad_out: Tensor,
    grad_z: Optional[Tensor],
) -> Tuple[List[Tensor], Tensor]:
    return _triton_bwd(ys, live, z, grad_out, grad_z, True, tau, hard)


def _split_cols(cols: List[int]) -> Tuple[int, int, int, List[int]]:
    return int(cols[0]), int(cols[1]), int(cols[2]), [int(c) for c in cols[3:]]


def _shuffled_bypass(t: Tensor, k: int) -> Tensor:
    """Partial channels: the bypass places of an output-shaped ``t`` (channels ``j * k + g``, ``g >= 1``) as a
    ``[B, k - 1, C / k, Ho, Wo]`` view indexed like the bypass channels. The C++ twin: csrc/mixed_edge.cpp,
    shuffled_bypass (which says why)."""
    return t.unflatten(1, (t.shape[1] // k, k))[:, :, 1:].transpose(1, 2)


def _pool_bypass(xb: Tensor) -> Tensor:
    return torch.nn.functional.max_pool2d(xb, 2, 2, ceil_mode=True)


def _triton_edge_fwd(x, us, weights, cols, stride, batch_stats, running_mean, running_var, momentum, eps, groups):
    """The Triton twin of csrc/mixed_edge.cpp's mixed_edge_fwd (arguments checked by the public layer)."""
    from ..kernels import mixed_edge as kernels

    x_all, us = _edge_inputs(x, us)
    c = x_all.shape[1] // groups
    x = x_all if groups == 1 else x_all[:, :c]
    acc = _acc_dtype([x])
    table = _table(weights, acc)
    B, C, H, W = x.shape
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    M = len(us)
    out_all = torch.empty((B, C * groups, Ho, Wo), dtype=x.dtype, device=x.device, memory_format=edge_format(x_all))
    out = out_all if groups == 1 else out_all[:, ::groups]
    if batch_stats:
        mean = torch.empty((M, C), dtype=acc, device=x.device)
        rstd = torch.empty((M, C), dtype=acc, device=x.device)
    elif M:
        mean = torch.stack(list(running_mean)).to(acc).contiguous()
        rstd = (torch.stack(list(running_var)).to(acc) + eps).rsqrt().contiguous()
    else:
        mean = torch.empty((0, C), dtype=acc, device=x.device)
        rstd = torch.empty((0, C), dtype=acc, device=x.device)
    if out.numel() == 0:
        if batch_stats:
            mean.zero_()
            rstd.fill_(1.0 / eps**0.5)
        return out_all, mean, rstd
    update = batch_stats and len(running_mean) > 0
    rm = [t if (t.dtype == acc and t.is_contiguous()) else t.to(acc).contiguous() for t in running_mean] if update else []
    rv = [t if (t.dtype == acc and t.is_contiguous()) else t.to(acc).contiguous() for t in running_var] if update else []
    kernels.mixed_edge_fwd(x, us, table, _split_cols(cols), stride, batch_stats, rm, rv, momentum, eps, out, mean, rstd)
    for src, dst in zip(rm + rv, list(running_mean if update else []) + list(running_var if update else [])):
        if src is not dst:
            dst.copy_(src)
    if groups > 1:
        xb = x_all[:, c:]
        _shuffled_bypass(out_all, groups).copy_((_pool_bypass(xb) if stride == 2 else xb).unflatten(1, (groups - 1, c)))
    return out_all, mean, rstd


def _triton_edge_bwd(x, us, weights, cols, stride, batch_stats, mean, rstd, grad_out, groups):
    from ..kernels import mixed_edge as kernels

    x_all, us = _edge_inputs(x, us)
    c = x_all.shape[1] // groups
    x = x_all if groups == 1 else x_all[:, :c]
    acc = _acc_dtype([x])
    table = _table(weights, acc)
    grad_all = grad_out.to(x.dtype).contiguous(memory_format=edge_format(x_all))  # out's layout
    grad_out = grad_all if groups == 1 else grad_all[:, ::groups]
    dx_all = torch.empty_like(x_all)  # x's strides: the kernels address x and dx alike (and each u and its du)
    dx = dx_all if groups == 1 else dx_all[:, :c]
    dus = [torch.empty_like(u) for u in us]
    grad_w = torch.empty_like(table)
    if grad_out.numel() == 0:
        dx_all.zero_()
        grad_w.zero_()
    else:
        kernels.mixed_edge_bwd(x, us, table, _split_cols(cols), stride, batch_stats, mean.to(acc).contiguous(),
                               rstd.to(acc).contiguous(), grad_out, dx, dus, grad_w)
        if groups > 1:
            g, xb = _shuffled_bypass(grad_all, groups), x_all[:, c:]
            if stride == 1:
                dx_all[:, c:].unflatten(1, (groups - 1, c)).copy_(g)
            else:
                _, idx = torch.ops.aten.max_pool2d_with_indices(xb, [2, 2], [2, 2], [0, 0], [1, 1], True)
                dx_all[:, c:].copy_(torch.ops.aten.max_pool2d_with_indices_backward(
                    g.flatten(1, 2), xb, [2, 2], [2, 2], [0, 0], [1, 1], True, idx))
    return dx_all, dus, grad_w.view(weights.shape).to(weights.dtype)


@torch.library.custom_op(f"{LIB}::triton_mixed_edge_fwd", mutates_args=("running_mean", "running_var"))
def triton_mixed_edge_fwd(
    x: Tensor,
    us: List[Tensor],
    weights: Tensor,
    cols: List[int],
    stride: int,
    batch_stats: bool,
    running_mean: List[Tensor],
    running_var: List[Tensor],
    momentum: float,
    eps: float,
    groups: int = 1,
) -> Tuple[Tensor, Tensor, Tensor]:
    return _triton_edge_fwd(x, us, weights, cols, stride, batch_stats, running_mean, running_var, momentum, eps,
                            groups)


@torch.library.custom_op(f"{LIB}::triton_mixed_edge_bwd", mutates_args=())
def triton_mixed_edge_bwd(
    x: Tensor,
    us: List[Tensor],
    weights: Tensor,
    cols: List[int],
    stride: int,
    batch_stats: bool,
    mean: Tensor,
    rstd: Tensor,
    grad_out: Tensor,
    groups: int = 1,
) -> Tuple[Tensor, List[Tensor], Tensor]:
    return _triton_edge_bwd(x, us, weights, cols, stride, batch_stats, mean, rstd, grad_out, groups)


# ---------------------------------------------------------------------------------------------------------
# Fake kernels and autograd, the same for both families.
# ---------------------------------------------------------------------------------------------------------
def _fake_fwd(ys, live, weights):
    return torch.empty_like(_in_layout(ys)[0])  # the layout the kernels write (keeps_layout)


def _fake_bwd(ys, live, weights, grad_out):
    return [torch.empty_like(y) for y in _in_layout(ys)], weights.new_empty(weights.shape)


def _fake_gumbel_fwd(ys, live, log_alpha, tau, noise, rng, hard):
    return torch.empty_like(_in_layout(ys)[0]), log_alpha.new_empty(log_alpha.shape)


def _fake_gumbel_bwd(ys, live, z, tau, hard, grad_out, grad_z):
    return [torch.empty_like(y) for y in _in_layout(ys)], z.new_empty(z.shape)


def _fake_edge_fwd(x, us, weights, cols, stride, batch_stats, running_mean, running_var, momentum, eps, groups=1):
    B, C, H, W = x.shape
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = torch.empty((B, C, (H - 1) // stride + 1, (W - 1) // stride + 1), dtype=x.dtype, device=x.device,
                      memory_format=edge_format(x))
    return out, x.new_empty((len(us), C // groups), dtype=acc), x.new_empty((len(us), C // groups), dtype=acc)


def _fake_edge_bwd(x, us, weights, cols, stride, batch_stats, mean, rstd, grad_out, groups=1):
    x, us = _edge_inputs(x, us)
    return torch.empty_like(x), [torch.empty_like(u) for u in us], weights.new_empty(weights.shape)


def _register_fake(prefix: str) -> None:
    for name, fake in (
        ("mixed_op_fwd", _fake_fwd),
        ("mixed_op_bwd", _fake_bwd),
        ("gumbel_mixed_op_fwd", _fake_gumbel_fwd),
        ("gumbel_mixed_op_bwd", _fake_gumbel_bwd),
        ("mixed_edge_fwd", _fake_edge_fwd),
        ("mixed_edge_bwd", _fake_edge_bwd),
    ):
        torch.library.register_fake(f"{LIB}::{prefix}{name}")(fake)


def _register_autograd(prefix: str) -> None:
    """The Python twin of the C++ autograd in csrc/mixed_op.cpp, for the Triton ops."""
    ops = getattr(torch.ops, LIB)
    bwd = getattr(ops, f"{prefix}mixed_op_bwd")
    gumbel_bwd = getattr(ops, f"{prefix}gumbel_mixed_op_bwd")

    def setup_mixed(ctx, inputs, output):
        ys, live, weights = inputs
        ctx.save_for_backward(weights, *ys)
        ctx.live = live

    def backward_mixed(ctx, grad_out):
        weights, *ys = ctx.saved_tensors
        dys, dw = bwd(ys, ctx.live, weights, grad_out)
        return list(dys), None, dw

    def setup_gumbel(ctx, inputs, output):
        ys, live, log_alpha, tau, noise, rng, hard = inputs
        ctx.save_for_backward(output[1], *ys)  # the soft sample z, never the noise
        ctx.live, ctx.tau, ctx.hard = live, tau, hard

    def backward_gumbel(ctx, grad_out, grad_z):
        z, *ys = ctx.saved_tensors
        if grad_out is None:  # only z was used downstream
            grad_out = ys[0].new_zeros(ys[0].shape)
        dys, dlog_alpha = gumbel_bwd(ys, ctx.live, z, ctx.tau, ctx.hard, grad_out, grad_z)
        return list(dys), None, dlog_alpha, None, None, None, None

    torch.library.register_autograd(f"{LIB}::{prefix}mixed_op_fwd", backward_mixed, setup_context=setup_mixed)
    torch.library.register_autograd(
        f"{LIB}::{prefix}gumbel_mixed_op_fwd", backward_gumbel, setup_context=setup_gumbel
    )


_register_fake("triton_")
_register_autograd("triton_")
if _backend.HAVE_EXTENSION:
    _register_fake("")


class _TritonEdgeFunction(torch.autograd.Function):
    """Autograd of ``triton_mixed_edge_fwd``: a mutating op (the running statistics) cannot take
    ``register_autograd``, so its backward is wired here, to the one backward op."""

    @staticmethod
    def forward(ctx, x, weights, cols, stride, batch_stats, running_mean, running_var, momentum, eps, groups, *us):
        out, mean, rstd = torch.ops.snas_fast.triton_mixed_edge_fwd(
            x, list(us), weights, cols, stride, batch_stats, running_mean, running_var, momentum, eps, groups
        )
        ctx.save_for_backward(x, weights, mean, rstd, *us)
        ctx.cols, ctx.stride, ctx.batch_stats, ctx.groups = cols, stride, batch_stats, groups
        ctx.mark_non_differentiable(mean, rstd)
        return out, mean, rstd

    @staticmethod
    def backward(ctx, grad_out, grad_mean, grad_rstd):
        x, weights, mean, rstd, *us = ctx.saved_tensors
        dx, dus, dw = torch.ops.snas_fast.triton_mixed_edge_bwd(
            x, us, weights, ctx.cols, ctx.stride, ctx.batch_stats, mean, rstd, grad_out, ctx.groups
        )
        return (dx, dw, None, None, None, None, None, None, None, None, *dus)


def mixed_edge_fwd(backend: str):
    """``mixed_edge_fwd(x, us, weights, cols, stride, batch_stats, running_mean, running_var, momentum, eps,
    groups)`` of ``backend``, differentiable: the extension's op (autograd in C++) or the Triton twin."""
    if backend != "triton":
        return torch.ops.snas_fast.mixed_edge_fwd

    def call(x, us, weights, cols, stride, batch_stats, running_mean, running_var, momentum, eps, groups=1):
        return _TritonEdgeFunction.apply(x, weights, cols, stride, batch_stats, running_mean, running_var, momentum,
                                         eps, groups, *us)

    return call


def op(backend: str, name: str):
    """Op ``name`` of ``backend``: the extension's for "cuda" and "cpu", the Triton twin for "triton"."""
    return getattr(getattr(torch.ops, LIB), ("triton_" if backend == "triton" else "") + name)
