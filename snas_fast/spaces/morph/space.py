"""Auto-Keras's space as a :class:`~snas_fast.spaces.SearchSpace`: ``MorphSpace``. An architecture is a network's
description (:class:`~.spec.Spec`); the space has no categorical decisions and no supernet: it grows networks.

- :meth:`MorphSpace.sample`: the initial network (Auto-Keras's, :meth:`Spec.initial`) after 0 .. ``depth`` random
  morphisms (uniformly many), each kept only while the network stays within ``max_params``;
- :meth:`MorphSpace.mutate`: one random morphism (:meth:`Spec.draw`);
- :meth:`MorphSpace.distance`: the edit distance (:func:`~.distance.edit_distance`), what Bayesian optimisation's
  kernel reads here (there is no fixed-length encoding);
- :meth:`MorphSpace.child`: :class:`~.net.MorphNet`, trained from a fresh initialisation.

The growth strategies that inherit weights along the morphisms (``morph-bo``, ``morph-random``, ``morph-bfs``:
:mod:`snas_fast.search.morph`) run on it too.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from ..._settings import setting
from ..base import LayoutSettings, SearchSpace
from .distance import edit_distance
from .spec import MorphSpecError, Spec

__all__ = ["MorphSettings", "MorphSpace", "input_form"]


def input_form(info) -> Tuple[int, bool]:
    """``(image_size, one_row)`` of the networks for the images of ``info`` (a
    :class:`~snas_fast.data.images.DatasetInfo`, its ``image_shape`` ``(H, W)``): ``(W, True)`` for sequences as
    one-row images (``H == 1``, inputs ``[B, C, 1, W]``), ``(H, False)`` for square ones."""
    height, width = info.image_shape
    return (width, True) if height == 1 else (height, False)


@dataclass
class MorphSettings(LayoutSettings):
    """The morphism space's own settings."""

    width: int = setting(64, "filters of the initial network's conv layers and units of its dense layer (morph; "
                             "Auto-Keras: 64)", roles=("search",), minimum=1)
    max_width: int = setting(512, "widest layer a wider morphism may make (morph)", roles=("search",), minimum=1)
    max_params: int = setting(1_000_000, "largest network (parameters) a search may propose (morph)",
                              roles=("search",), minimum=1)
    depth: int = setting(3, "a sampled network is the initial one after up to this many random morphisms (morph)",
                         roles=("search",), minimum=0)


class MorphSpace(SearchSpace):
    """Networks grown from Auto-Keras's initial one by function-preserving morphisms (module docstring)."""

    name = "morph"
    data_kind = "images"
    settings = MorphSettings

    def __init__(self, width: int = 64, max_width: int = 512, max_params: int = 1_000_000, depth: int = 3,
                 info=None):
        self.width, self.max_width, self.max_params, self.depth, self.info = width, max_width, max_params, depth, info

    def configure(self, config=None, info=None) -> "MorphSpace":
        space = copy.copy(self)
        for name in ("width", "max_width", "max_params", "depth", "channels_last"):
            value = getattr(config, name, None)
            if value is not None:
                setattr(space, name, value)
        space.info = info if info is not None else self.info
        return space

    def initial(self) -> Spec:
        """Auto-Keras's starting network for this space's images (one-row ones for sequences: :func:`input_form`)."""
        if self.info is None:
            raise ValueError("space morph: no dataset bound (configure(config, info) with the images' info)")
        size, one_row = input_form(self.info)
        return Spec.initial(self.info.in_channels, self.info.num_classes, self.width, size, one_row=one_row)

    def _grown(self, spec: Spec, generator: Optional[torch.Generator]) -> Optional[Spec]:
        """``spec`` after one random morphism within ``max_params`` (16 draws), or None."""
        for _ in range(16):
            child = spec.apply(spec.draw(generator, self.max_width))
            if child.num_params() <= self.max_params:
                return child
        return None

    def sample(self, generator: Optional[torch.Generator] = None, zero: bool = False) -> Spec:
        spec = self.initial()
        for _ in range(int(torch.randint(self.depth + 1, (1,), generator=generator))):
            spec = self._grown(spec, generator) or spec
        return spec

    def mutate(self, arch: Spec, generator: Optional[torch.Generator] = None) -> Spec:
        return self._grown(arch, generator) or arch

    def distance(self, a: Spec, b: Spec) -> float:
        return float(edit_distance(a, b))

    def to_dict(self, arch: Spec) -> dict:
        return {"space": self.name, **arch.to_dict()}

    def from_dict(self, d) -> Spec:
        try:
            return Spec.from_dict(self.check_tag(d))
        except MorphSpecError as error:
            raise ValueError(str(error)) from None

    def costs(self, arch: Spec) -> dict:
        return dict(params=arch.num_params())

    def child(self, arch: Spec, **options) -> nn.Module:
        """:class:`~.net.MorphNet` of ``arch`` (a fresh initialisation); ``options``: its ``memory_format``.
        ValueError for a network of other images than the space's."""
        from .net import MorphNet

        if self.info is not None:
            ours = (self.info.in_channels, self.info.num_classes, *input_form(self.info))
            theirs = (arch.in_channels, arch.num_classes, arch.image_size, arch.one_row)
            if theirs != ours:
                raise ValueError(f"a network for (in_channels, num_classes, image_size, one_row) {theirs}, the data "
                                 f"has {ours}")
        channels_last = getattr(self, "channels_last", False)
        default = torch.channels_last if channels_last else torch.contiguous_format
        return MorphNet(arch).to(memory_format=options.get("memory_format", default))
