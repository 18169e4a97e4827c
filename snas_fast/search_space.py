"""The DARTS CIFAR search space used by SNAS: the 8 candidate operations of an edge and the 14 edges of a cell.

The modules are DARTS's ``operations.py`` (same layers, same order, same attribute names, so DARTS and SNAS
state dicts load into them), with one deliberate difference: :class:`FactorizedReduce` also works on odd
heights and widths (see its docstring). Every module maps ``[B, C, H, W]`` to ``[B, C, H_out, W_out]`` with
``H_out = H`` at stride 1 and ``H_out = ceil(H / 2)`` at stride 2 (likewise ``W``).

Cell layout (snas.md): nodes 0 and 1 are the cell's inputs, nodes 2..5 its intermediate nodes. Intermediate
node ``2 + i`` (``i = 0..3``) takes one edge from every earlier node ``j = 0 .. i + 1``; the 14 edges are numbered
in that order (:data:`EDGES`, :func:`edge_index`), which is the row order of a ``[14, 8]`` ``log_alpha``.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .modules import Zero

__all__ = [
    "DilConv",
    "EDGES",
    "FactorizedReduce",
    "Identity",
    "NUM_EDGES",
    "NUM_NODES",
    "OPS",
    "PRIMITIVES",
    "ReLUConvBN",
    "SepConv",
    "Zero",
    "check_primitive",
    "edge_index",
    "make_op",
]

#: The candidate operations of an edge, in the order of the columns of ``log_alpha``. This order is a contract.
PRIMITIVES: List[str] = [
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
]

#: Intermediate nodes of a cell (cell nodes 2..5).
NUM_NODES = 4

#: ``EDGES[e] = (node, input)``: edge ``e`` feeds intermediate node ``node`` (0..3, i.e. cell node ``2 + node``)
#: from cell node ``input`` (0 and 1: the cell inputs; ``j >= 2``: intermediate node ``j - 2``).
EDGES: List[Tuple[int, int]] = [(node, j) for node in range(NUM_NODES) for j in range(node + 2)]

NUM_EDGES = len(EDGES)  # 14


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def edge_index(node: int, input: int) -> int:
    """Row of ``log_alpha`` for the edge into intermediate ``node`` (0..3) from cell node ``input`` (0..node+1)."""
    _check_int("node", node, 0)
    _check_int("input", input, 0)
    if node >= NUM_NODES:
        raise ValueError(f"node: expected an intermediate node index in 0..{NUM_NODES - 1}, got {node}")
    if input > node + 1:
        raise ValueError(f"input: node {node} (cell node {node + 2}) takes inputs 0..{node + 1}, got {input}")
    return node * (node + 3) // 2 + input


class _ReLUToBN(nn.Module):
    """A candidate ``self.op = Sequential(ReLU, ..., BatchNorm2d)``: its forward, its trailing BatchNorm and the
    part in between (the convolutions), which a fused edge runs on one shared ``relu(x)``."""

    op: nn.Sequential

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)

    @property
    def bn(self) -> nn.BatchNorm2d:
        """The trailing BatchNorm (the tail a fused edge folds in)."""
        return self.op[-1]

    def pre_bn(self, relu_x: Tensor) -> Tensor:
        """Everything between the leading ReLU and the trailing BatchNorm, applied to ``relu(x)``:
        ``forward(x) == bn(pre_bn(relu(x)))``."""
        for layer in self.op[1:-1]:
            relu_x = layer(relu_x)
        return relu_x


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



class Identity(nn.Module):
    """``skip_connect`` at stride 1: returns its input ``[B, C, H, W]`` unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class FactorizedReduce(nn.Module):
    """ReLU, two 1x1 stride-2 convs (the second on ``x[:, :, 1:, 1:]``), concat on channels, BN:
    ``[B, C_in, H, W] -> [B, C_out, ceil(H / 2), ceil(W / 2)]``; ``C_out`` must be even.

    Difference from DARTS: DARTS's version fails on an odd H or W (its two halves come out ceil(H/2) and
    floor(H/2) high). Here the shifted input is zero-padded by one row (column) at the bottom (right) when H (W) is
    odd, so both halves are ceil(H/2) high. For even H and W nothing is padded and the result is DARTS's, bit for bit.
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        if C_out % 2 != 0:
            raise ValueError(f"C_out: FactorizedReduce needs an even number of output channels, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.pre_bn(self.relu(x)))

    def pre_bn(self, relu_x: Tensor) -> Tensor:
        """The two convolutions of ``relu(x)``, concatenated: ``forward(x) == bn(pre_bn(relu(x)))``."""
        shifted = relu_x[:, :, 1:, 1:]
        pad_h, pad_w = relu_x.shape[2] % 2, relu_x.shape[3] % 2
        if pad_h or pad_w:
            shifted = F.pad(shifted, (0, pad_w, 0, pad_h))
        return torch.cat([self.conv_1(relu_x), self.conv_2(shifted)], dim=1)


def _pool(name: str, C: int, stride: int, pool_bn: bool) -> nn.Module:
    if name == "max_pool_3x3":
        pool = nn.MaxPool2d(3, stride=stride, padding=1)
    else:
        pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    # DARTS's search option: a BN without affine parameters after each pool (model_search.MixedOp).
    return nn.Sequential(pool, nn.BatchNorm2d(C, affine=False)) if pool_bn else pool


#: DARTS-style table: ``OPS[name](C, stride, affine) -> nn.Module`` (pools without the search BN).
OPS = {
    "none": lambda C, stride, affine: Zero(stride),
    "max_pool_3x3": lambda C, stride, affine: _pool("max_pool_3x3", C, stride, False),
    "avg_pool_3x3": lambda C, stride, affine: _pool("avg_pool_3x3", C, stride, False),
    "skip_connect": lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
}


def check_primitive(name) -> str:
    """``name`` if it is one of :data:`PRIMITIVES`, else ValueError listing them."""
    if not isinstance(name, str) or name not in PRIMITIVES:
        raise ValueError(f"name: expected one of {PRIMITIVES}, got {name!r}")
    return name


def make_op(name: str, C: int, stride: int, affine: bool, pool_bn: bool = False) -> nn.Module:
    """The candidate ``name`` for an edge with ``C`` channels in and out: ``[B, C, H, W] -> [B, C, H_out, W_out]``.

    ``stride`` is 1 (normal edge) or 2 (an edge from a cell input in a reduction cell); ``skip_connect`` is
    :class:`Identity` at stride 1 and ``FactorizedReduce(C, C)`` (needs an even C) at stride 2. ``affine``: whether
    the BNs have learnable scale and shift (False during search, snas.md). ``pool_bn=True`` follows each pool with
    ``BatchNorm2d(C, affine=False)``, as DARTS's search does. ``none`` is :class:`snas_fast.Zero`.
    """
    check_primitive(name)
    _check_int("C", C, 1)
    if isinstance(stride, bool) or stride not in (1, 2):
        raise ValueError(f"stride: expected 1 or 2, got {stride!r}")
    if name == "skip_connect" and stride == 2 and C % 2 != 0:
        raise ValueError(f"C: skip_connect at stride 2 is FactorizedReduce, which needs an even C, got {C}")
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        return _pool(name, C, stride, bool(pool_bn))
    return OPS[name](C, stride, bool(affine))
