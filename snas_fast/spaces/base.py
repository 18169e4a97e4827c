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

import copy
import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .._lazy import make
from .._settings import setting


__all__ = ["BaselineSettings", "CAPABILITIES", "Cost", "Decision", "FOLDS", "LayoutSettings", "MixedSettings", "OneShot",
           "Primitive", "SearchBN", "SearchSpace", "SizeSettings", "Unsupported", "count_module", "get_space",
           "register_space", "space_names", "space_of_dict"]

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


class Unsupported(NotImplementedError):
    """What a space cannot do (a tabular space builds no network; a space without categorical decisions cannot be
    encoded); the message is one line naming the space."""


@dataclass(frozen=True)
class Decision:
    """One categorical decision of an architecture: its ``name`` and the labels of its ``options``."""

    name: str
    options: Tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.options)


@dataclass
class SizeSettings:
    """The size of the networks a space builds, for the spaces that read it. None: the space's default for the
    command (:meth:`SearchSpace.defaults`: a search's networks are smaller than a retraining's)."""

    layers: Optional[int] = setting(None, "cells in the network (gnn: cells of node and edge operations)", kind=int,
                                    minimum=1)
    channels: Optional[int] = setting(None, "channels of the first cells, C (gnn: the width F of every node and edge "
                                            "state)", kind=int, minimum=1)


@dataclass
class MixedSettings:
    """How a supernet computes its mixed operations, for the spaces that offer several ways (the same numbers each;
    the fused ones faster and leaner: bench/RESULTS.md)."""

    mixed: str = setting("fused", "how the supernet mixes: darts: fused (deep-fused edges), fused_sum (the fused "
                                  "weighted sum only) or eager (DARTS's sum); gnn: fused (gumbel_mixed_op / "
                                  "mixed_op), fused_edge (BatchNorms folded into mixed_edge, prefixes recomputed) or "
                                  "eager", choices=("fused", "fused_sum", "fused_edge", "eager"), roles=("supernet",))


@dataclass
class LayoutSettings:
    """The memory format of the networks a space builds on images."""

    channels_last: bool = setting(False, "run the network in channels_last (NHWC) memory format: faster "
                                         "convolutions on CPU and cuDNN's layout in half precision (bench/RESULTS.md)")


@dataclass
class BaselineSettings:
    """A hand-designed network of the space trained instead of a genotype (``snas-fast train --baseline``), for the
    spaces that have baselines (:meth:`SearchSpace.baseline`)."""

    baseline: str = setting("none", "train a baseline network of the space instead of a genotype (none: the genotype)",
                            roles=("child",))
    baseline_layers: int = setting(4, "baseline: its layers", roles=("child",), minimum=1)
    param_budget: Optional[str] = setting(None, "baseline: its width is chosen to come closest to this many "
                                                "parameters (an integer, or a run directory whose summary.json gives "
                                                "them); default: --channels", kind=str, roles=("child",))


#: What a strategy may need of a space (:meth:`SearchSpace.lacks`).
CAPABILITIES = ("data", "decisions", "sample", "mutate", "encode", "distance", "child", "supernet", "query")


