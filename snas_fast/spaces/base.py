"""What every search space is made of: candidate operations as :class:`Primitive` records, their cost model, and
the :class:`SearchSpace` protocol a strategy talks to. Knows no strategy and no training loop.

A primitive tells the fused edge (:func:`snas_fast.mixed_edge`) how to fold it (``fold``):

- ``"zero"``: the ``none`` candidate; never run, never read.
- ``"max_pool"`` / ``"avg_pool"``: a 3x3 pool (padding 1, ``count_include_pad=False`` for the average) computed
  from the edge input inside the kernel.
- ``"identity"``: the edge input itself, inside the kernel (only at stride 1).
- ``"bn_tail"``: the module ends in an affine-free ``BatchNorm2d``: it has ``bn`` and ``pre_bn(x, relu_x=None)`` with
  ``module(x) == module.bn(module.pre_bn(x))``; the kernel applies the BatchNorm, weights and sums. A module with
  ``relu_input = True`` is handed ``relu_x``, one ``relu(x)`` (detached) shared by the edge's candidates.
- ``"opaque"``: runs as it is; its output is weighted and summed by :func:`snas_fast.mixed_op`.

``fold`` may also be a function of the stride (DARTS's ``skip_connect`` is an identity at stride 1 and a
FactorizedReduce, a ``"bn_tail"``, at stride 2). A pool wrapped by the supernet's search BatchNorm
(:class:`SearchBN`) becomes a ``"bn_tail"``.
"""
from __future__ import annotations

import importlib
import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn


__all__ = ["Cost", "FOLDS", "Primitive", "SearchBN", "SearchSpace", "count_module", "get_space", "register_space",
           "space_names"]

#: How the fused edge may fold a candidate (see the module docstring).
FOLDS = ("zero", "max_pool", "avg_pool", "identity", "bn_tail", "opaque")


@dataclass(frozen=True)
class Cost:
    """``params``, ``flops`` (multiply-adds) and ``mac`` (elements read + written) of one module, per example.

    Costs add (``a + b``); ``tuple(cost)`` is ``(params, flops, mac)``.
    """

    params: int = 0
    flops: int = 0
    mac: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(self.params + other.params, self.flops + other.flops, self.mac + other.mac)

    def __iter__(self) -> Iterator[int]:
        return iter((self.params, self.flops, self.mac))


@dataclass(frozen=True)
class Primitive:
    """One candidate operation of an edge.

    Args:
        name: its name in genotypes and plots (unique within a space).
        build: ``build(C, stride, affine) -> nn.Module`` mapping ``[B, C, H, W]`` to ``[B, C, H_out, W_out]``
            (``H_out = ceil(H / stride)``); ``affine``: learnable BatchNorm scale and shift (False in search).
        fold: how the fused edge folds it, one of :data:`FOLDS`, or a function ``stride -> fold``.
        cost: ``cost(C, H, W, stride, affine) -> Cost`` from shapes alone; None: measured on the built module
            (:func:`count_module`).
        color: a Matplotlib colour for plots; None: one is chosen.
    """

    name: str
    build: Callable[[int, int, bool], nn.Module]
    fold: Union[str, Callable[[int], str]] = "opaque"
    cost: Optional[Callable[[int, int, int, int, bool], Cost]] = None
    color: Optional[str] = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: expected a non-empty string, got {self.name!r}")
        if not callable(self.build):
            raise TypeError(f"build: expected a function (C, stride, affine) -> nn.Module, got "
                            f"{type(self.build).__name__}")
        if not callable(self.fold) and self.fold not in FOLDS:
            raise ValueError(f"fold: expected one of {list(FOLDS)} or a function of the stride, got {self.fold!r}")
        if self.cost is not None and not callable(self.cost):
            raise TypeError(f"cost: expected None or a function (C, H, W, stride, affine) -> Cost, got "
                            f"{type(self.cost).__name__}")

    def fold_at(self, stride: int) -> str:
        """The fold at ``stride``."""
        fold = self.fold(stride) if callable(self.fold) else self.fold
        if fold not in FOLDS:
            raise ValueError(f"{self.name}.fold({stride}): expected one of {list(FOLDS)}, got {fold!r}")
        return fold

    def costs(self, C: int, H: int, W: int, stride: int, affine: bool = False) -> Cost:
        """Its :class:`Cost` on an ``H x W`` edge with ``C`` channels at ``stride``, per example."""
        if self.cost is not None:
            return self.cost(C, H, W, stride, affine)
        if self.fold_at(stride) == "zero":
            return Cost()
        return count_module(self.build(C, stride, affine), (C, H, W))


class SearchBN(nn.Sequential):
    """``Sequential(module, BatchNorm2d(C, affine=False))``: DARTS's search BatchNorm after a pool (``pool_bn``),
    a ``"bn_tail"`` candidate whose ``pre_bn`` is the pool. State-dict keys ``0.*`` and ``1.*`` as DARTS's."""

    def __init__(self, module: nn.Module, C: int):
        super().__init__(module, nn.BatchNorm2d(C, affine=False))

    @property
    def bn(self) -> nn.BatchNorm2d:
        return self[1]

    def pre_bn(self, x: Tensor, relu_x: Optional[Tensor] = None) -> Tensor:
        return self[0](x)


