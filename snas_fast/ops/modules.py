"""``nn.Module`` front ends of the fused ops."""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import Tensor, nn

from .functional import gumbel_mixed_op
from .zero import Zero, is_zero_op


class FusedMixedOp(nn.Module):
    """An edge of a one-shot supernet: K candidate modules mixed by a Gumbel-softmax sample in one kernel.

    Candidates that are ``None`` or zero ops (:func:`is_zero_op`) keep their place in ``log_alpha`` but are
    neither run nor read.
    """

    def __init__(self, candidates: Iterable[Optional[nn.Module]]):
        super().__init__()
        candidates = list(candidates)
        if not candidates:
            raise ValueError("candidates: expected at least one candidate module, got none")
        for k, c in enumerate(candidates):
            if c is not None and not isinstance(c, nn.Module):
                raise TypeError(f"candidates[{k}]: expected an nn.Module or None, got {type(c).__name__}")
        self.live = [k for k, c in enumerate(candidates) if not is_zero_op(c)]
        if not self.live:
            raise ValueError("candidates: expected at least one candidate that is not a zero op")
        self.num_candidates = len(candidates)
        self.candidates = nn.ModuleList([c if c is not None else Zero() for c in candidates])

    def forward(self, x: Tensor, log_alpha: Tensor, tau: float, noise: Optional[Tensor] = None, hard: bool = False):
        """``x``: the edge input ``[B, C, H, W]``; ``log_alpha``: ``[K]`` or ``[B, K]``; returns the edge output."""
        ys = [None] * self.num_candidates
        for k in self.live:
            ys[k] = self.candidates[k](x)
        return gumbel_mixed_op(ys, log_alpha, tau, noise=noise, hard=hard)
