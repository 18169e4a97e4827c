"""Cheap prefixes of a convolution, recomputed in backward instead of saved (used by the deep-fused edge).

A convolution candidate that starts ``ReLU -> conv`` (DARTS's SepConv, DilConv, FactorizedReduce), or has
``BatchNorm -> ReLU -> conv`` in its middle (SepConv), uses them in its ``pre_bn`` (see
:mod:`snas_fast.spaces.base`). Autograd would keep the ReLU's output for the convolution's weight gradient: one more tensor
of the edge's size per candidate. Here the convolution keeps its *input's input* instead (``x``, which the fused edge
keeps anyway, or the BatchNorm's input, which the BatchNorm keeps anyway) and recomputes the elementwise prefix in
backward: the same gradients for one elementwise pass. Both functions take the same module objects as the eager
path, so parameters, buffers and state dicts are shared. :func:`max_pool` likewise keeps a max pool's input instead
of its int64 argmax indices (used by :func:`snas_fast.fuse_mixed_ops` for a max pool before a BatchNorm that is
not DARTS's 3x3 one, which the edge kernel's own pool computes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _conv_args(conv: nn.Conv2d):
    return (list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups)


def _conv_backward(grad_y: Tensor, inp: Tensor, weight: Tensor, args, need_input: bool, need_weight: bool):
    stride, padding, dilation, groups = args
    gi, gw, _ = torch.ops.aten.convolution_backward(grad_y, inp, weight, None, stride, padding, dilation, False,
                                                    [0, 0], groups, [need_input, need_weight, False])
    return gi, gw


class _ReluConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, relu_x, weight, bias, args):
        ctx.save_for_backward(x, weight)
        ctx.args = args
        stride, padding, dilation, groups = args
        return F.conv2d(relu_x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        r = F.relu(x)
        gr, gw = _conv_backward(grad_y, r, weight, ctx.args, ctx.needs_input_grad[0], ctx.needs_input_grad[2])
        gx = torch.ops.aten.threshold_backward(gr, r, 0) if gr is not None else None  # gr * (x > 0)
        gb = grad_y.sum((0, 2, 3)) if ctx.needs_input_grad[3] else None
        return gx, None, gw, gb, None


def relu_conv(x: Tensor, relu_x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv(relu(x))`` keeping ``x`` (not ``relu(x)``) for backward. ``relu_x``: ``relu(x)``, computed once by the
    caller and shared by every candidate (detached: the gradient goes to ``x``). ``[B, C, H, W] -> conv's output``;
    the convolution may have a bias (NAS-Bench-201's ``ReLUConvBN`` keeps one when its BatchNorm is affine-free)."""
    if conv.padding_mode != "zeros":
        raise ValueError(f"conv: relu_conv takes zero-padded convolutions, got padding_mode={conv.padding_mode!r}")
    return _ReluConv.apply(x, relu_x.detach(), conv.weight, conv.bias, _conv_args(conv))


class _BnReluConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, weight, running_mean, running_var, args, batch_stats, momentum, eps):
        stride, padding, dilation, groups = args
        # ATen's BatchNorm: batch statistics (updating the running ones) or the running statistics
        out, mean, invstd = torch.ops.aten.native_batch_norm(u, None, None, running_mean, running_var, batch_stats,
                                                             momentum, eps)
        if not batch_stats:  # eval: native_batch_norm keeps no statistics; the backward needs them
            mean, invstd = running_mean, (running_var + eps).rsqrt()
        # (the running statistics change in place every step: kept only where the backward reads them, in eval)
        keep = (None, None) if batch_stats else (running_mean, running_var)
        ctx.save_for_backward(u, weight, mean, invstd, *keep)
        ctx.args, ctx.batch_stats, ctx.eps = args, batch_stats, eps
        return F.conv2d(out.relu_(), weight, None, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_y):
        u, weight, mean, invstd, running_mean, running_var = ctx.saved_tensors
        shape = (1, -1, 1, 1)
        r = ((u - mean.view(shape).to(u.dtype)) * invstd.view(shape).to(u.dtype)).relu_()  # recomputed
        gr, gw = _conv_backward(grad_y, r, weight, ctx.args, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        gu = None
        if gr is not None:
            g_bn = torch.ops.aten.threshold_backward(gr, r, 0)
            gu = torch.ops.aten.native_batch_norm_backward(
                g_bn, u, None, running_mean, running_var, mean, invstd, ctx.batch_stats, ctx.eps,
                [True, False, False])[0]
        return gu, gw, None, None, None, None, None, None


def bn_relu_conv(u: Tensor, bn: nn.BatchNorm2d, conv: nn.Conv2d) -> Tensor:
    """``conv(relu(bn(u)))`` for an affine-free ``bn``, keeping ``u`` and the per-channel statistics (not the
    BatchNorm's output nor the ReLU's) for backward. ``bn``'s running statistics (and ``num_batches_tracked``) are
    updated exactly as the module updates them; eval mode normalises with them. ``u``: ``[B, C, H, W]``."""
    if bn.affine or conv.bias is not None:
        raise ValueError("bn, conv: bn_relu_conv takes an affine-free BatchNorm and a bias-free convolution")
    batch_stats = bn.training or not bn.track_running_stats
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average
            momentum = 1.0 / float(bn.num_batches_tracked)
    rm = bn.running_mean if bn.track_running_stats else None
    rv = bn.running_var if bn.track_running_stats else None
    return _BnReluConv.apply(u, conv.weight, rm, rv, _conv_args(conv), batch_stats, momentum, bn.eps)


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, args):
        ctx.save_for_backward(x)
        ctx.args = args
        return F.max_pool2d(x, *args)

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        kernel, stride, padding, dilation, ceil_mode = ctx.args
        _, idx = torch.ops.aten.max_pool2d_with_indices(x, kernel, stride, padding, dilation, ceil_mode)
        gx = torch.ops.aten.max_pool2d_with_indices_backward(grad_y, x, kernel, stride, padding, dilation, ceil_mode,
                                                             idx)
        return gx, None