def count_module(module: nn.Module, input_shape: Sequence[int]) -> Cost:
    """Measure ``module``'s cost directly, with forward hooks, on a zero input of ``input_shape`` (``[C, H, W]``
    or ``[N, C, H, W]``; counts are per example). It runs a forward pass.

    ``params``: parameters with ``requires_grad``. ``flops``: multiply-adds of every ``nn.Conv2d`` and
    ``nn.Linear``. ``mac``: input + output elements + weights of every conv, linear and pool, and input + output of
    every ``nn.Identity``; nothing for other modules (ReLU and BatchNorm are taken as fused into their neighbours).
    The module runs in eval mode under ``no_grad``; its mode is restored.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module: expected an nn.Module, got {type(module).__name__}")
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape):
        raise ValueError(f"input_shape: expected [C, H, W] or [N, C, H, W] of positive ints, got {list(input_shape)}")
    n = shape[0]
    counts = {"flops": 0, "mac": 0}

    def own_params(m):
        return sum(p.numel() for p in m.parameters(recurse=False))

    def conv_hook(m, inputs, out):
        x = inputs[0]
        counts["flops"] += out.numel() // n * (m.in_channels // m.groups) * math.prod(m.kernel_size)
        counts["mac"] += x.numel() // n + out.numel() // n + own_params(m)

    def linear_hook(m, inputs, out):
        counts["flops"] += out.numel() // n * m.in_features
        counts["mac"] += inputs[0].numel() // n + out.numel() // n + own_params(m)

    def io_hook(m, inputs, out):
        counts["mac"] += inputs[0].numel() // n + out.numel() // n

    hooks, modes = [], [(m, m.training) for m in module.modules()]
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.Identity)):
            hooks.append(m.register_forward_hook(io_hook))
    ref = next(iter(module.parameters()), None)
    if ref is None:
        ref = next(iter(module.buffers()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(shape, device=device, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes:
            m.train(mode)
    params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return Cost(params, counts["flops"], counts["mac"])


class SearchSpace(ABC):
    """A search space: its candidate operations, how its supernet and its child networks are built, and how a
    genotype (one architecture) is sampled, encoded and derived. Strategies use only this interface.

    ``primitives``: the tuple of :class:`Primitive` records, in the order of the columns of ``log_alpha``.
    """

    #: the name the CLI knows it by (``--space``), see :func:`register_space`
    name: str = ""
    primitives: Tuple[Primitive, ...] = ()

    @property
    def op_names(self) -> Tuple[str, ...]:
        """The primitives' names, in column order."""
        return tuple(p.name for p in self.primitives)

    def primitive(self, name: str) -> Primitive:
        """The primitive called ``name``; ValueError listing the names otherwise."""
        for p in self.primitives:
            if p.name == name:
                return p
        raise ValueError(f"name: expected one of {list(self.op_names)}, got {name!r}")

    def zero_columns(self, stride: int = 1) -> Tuple[int, ...]:
        """The columns whose primitive is the zero op (``fold == "zero"``)."""
        return tuple(k for k, p in enumerate(self.primitives) if p.fold_at(stride) == "zero")

    @abstractmethod
    def supernet(self, C: int, num_classes: int, layers: int, **options) -> nn.Module:
        """The one-shot network holding every candidate of every edge, with its architecture parameters."""

    @abstractmethod
    def network(self, genotype, C: int, num_classes: int, layers: int, auxiliary: bool = False,
                **options) -> nn.Module:
        """The child network of ``genotype``, trained from scratch in evaluation."""

    @abstractmethod
    def random_genotype(self, generator: Optional[torch.Generator] = None, include_none: bool = False):
        """A genotype drawn uniformly (the random baseline); ``include_none``: the zero op may be drawn too."""

    @abstractmethod
    def encode(self, genotype) -> Tensor:
        """``genotype`` as one-hot architecture weights (the sample that runs that child in the supernet)."""

    @abstractmethod
    def derive(self, alphas: Sequence[Tensor], rule: str):
        """The genotype of architecture weights ``alphas`` under derivation ``rule``."""

    def decisions(self, form: str) -> Tuple[int, ...]:
        """The sizes of the categorical decisions that make one genotype of ``form``, in order (what a controller
        such as MONAS's emits, one softmax each). Optional: a space without it has no controller strategies."""
        raise NotImplementedError(f"space {self.name!r} does not describe its genotypes as decisions")

    def from_decisions(self, choices: Sequence[int], form: str):
        """The genotype of one index per decision of :meth:`decisions`."""
        raise NotImplementedError(f"space {self.name!r} does not describe its genotypes as decisions")


_REGISTRY: Dict[str, Union[str, Callable[[], SearchSpace]]] = {
    "darts": "snas_fast.spaces.darts:DartsSpace",
    "gnn": "snas_fast.spaces.gnn:GnnSpace",
}


def register_space(name: str, factory: Callable[[], SearchSpace]) -> None:
    """Make ``factory()`` the space ``name`` (``--space name`` on the CLI, :func:`get_space`)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory: expected a function returning a SearchSpace, got {type(factory).__name__}")
    _REGISTRY[name] = factory


def space_names() -> Tuple[str, ...]:
    """The names :func:`get_space` knows."""
    return tuple(_REGISTRY)


def get_space(name: str) -> SearchSpace:
    """A new instance of the registered space ``name`` (see :func:`space_names`)."""
    if name not in _REGISTRY:
        raise ValueError(f"space: expected one of {', '.join(_REGISTRY)}, got {name!r}")
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
    space = factory()
    if not isinstance(space, SearchSpace):
        raise TypeError(f"space {name!r}: its factory returned {type(space).__name__}, not a SearchSpace")
    return space
