"""``darts1d``: the DARTS cell space on sequences. The cell structure, genotypes, supernet, costs and derivation of
:class:`~snas_fast.spaces.darts.DartsSpace`, with 1-D candidates on one-row planes ``[B, C, 1, L]`` (a sequence of
length L as a one-row image, :mod:`snas_fast.data.mnist1d`): separable and dilated ``1 x 3`` and ``1 x 5``
convolutions, ``1 x 3`` max and average pools, skip and none, a ``1 x 3`` stem, and a FactorizedReduce shifted
along the width only. Stride 2 halves the length (the single row stays one row).

The fused edge runs unchanged: on a one-row plane its 3x3 pools (padding 1, the average not counting the padding)
are exactly the ``1 x 3`` pools, so the pools fold as DARTS's do. Costs count the live weights only (``k``, not
``k * k``, per depthwise filter). The space's baselines are MNIST-1D's published references
(:mod:`.baselines`), and its defaults are MNIST-1D's: the dataset, and the references' protocol (Adam at 1e-2,
batch 100, no weight decay) as the retraining recipe (:data:`RECIPE`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from torch import nn

from ..base import BaselineSettings, Cost, Primitive
from ..darts.operations import DilConv, FactorizedReduce, Identity, SepConv, Zero
from ..darts.space import DartsSettings, DartsSpace, _dil_conv_cost, _pool_cost_of, _sep_conv_cost, _skip_cost_of
from .baselines import BASELINES, WIDTHS, reference

__all__ = ["DARTS1D_PRIMITIVES", "Darts1dSettings", "Darts1dSpace", "RECIPE", "SIZES"]


def _skip(C: int, stride: int, affine: bool) -> nn.Module:
    if stride == 1:
        return Identity()
    if C % 2 != 0:
        raise ValueError(f"C: skip_connect at stride 2 is FactorizedReduce, which needs an even C, got {C}")
    return FactorizedReduce(C, C, affine=affine, one_row=True)


def _sep(k: int):
    return lambda C, stride, affine: SepConv(C, C, (1, k), stride, (0, (k - 1) // 2), affine=affine)


def _dil(k: int):
    return lambda C, stride, affine: DilConv(C, C, (1, k), stride, (0, k - 1), (1, 2), affine=affine)


_pool_cost = _pool_cost_of(one_row=True)

#: The candidates, in the column order of ``log_alpha`` (DARTS's order, each ``k x k`` now ``1 x k``).
DARTS1D_PRIMITIVES: Tuple[Primitive, ...] = (
    Primitive("none", lambda C, stride, affine: Zero(stride), fold="zero", cost=lambda *_: Cost(), color="#7f7f7f"),
    Primitive("max_pool_1x3", lambda C, stride, affine: nn.MaxPool2d((1, 3), stride=stride, padding=(0, 1)),
              fold="max_pool", cost=_pool_cost, color="#1f77b4"),
    Primitive("avg_pool_1x3", lambda C, stride, affine: nn.AvgPool2d((1, 3), stride=stride, padding=(0, 1),
                                                                     count_include_pad=False),
              fold="avg_pool", cost=_pool_cost, color="#17becf"),
    Primitive("skip_connect", _skip, fold=lambda stride: "identity" if stride == 1 else "bn_tail",
              cost=_skip_cost_of(one_row=True), color="#2ca02c"),
    Primitive("sep_conv_1x3", _sep(3), fold="bn_tail", cost=_sep_conv_cost(3, one_row=True), color="#d62728"),
    Primitive("sep_conv_1x5", _sep(5), fold="bn_tail", cost=_sep_conv_cost(5, one_row=True), color="#ff7f0e"),
    Primitive("dil_conv_1x3", _dil(3), fold="bn_tail", cost=_dil_conv_cost(3, one_row=True), color="#9467bd"),
    Primitive("dil_conv_1x5", _dil(5), fold="bn_tail", cost=_dil_conv_cost(5, one_row=True), color="#8c564b"),
)

#: The networks' size by role: a search's, 3 cells of C = 8 (the retraining's depth), and a retraining's, 3 cells
#: of C = 4, 2k-10k parameters, ConvBase's size (5,210), where cells differ (at 5 cells of C = 8, 34k-45k
#: parameters, 5 random cells all scored 0.983-0.986).
SIZES = dict(search=dict(layers=3, channels=8), child=dict(layers=3, channels=4))

#: MNIST-1D's retraining recipe: the references' published optimiser (Adam at 1e-2, batch 100, no weight decay) with
#: our loop's cosine rate, on the 4000 training sequences, no auxiliary head, no drop-path, for 10 epochs (400 steps;
#: the references' published protocol is 150 epochs, 6000 steps at a constant rate: ``--epochs 150``).
RECIPE = dict(optimizer="adam", lr=1e-2, weight_decay=0.0, batch_size=100, epochs=10, auxiliary_weight=0.0,
              drop_path=0.0)


@dataclass
class Darts1dSettings(DartsSettings, BaselineSettings):
    """DARTS's settings, and the references to train instead of a cell (``--baseline``)."""


