"""The candidate operations of the DARTS CIFAR space: DARTS's ``operations.py``, with the same layers, order and
attribute names, so DARTS and SNAS state dicts load into them, and one deliberate difference: :class:`FactorizedReduce`
also works on odd heights and widths (see its docstring). Every module maps ``[B, C, H, W]`` to
``[B, C, H_out, W_out]`` with ``H_out = H`` at stride 1 and ``H_out = ceil(H / 2)`` at stride 2 (likewise ``W``).

The modules that end in a BatchNorm are ``"bn_tail"`` candidates of the fused edge (:mod:`snas_fast.spaces.base`):
their ``pre_bn(x, relu_x)`` computes everything before that BatchNorm with the ReLU prefixes recomputed in backward
(:mod:`snas_fast.ops.recompute`) instead of kept.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops.recompute import bn_relu_conv, relu_conv
from ...ops.zero import Zero

__all__ = ["DilConv", "FactorizedReduce", "Identity", "ReLUConvBN", "SepConv", "Zero"]


class _ReLUToBN(nn.Module):
    """A candidate ``self.op = Sequential(ReLU, ..., BatchNorm2d)``: its forward, its trailing BatchNorm and the
    part in between (the convolutions), which a fused edge runs on one shared ``relu(x)``."""

    op: nn.Sequential
    relu_input = True  # pre_bn takes the edge's shared relu(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)

    @property
    def bn(self) -> nn.BatchNorm2d:
        """The trailing BatchNorm (the tail a fused edge folds in)."""
        return self.op[-1]

    def pre_bn(self, x: Tensor, relu_x: Optional[Tensor] = None) -> Tensor:
        """Everything before the trailing BatchNorm: ``forward(x) == bn(pre_bn(x))``. ``relu_x``: ``relu(x)``,
        shared by the edge's candidates; the first convolution keeps ``x`` for backward instead
        (:func:`snas_fast.ops.recompute.relu_conv`)."""
        if relu_x is None:
            relu_x = F.relu(x)
        return self._after_first_conv(relu_conv(x, relu_x, self.op[1]))

    def _after_first_conv(self, t: Tensor) -> Tensor:
        for layer in self.op[2:-1]:
            t = layer(t)
        return t


class ReLUConvBN(_ReLUToBN):
    """ReLU, ``kernel_size`` conv (no bias), BN: ``[B, C_in, H, W] -> [B, C_out, H_out, W_out]``."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(_ReLUToBN):
    """ReLU, dilated depthwise ``kernel_size`` conv (groups = C_in), 1x1 conv, BN:
    ``[B, C_in, H, W] -> [B, C_out, H_out, W_out]``."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(_ReLUToBN):
    """Two DilConv-like halves with dilation 1; the first has the stride, the second stride 1 (as DARTS):
    ``[B, C_in, H, W] -> [B, C_out, H_out, W_out]``."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def _after_first_conv(self, t: Tensor) -> Tensor:
        layers = self.op  # ReLU, dw, pw, BN, ReLU, dw, pw, [BN]
        t = layers[2](t)
        if type(layers[3]) is nn.BatchNorm2d and not layers[3].affine:  # BN -> ReLU -> dw, ReLU recomputed
            return layers[6](bn_relu_conv(t, layers[3], layers[5]))
        return super()._after_first_conv(t)  # a BatchNorm of another kind (synchronised) runs as it is


class Identity(nn.Identity):
    """``skip_connect`` at stride 1: returns its input ``[B, C, H, W]`` unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class FactorizedReduce(nn.Module):
    """ReLU, two 1x1 stride-2 convs (the second on ``x[:, :, 1:, 1:]``), concat on channels, BN:
    ``[B, C_in, H, W] -> [B, C_out, ceil(H / 2), ceil(W / 2)]``; ``C_out`` must be even.

    Difference from DARTS: DARTS's version fails on an odd H or W (its two halves come out ceil(H/2) and
    floor(H/2) high). Here the shifted input is zero-padded by one row (column) at the bottom (right) when H (W) is
    odd, so both halves are ceil(H/2) high. For even H and W nothing is padded and the result is DARTS's, bit for bit.

    ``one_row``: the 1-D form for one-row planes (``H = 1``, the ``darts1d`` space): the second conv reads
    ``x[:, :, :, 1:]`` (shifted along the width only; shifting the single row away would leave it all padding).
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True, one_row: bool = False):
        super().__init__()
        if C_out % 2 != 0:
            raise ValueError(f"C_out: FactorizedReduce needs an even number of output channels, got {C_out}")
        self.one_row = bool(one_row)
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    relu_input = True  # pre_bn takes the edge's shared relu(x)

    def forward(self, x: Tensor) -> Tensor:
        r = self.relu(x)
        return self.bn(torch.cat([self.conv_1(r), self.conv_2(self._shifted(r))], dim=1))

    def pre_bn(self, x: Tensor, relu_x: Optional[Tensor] = None) -> Tensor:
        """The two convolutions of ``relu(x)``, concatenated: ``forward(x) == bn(pre_bn(x))``, keeping ``x`` for
        backward instead of ``relu(x)`` (:func:`snas_fast.ops.recompute.relu_conv`)."""
        if relu_x is None:
            relu_x = F.relu(x)
        return torch.cat([relu_conv(x, relu_x, self.conv_1),
                          relu_conv(self._shifted(x), self._shifted(relu_x), self.conv_2)], dim=1)

    def _shifted(self, t: Tensor) -> Tensor:
        """``t[:, :, 1:, 1:]`` (``one_row``: ``t[:, :, :, 1:]``), zero-padded back to an even size at the bottom and
        right when H or W is odd."""
        if self.one_row:
            return F.pad(t[:, :, :, 1:], (0, t.shape[3] % 2)) if t.shape[3] % 2 else t[:, :, :, 1:]
        shifted = t[:, :, 1:, 1:]
        pad_h, pad_w = t.shape[2] % 2, t.shape[3] % 2
        return F.pad(shifted, (0, pad_w, 0, pad_h)) if pad_h or pad_w else shifted
