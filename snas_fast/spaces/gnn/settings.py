"""The graph space's settings (:class:`GnnSettings`), apart from the space so that reading them loads no PyG."""
from __future__ import annotations

from dataclasses import dataclass

from ..._settings import setting
from ..base import BaselineSettings, MixedSettings, SizeSettings

__all__ = ["GnnSettings"]


@dataclass
class GnnSettings(SizeSettings, MixedSettings, BaselineSettings):
    """The graph space's own settings (besides its size and its baselines)."""

    nodes: int = setting(2, "intermediate states per cell (gnn)", roles=("search",), minimum=1)