class Darts1dSpace(DartsSpace):
    """The DARTS cell space with 1-D candidates (:data:`DARTS1D_PRIMITIVES`) on one-row images; the module
    docstring says what differs from ``darts``. Its images must be one row high (``--dataset mnist1d``)."""

    name = "darts1d"
    settings = Darts1dSettings
    baselines = BASELINES

    def __init__(self, **options):
        options.setdefault("layers", SIZES["search"]["layers"])
        options.setdefault("channels", SIZES["search"]["channels"])
        super().__init__(DARTS1D_PRIMITIVES, **options)

    def __repr__(self) -> str:
        return "Darts1dSpace()"

    def configure(self, config=None, info=None) -> "Darts1dSpace":
        space = super().configure(config, info)
        if space.info is not None and space.info.image_shape[0] != 1:
            raise ValueError(f"dataset: space darts1d takes one-row images (sequences, e.g. mnist1d), got "
                             f"{space.info.name} of {space.info.image_shape[0]}x{space.info.image_shape[1]}")
        return space

    def defaults(self, role: str) -> Dict[str, object]:
        """MNIST-1D, a search's networks of 3 cells of C = 8, a retraining's of 3 cells of C = 4 (:data:`SIZES`)
        trained by :data:`RECIPE`."""
        if role == "child":
            return dict(SIZES["child"], dataset="mnist1d", **RECIPE)
        return dict(SIZES["search"], dataset="mnist1d")

    def published(self) -> Tuple[str, ...]:
        return ()  # the published cells name 2-D candidates

    def load(self, name: str):
        raise ValueError(f"name: space darts1d knows no published cells (theirs name 2-D candidates), got {name!r}")

    # -- networks -------------------------------------------------------------------------------------------------
    def stem(self, in_channels: int, C: int) -> nn.Module:
        """A ``1 x 3`` conv (padding 1 along the width, no bias) and a BatchNorm: ``[B, in_channels, 1, L] ->
        [B, C, 1, L]``."""
        return nn.Sequential(nn.Conv2d(in_channels, C, (1, 3), padding=(0, 1), bias=False), nn.BatchNorm2d(C))

    def reduce_input(self, C_in: int, C_out: int, affine: bool) -> nn.Module:
        return FactorizedReduce(C_in, C_out, affine=affine, one_row=True)

    def baseline(self, name: str, width: int, layers: int) -> nn.Module:
        """MNIST-1D's reference ``name`` (:mod:`.baselines`) of ``width`` channels or hidden units (its published
        width by default: :meth:`baseline_width`); ``layers`` is not read (the references have their published
        depth)."""
        info = self._info()
        return reference(name, info.image_shape[1], info.num_classes, width)

    def baseline_width(self, name: str) -> Optional[int]:
        """The published width of the reference ``name``."""
        return WIDTHS.get(name)