def max_pool(x: Tensor, pool: nn.MaxPool2d) -> Tensor:
    """``pool(x)`` keeping ``x`` (which the edge keeps anyway) for backward instead of the argmax indices (int64,
    twice the output's bytes in float32): the backward recomputes them. ``[B, C, H, W] -> pool's output``."""
    if pool.return_indices:
        raise ValueError("pool: max_pool returns the pooled tensor only, got return_indices=True")
    pair = lambda v: list(v) if isinstance(v, (tuple, list)) else [v, v]  # noqa: E731
    return _MaxPool.apply(x, (pair(pool.kernel_size), pair(pool.stride), pair(pool.padding), pair(pool.dilation),
                              pool.ceil_mode))


def _column(weights: Tensor, col: int) -> Tensor:
    """Column ``col`` of ``[K]`` (a scalar) or ``[B, K]`` weights (``[B, 1, 1, 1]``), to multiply ``[B, C, H, W]``."""
    return weights[col] if weights.dim() == 1 else weights[:, col].view(-1, 1, 1, 1)


def _weighted_sum(weights: Tensor, cols, ys) -> Tensor:
    """``sum_m ys[m] * weights column cols[m]``, accumulated in place in the first product (whose backward keeps its
    operands, not it)."""
    out = None
    for col, y in zip(cols, ys):
        out = y * _column(weights, col) if out is None else out.add_(y * _column(weights, col))
    return out


class _BatchNormSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights, cols, m, *tensors):
        us, scales, shifts, ys = tensors[:m], tensors[m:2 * m], tensors[2 * m:3 * m], tensors[3 * m:]
        out = _weighted_sum(weights, cols, ys)
        ctx.save_for_backward(weights, *us, *scales, *shifts)
        ctx.cols, ctx.m = cols, m
        return out

    @staticmethod
    def backward(ctx, grad):
        weights, *rest = ctx.saved_tensors
        m = ctx.m
        us, scales, shifts = rest[:m], rest[m:2 * m], rest[2 * m:]
        grad_w = torch.zeros_like(weights) if ctx.needs_input_grad[0] else None
        grad_ys = []
        shape = (1, -1, 1, 1)
        for col, u, scale, shift in zip(ctx.cols, us, scales, shifts):
            w = _column(weights, col)
            if grad_w is not None:  # y recomputed from the BatchNorm's input: u * scale + shift, per channel
                gy = grad * torch.addcmul(shift.view(shape), u, scale.view(shape))
                if weights.dim() == 1:
                    grad_w[col] += gy.sum()
                else:
                    grad_w[:, col] += gy.flatten(1).sum(1)
            grad_ys.append(grad * w)
        return (grad_w, None, None, *([None] * (3 * m)), *grad_ys)


def _batch_norm_stats(u: Tensor, y: Tensor, bn: nn.Module) -> tuple:
    """The ``[C]`` mean and inverse standard deviation ``bn`` normalised ``u`` by, giving ``y``: the running ones in
    eval mode; else those the BatchNorm's autograd node saved (ATen's ``native_batch_norm`` keeps them), or
    computed again from ``u`` when another implementation ran."""
    if not (bn.training or not bn.track_running_stats):
        return bn.running_mean, (bn.running_var + bn.eps).rsqrt()
    fn = y.grad_fn
    if type(fn).__name__ == "NativeBatchNormBackward0" and fn._saved_input is u and fn._saved_training:
        mean, invstd = fn._saved_result1, fn._saved_result2
        if mean.shape == invstd.shape == (u.shape[1],):
            return mean, invstd
    var, mean = torch.var_mean(u, dim=(0, 2, 3), unbiased=False)
    return mean, (var + bn.eps).rsqrt()


def batch_norm_sum(weights: Tensor, cols, us, ys, bns) -> Tensor:
    """``sum_m weights[..., cols[m]] * ys[m]`` for ``ys[m] = bns[m](us[m])``, the outputs of affine BatchNorms
    (``[B, C, H, W]``; ``weights`` ``[K]`` or ``[B, K]``), keeping for backward each ``us[m]`` (which its BatchNorm
    keeps anyway) and two ``[C]`` vectors instead of ``ys[m]``: the weights' gradient recomputes ``ys[m]`` as
    ``us[m] * scale + shift``, with the statistics the BatchNorm normalised by (the batch's, or the running ones)
    and its weight and bias at the forward. The BatchNorms run as themselves (their own running statistics and
    counters: NNI's ``MixedBatchNorm2d`` never counts ``num_batches_tracked``)."""
    if not (torch.is_grad_enabled() and weights.requires_grad):  # no weight gradient: nothing to recompute
        return _weighted_sum(weights, cols, ys)
    scales, shifts = [], []
    with torch.no_grad():
        for u, y, bn in zip(us, ys, bns):
            mean, invstd = _batch_norm_stats(u, y, bn)
            scale = invstd * bn.weight
            scales.append(scale)
            shifts.append(bn.bias - mean * scale)
    return _BatchNormSum.apply(weights, tuple(cols), len(us), *us, *scales, *shifts, *ys)
