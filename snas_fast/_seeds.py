"""Seeded random streams as a function of integer parts alone (:func:`seed_for`, :func:`make_generator`): the one place
they are made, below every layer (the data splits, the spaces' samples and the engine's epochs draw from them)."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["make_generator", "seed_for"]


def seed_for(*parts: int) -> int:
    """A 63-bit seed mixed from integer ``parts`` (numpy's SeedSequence): nearby tuples give unrelated streams."""
    words = [int(p) & 0xFFFFFFFF for p in parts] + [len(parts)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


def make_generator(*parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`seed_for` of ``parts``."""
    return torch.Generator().manual_seed(seed_for(*parts))
