"""The zero op (``none``): a module of its own, importable without the compiled extension (search spaces build it
in pure-policy code)."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn


class Zero(nn.Module):
    """The ``none`` candidate: a zero output of the edge's output shape. :class:`FusedMixedOp` never runs it."""

    def __init__(self, stride: int = 1):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x.new_zeros(x[:, :, :: self.stride, :: self.stride].shape) if self.stride > 1 else x.new_zeros(x.shape)


def is_zero_op(module: Optional[nn.Module]) -> bool:
    """``None``, :class:`Zero`, or a class named ``Zero`` (DARTS's ``operations.Zero`` and its copies)."""
    return module is None or isinstance(module, Zero) or type(module).__name__ == "Zero"
