"""Randomness as a function of (seed, epoch, step, rank) alone: a resumed run draws exactly what an uninterrupted
one draws, and ranks draw what they should (the same, or each its own)."""
from __future__ import annotations

import random

import numpy as np
import torch

from .._seeds import make_generator, seed_for

__all__ = ["make_generator", "seed_epoch", "seed_everything", "seed_for"]


def seed_everything(seed: int) -> None:
    """Seeds torch's, Python's and numpy's global generators with ``seed`` (before a model is built)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seeds torch's, Python's and numpy's global generators from (seed, epoch, rank): what an epoch draws
    (drop-path masks, loader seeds) depends on those alone, so a resumed run draws what an uninterrupted one
    does, and ranks draw different masks."""
    seed_everything(seed_for(seed, epoch, rank))
