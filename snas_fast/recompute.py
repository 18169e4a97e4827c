"""Cheap prefixes of a convolution, recomputed in backward instead of saved (used by the deep-fused edge).

A DARTS convolution candidate starts ``ReLU -> depthwise conv`` and SepConv has ``BatchNorm -> ReLU -> depthwise
conv`` in its middle. Autograd would keep the ReLU's output for the convolution's weight gradient: one more tensor
of the edge's size per candidate. Here the convolution keeps its *input's input* instead (``x``, which the fused edge
keeps anyway, or the BatchNorm's input, which the BatchNorm keeps anyway) and recomputes the elementwise prefix in
backward: the same gradients for one elementwise pass. Both functions take the same module objects as the eager
path, so parameters, buffers and state dicts are shared.
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
    def forward(ctx, x, relu_x, weight, args):
        ctx.save_for_backward(x, weight)
        ctx.args = args
        stride, padding, dilation, groups = args
        return F.conv2d(relu_x, weight, None, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        r = F.relu(x)
        gr, gw = _conv_backward(grad_y, r, weight, ctx.args, ctx.needs_input_grad[0], ctx.needs_input_grad[2])
        gx = gr * (x > 0).to(gr.dtype) if gr is not None else None
        return gx, None, gw, None


def relu_conv(x: Tensor, relu_x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv(relu(x))`` keeping ``x`` (not ``relu(x)``) for backward. ``relu_x``: ``relu(x)``, computed once by the
    caller and shared by every candidate (detached: the gradient goes to ``x``). ``[B, C, H, W] -> conv's output``."""
    if conv.bias is not None:
        raise ValueError("conv: relu_conv takes bias-free convolutions (DARTS's), got one with a bias")
    return _ReluConv.apply(x, relu_x.detach(), conv.weight, _conv_args(conv))


class _BnReluConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, weight, mean, rstd, args, batch_stats):
        ctx.save_for_backward(u, weight, mean, rstd)
        ctx.args, ctx.batch_stats = args, batch_stats
        stride, padding, dilation, groups = args
        r = F.relu((u - mean[:, None, None]) * rstd[:, None, None]).to(u.dtype)
        return F.conv2d(r, weight, None, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_y):
        u, weight, mean, rstd = ctx.saved_tensors
        acc = torch.float64 if u.dtype == torch.float64 else torch.float32
        xhat = ((u.to(acc) - mean[:, None, None]) * rstd[:, None, None])
        r = F.relu(xhat).to(u.dtype)
        gr, gw = _conv_backward(grad_y, r, weight, ctx.args, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        gu = None
        if gr is not None:
            gxhat = gr.to(acc) * (xhat > 0).to(acc)
            if ctx.batch_stats:  # BatchNorm's backward with batch statistics
                dims = (0, 2, 3)
                gxhat = gxhat - gxhat.mean(dims, keepdim=True) - xhat * (gxhat * xhat).mean(dims, keepdim=True)
            gu = (gxhat * rstd[:, None, None]).to(u.dtype)
        return gu, gw, None, None, None, None


def bn_relu_conv(u: Tensor, bn: nn.BatchNorm2d, conv: nn.Conv2d) -> Tensor:
    """``conv(relu(bn(u)))`` for an affine-free ``bn``, keeping ``u`` and the per-channel statistics (not the
    BatchNorm's output nor the ReLU's) for backward. ``bn``'s running statistics are updated exactly as the module
    updates them; eval mode normalises with them. ``u``: ``[B, C, H, W]``."""
    if bn.affine or conv.bias is not None:
        raise ValueError("bn, conv: bn_relu_conv takes an affine-free BatchNorm and a bias-free convolution")
    acc = torch.float64 if u.dtype == torch.float64 else torch.float32
    batch_stats = bn.training or not bn.track_running_stats
    with torch.no_grad():
        if batch_stats:
            var, mean = torch.var_mean(u.to(acc), dim=(0, 2, 3), correction=0)
            if bn.training and bn.track_running_stats:
                bn.num_batches_tracked.add_(1)
                momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                n = u.numel() // u.shape[1]
                bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
                bn.running_var.lerp_((var * n / max(n - 1, 1)).to(bn.running_var.dtype), momentum)
        else:
            mean, var = bn.running_mean.to(acc), bn.running_var.to(acc)
        rstd = (var + bn.eps).rsqrt()
    return _BnReluConv.apply(u, conv.weight, mean, rstd, _conv_args(conv), batch_stats)


def lean_pre_bn(op: nn.Module, x: Tensor, relu_x: Tensor) -> Tensor:
    """``op.pre_bn(relu(x))`` for the search space's convolution candidates (SepConv, DilConv, FactorizedReduce),
    with the ReLU prefixes recomputed in backward (:func:`relu_conv`, :func:`bn_relu_conv`) instead of kept; other
    modules (or BatchNorms of another kind, e.g. synchronised) take their own ``pre_bn``."""
    from .search_space import DilConv, FactorizedReduce, SepConv

    if isinstance(op, SepConv):
        layers = op.op  # ReLU, dw, pw, BN, ReLU, dw, pw, [BN]
        if type(layers[3]) is nn.BatchNorm2d and not layers[3].affine:
            t = layers[2](relu_conv(x, relu_x, layers[1]))
            return layers[6](bn_relu_conv(t, layers[3], layers[5]))
    elif isinstance(op, DilConv):
        layers = op.op  # ReLU, dw, pw, [BN]
        return layers[2](relu_conv(x, relu_x, layers[1]))
    elif isinstance(op, FactorizedReduce):
        shifted_x, shifted_r = x[:, :, 1:, 1:], relu_x[:, :, 1:, 1:]
        pad_h, pad_w = x.shape[2] % 2, x.shape[3] % 2
        if pad_h or pad_w:
            shifted_x = F.pad(shifted_x, (0, pad_w, 0, pad_h))
            shifted_r = F.pad(shifted_r, (0, pad_w, 0, pad_h))
        return torch.cat([relu_conv(x, relu_x, op.conv_1), relu_conv(shifted_x, shifted_r, op.conv_2)], dim=1)
    return op.pre_bn(relu_x)