class SearchSpace(ABC):
    """A search space: the only thing a strategy sees of the architectures it searches (NASLib's and NNI's split of
    space and optimiser). An architecture (``arch``) is whatever object the space makes (a DARTS
    :class:`~snas_fast.spaces.darts.genotypes.Genotype`, a graph genotype, a morphable network's description, a row
    of a benchmark table); a strategy only hands it back to the space.

    The choices (every space):

    - :meth:`decisions`: the named categorical decisions that make an architecture (empty: none, e.g. a morphism
      space grows networks instead); :meth:`from_choices` / :meth:`to_choices` between an architecture and one index
      per decision;
    - :meth:`sample` (the space's uniform prior), :meth:`mutate` (one decision changed: evolution), :meth:`encode`
      (a fixed-length float vector ``[D]``: surrogate models), :meth:`distance` (optional: kernels on spaces
      without an encoding), :meth:`to_dict` / :meth:`from_dict` (JSON with a ``"space"`` tag; another space's is
      refused in one line);
    - :meth:`costs`: ``{"params": ..., ...}`` of an architecture, FLOPs, MAC or latency where the space counts them.

    A trainable space (``data_kind`` set) also builds networks: :meth:`child` (the network a retraining trains from
    scratch), :meth:`supernet` (the one-shot network on the fused op, one ``log_alpha`` per decision group:
    :class:`OneShot`), :meth:`derive` (a supernet's choice). A tabular space answers :meth:`query` instead.

    A space is made by its registry factory (:func:`get_space`) and bound to one run's settings and data by
    :meth:`configure`; ``settings`` is the dataclass of its own flags (:func:`snas_fast._settings.setting` fields,
    shown by the commands that read them), :meth:`defaults` its defaults per command role.
    """

    #: the name the CLI knows it by (``--space``), see :func:`register_space`
    name: str = ""
    #: the kind of dataset it takes (``snas_fast.data.KINDS``: ``"images"``, ``"graphs"``), None: no data (tabular)
    data_kind: Optional[str] = "images"
    #: its task
    task: str = "classification"
    #: the dataclass of its own settings (None: none)
    settings: Optional[type] = None
    #: its candidate operations (:class:`Primitive`), in the column order of its ``log_alpha``, where it has them
    primitives: Tuple[Primitive, ...] = ()

    # -- one run's space ----------------------------------------------------------------------------------------
    def configure(self, config=None, info=None) -> "SearchSpace":
        """This space for one run: ``config`` (a settings object with the fields of :attr:`settings`) and ``info``
        (the dataset's, ``snas_fast.data``). Default: the space as it is."""
        return self

    def defaults(self, role: str) -> Dict[str, object]:
        """Default values of the settings a command of ``role`` (``"search"`` or ``"child"``) leaves at None."""
        return {}

    # -- the choices --------------------------------------------------------------------------------------------
    def decisions(self) -> Tuple[Decision, ...]:
        """The categorical decisions of an architecture, in order (empty: the space has none)."""
        return ()

    def from_choices(self, choices: Sequence[int]):
        """The architecture of one option index per decision of :meth:`decisions`."""
        raise Unsupported(f"space {self.name!r} has no categorical decisions")

    def to_choices(self, arch) -> Tuple[int, ...]:
        """The option index of every decision of ``arch`` (the inverse of :meth:`from_choices`); ValueError for an
        architecture the decisions cannot express."""
        raise Unsupported(f"space {self.name!r} has no categorical decisions")

    def sample(self, generator: Optional[torch.Generator] = None, zero: bool = False):
        """An architecture drawn from the space's prior, from ``generator``. Default: every decision uniformly.
        ``zero``: the zero op (a missing edge) may be drawn too, in spaces whose prior leaves it out."""
        sizes = [d.size for d in self._decisions_or_raise()]
        return self.from_choices([int(torch.randint(n, (1,), generator=generator)) for n in sizes])

    def mutate(self, arch, generator: Optional[torch.Generator] = None):
        """``arch`` with one decision, drawn uniformly, changed to another option drawn uniformly (evolution's
        mutation); a decision of one option is never drawn."""
        decisions = self._decisions_or_raise()
        choices = list(self.to_choices(arch))
        open_ = [n for n, d in enumerate(decisions) if d.size > 1]
        if not open_:
            raise Unsupported(f"space {self.name!r}: every decision has one option, nothing can mutate")
        n = open_[int(torch.randint(len(open_), (1,), generator=generator))]
        other = int(torch.randint(decisions[n].size - 1, (1,), generator=generator))
        choices[n] = other + (other >= choices[n])
        return self.from_choices(choices)

    def encode(self, arch) -> Tensor:
        """``arch`` as a fixed-length float vector ``[D]`` (surrogate models). Default: the one-hot of every
        decision's option, concatenated (``D = sum of the decisions' sizes``)."""
        decisions = self._decisions_or_raise()
        out = torch.zeros(sum(d.size for d in decisions))
        offset = 0
        for d, c in zip(decisions, self.to_choices(arch)):
            out[offset + c] = 1.0
            offset += d.size
        return out

    def distance(self, a, b) -> float:
        """A distance between two architectures. Default: half the L1 distance of their encodings (the number of
        decisions they differ in, for the default encoding)."""
        return 0.5 * float((self.encode(a) - self.encode(b)).abs().sum())

    @abstractmethod
    def to_dict(self, arch) -> dict:
        """``arch`` as a JSON object carrying ``"space": self.name``."""

    @abstractmethod
    def from_dict(self, d):
        """The architecture of :meth:`to_dict`'s object; ValueError (one line) for anything else, another space's
        architecture included."""

    def costs(self, arch) -> Dict[str, float]:
        """``{"params": ..., ...}`` of ``arch``: FLOPs, MAC and latency where the space counts them. Default: none."""
        return {}

    def published(self) -> Tuple[str, ...]:
        """The names of the published architectures :meth:`load` knows (DARTS_V2, SNAS's cells, ...)."""
        return ()

    def load(self, name: str):
        """The published architecture ``name`` (:meth:`published`)."""
        raise ValueError(f"name: space {self.name!r} knows no published architectures, got {name!r}")

    # -- trainable spaces ---------------------------------------------------------------------------------------
    def child(self, arch, **options) -> nn.Module:
        """The network of ``arch``, trained from scratch by a retraining (``forward(x) -> logits``, or a pair whose
        first entry is the logits)."""
        raise Unsupported(f"space {self.name!r} builds no network (a tabular space: query() it)")

    def supernet(self, **options) -> nn.Module:
        """The one-shot network holding every candidate of every decision, with its ``log_alpha``
        (:class:`OneShot`)."""
        raise Unsupported(f"space {self.name!r} has no one-shot supernet")

    def derive(self, source, **options):
        """The architecture a supernet (or its ``alphas``, one tensor per ``log_alpha``) chooses."""
        raise Unsupported(f"space {self.name!r} has no one-shot supernet")

    def arch_weights(self, arch) -> List[Tensor]:
        """The one-hot weights that run ``arch`` alone in the supernet, one tensor per ``log_alpha``."""
        raise Unsupported(f"space {self.name!r} has no one-shot supernet")

    def penalty(self, supernet: nn.Module, form: str) -> Optional[Callable[[Sequence[Tensor]], Tensor]]:
        """SNAS's resource penalty of this space: a function of the architecture weights (one tensor per
        ``log_alpha``) to a differentiable scalar, or None where the space has no cost model (its searches then run
        without the penalty)."""
        return None

    def baseline(self, name: str, width: int, layers: int) -> nn.Module:
        """A hand-designed network of the space (:attr:`baselines`) of ``width`` and ``layers``."""
        raise Unsupported(f"space {self.name!r} has no baselines")

    #: the names of its baselines (:meth:`baseline`)
    baselines: Tuple[str, ...] = ()

    def baseline_width(self, name: str) -> Optional[int]:
        """The width the baseline ``name`` is built with when no parameter budget is given (None: the run's
        ``--channels``); a space whose baselines are published networks gives their published widths."""
        return None

    # -- tabular spaces -----------------------------------------------------------------------------------------
    #: a tabular space's tables, chosen by ``--dataset`` (empty: one table, or none)
    datasets: Tuple[str, ...] = ()

    def query(self, arch, metric: str = "valid") -> float:
        """The tabulated ``metric`` of ``arch`` (``"valid"``: the search's; ``"test"``: the report's)."""
        raise Unsupported(f"space {self.name!r} is not tabular: train its networks instead")

    def tabulated(self) -> List[object]:
        """Every architecture of the table, one per row (the oracles of a benchmark: the best there is)."""
        raise Unsupported(f"space {self.name!r} cannot list its table")

    def key(self, arch) -> str:
        """A key equal for the architectures the space holds to be the same one (a table's row: isomorphic
        architectures share it). Default: the JSON object of :meth:`to_dict`, keys sorted."""
        import json

        return json.dumps(self.to_dict(arch), sort_keys=True)

    # -- what it can do -----------------------------------------------------------------------------------------
    def _overrides(self, method: str) -> bool:
        return getattr(type(self), method) is not getattr(SearchSpace, method)

    def _decisions_or_raise(self) -> Tuple[Decision, ...]:
        decisions = self.decisions()
        if not decisions:
            raise Unsupported(f"space {self.name!r} has no categorical decisions")
        return decisions

    def lacks(self, capability: str) -> Optional[str]:
        """Why the space cannot do ``capability`` (one of :data:`CAPABILITIES`), as a phrase, or None if it can."""
        if capability not in CAPABILITIES:
            raise ValueError(f"capability: expected one of {', '.join(CAPABILITIES)}, got {capability!r}")
        if capability == "data":
            return None if self.data_kind is not None else "is tabular (no data to train on)"
        if capability == "decisions":
            return None if self.decisions() else "has no categorical decisions"
        if capability in ("sample", "mutate"):
            ok = self._overrides(capability) or self.decisions()
            return None if ok else f"has no categorical decisions and no {capability} of its own"
        if capability == "encode":
            return None if self._overrides("encode") or self.decisions() else "has no fixed-length encoding"
        if capability == "distance":
            ok = self._overrides("distance") or self._overrides("encode") or self.decisions()
            return None if ok else "has neither a distance nor an encoding"
        if capability == "child":
            return None if self._overrides("child") else "builds no networks"
        if capability == "supernet":
            return None if self._overrides("supernet") else "has no one-shot supernet"
        return None if self._overrides("query") else "is not tabular"

    # -- the DARTS-family helpers ---------------------------------------------------------------------------------
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

    def check_tag(self, d) -> dict:
        """``d`` without its ``"space"`` tag, after checking the tag names this space (an untagged object is taken
        as this space's); ValueError, one line, for anything else."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a {self.name} architecture (a JSON object), got {type(d).__name__}")
        tag = d.get("space", self.name)
        if tag != self.name:
            raise ValueError(f"expected a {self.name} architecture, got one of space {tag!r}")
        return {k: v for k, v in d.items() if k != "space"}


class OneShot:
    """What a one-shot supernet offers a strategy (:meth:`SearchSpace.supernet`; the DARTS
    :class:`~snas_fast.spaces.darts.supernet.Supernet` and the graph supernet have it):

    - ``arch_parameters()``: one ``log_alpha`` per decision group, ``[..., K]``; ``alpha_names``: their names
      (``"normal"``, ``"reduce"``; ``"node"``, ``"edge"``), the metrics' and plots' column prefixes;
    - ``weight_parameters()``, ``beta_parameters()`` (PC-DARTS's edge normalisation; else ``[]``);
    - ``alphas()``: ``softmax(log_alpha)`` of each, detached;
    - ``run_arch(x, weights, choices=None) -> logits``: the network under architecture weights, one tensor per
      ``log_alpha`` (its shape); ``choices``: per ``log_alpha`` the chosen column of every row (hard paths: only
      those candidates run), or None;
    - ``forward_child(x) -> logits``: the derived child (every row's argmax) with the shared weights;
    - ``drop_path_prob``: drop-path of the candidates (0 where the space has none).
    """

    alpha_names: Tuple[str, ...] = ()
    drop_path_prob: float = 0.0

    def beta_parameters(self) -> List[nn.Parameter]:
        return []


_REGISTRY: Dict[str, Union[str, Callable[[], SearchSpace]]] = {
    "darts": "snas_fast.spaces.darts:DartsSpace",
    "darts1d": "snas_fast.spaces.darts1d:Darts1dSpace",
    "gnn": "snas_fast.spaces.gnn:GnnSpace",
    "morph": "snas_fast.spaces.morph:MorphSpace",
    "nbgraph": "snas_fast.spaces.nbgraph:NbGraphSpace",
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
    """A new instance of the registered space ``name`` (see :func:`space_names`), named ``name`` (the tag of its
    architectures' JSON)."""
    space = make(_REGISTRY, name, "space", SearchSpace)
    if space.name != name:  # a space registered under a name of its own (a DartsSpace with a 9th primitive, ...)
        space = copy.copy(space)
        space.name = name
    return space


def space_of_dict(d) -> Optional[str]:
    """The space an architecture's JSON object names: its ``"space"`` tag; for objects written before the tag, a
    morphable network's description (``"format"``) is ``morph``'s and a cell pair (``"normal"``) ``darts``'s;
    None when nothing says."""
    if not isinstance(d, dict):
        return None
    if isinstance(d.get("space"), str):
        return d["space"]
    if str(d.get("format", "")).startswith("snas_fast.morph"):
        return "morph"
    return "darts" if "normal" in d else None
