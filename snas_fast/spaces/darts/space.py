"""The DARTS CIFAR search space used by SNAS: the eight candidate operations as :class:`~snas_fast.spaces.Primitive`
records (module, fold, cost from shapes, colour) and the 14 edges of a cell.

Cell layout (snas.md): nodes 0 and 1 are the cell's inputs, nodes 2..5 its intermediate nodes. Intermediate
node ``2 + i`` (``i = 0..3``) takes one edge from every earlier node ``j = 0 .. i + 1``; the 14 edges are numbered
in that order (:data:`EDGES`, :func:`edge_index`), which is the row order of a ``[14, K]`` ``log_alpha``.

Cost conventions (per example; exact integers; :class:`~snas_fast.spaces.Cost`): ``params`` are the learnable
parameters of the built module (conv weights, plus ``2 * C`` per BatchNorm when ``affine``); ``flops`` the convs'
multiply-adds ``C_out * H_out * W_out * (C_in / groups) * k * k`` (pools, identity, ``none``, ReLU, BN count 0;
SNAS's released code counts ``9 * C * H_out * W_out`` for a pool); ``mac`` (ShuffleNet V2 / SNAS) the elements
every conv and pool reads and writes plus its weights, and one read and one write for the identity. FactorizedReduce's
second conv reads the shifted map ``x[:, :, 1:, 1:]`` padded back to an even size. The tests hold every formula equal
to :func:`~snas_fast.spaces.count_module` on the built module.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..._checks import check_int
from ..base import Cost, Primitive, SearchBN, SearchSpace
from .operations import DilConv, FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero  # noqa: F401  (0.1's search_space)

__all__ = ["DARTS", "DARTS_PRIMITIVES", "DartsSpace", "EDGES", "NUM_EDGES", "NUM_NODES", "OPS", "PRIMITIVES",
           "check_primitive", "edge_index", "make_op"]

#: Intermediate nodes of a cell (cell nodes 2..5).
NUM_NODES = 4

#: ``EDGES[e] = (node, input)``: edge ``e`` feeds intermediate node ``node`` (0..3, i.e. cell node ``2 + node``)
#: from cell node ``input`` (0 and 1: the cell inputs; ``j >= 2``: intermediate node ``j - 2``).
EDGES: List[Tuple[int, int]] = [(node, j) for node in range(NUM_NODES) for j in range(node + 2)]

NUM_EDGES = len(EDGES)  # 14


def edge_index(node: int, input: int) -> int:
    """Row of ``log_alpha`` for the edge into intermediate ``node`` (0..3) from cell node ``input`` (0..node+1)."""
    check_int("node", node, 0)
    check_int("input", input, 0)
    if node >= NUM_NODES:
        raise ValueError(f"node: expected an intermediate node index in 0..{NUM_NODES - 1}, got {node}")
    if input > node + 1:
        raise ValueError(f"input: node {node} (cell node {node + 2}) takes inputs 0..{node + 1}, got {input}")
    return node * (node + 3) // 2 + input


def is_reduction_edge(reduction: bool, input: int) -> bool:
    """Whether an edge from cell node ``input`` has stride 2: in a reduction cell, the edges from its two inputs."""
    return bool(reduction) and input < 2


def reduction_cells(layers: int) -> Tuple[int, ...]:
    """The positions of the reduction cells in a stack of ``layers`` cells: 1/3 and 2/3 of the depth (none below
    3 cells)."""
    return (layers // 3, 2 * layers // 3) if layers >= 3 else ()


# ---------------------------------------------------------------------------------------------------------------
# Costs from shapes
# ---------------------------------------------------------------------------------------------------------------
def _out(n: int, k: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output length of a conv or pool along one axis (PyTorch's formula, floor mode)."""
    return (n + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _conv(c_in: int, c_out: int, k: int, stride: int, pad: int, dilation: int, groups: int, h: int, w: int):
    """Cost and output size of one bias-free conv on a ``[c_in, h, w]`` input."""
    ho, wo = _out(h, k, stride, pad, dilation), _out(w, k, stride, pad, dilation)
    weights = c_out * (c_in // groups) * k * k
    return Cost(weights, weights * ho * wo, c_in * h * w + c_out * ho * wo + weights), ho, wo


def _bn(C: int, affine: bool) -> Cost:
    return Cost(params=2 * C if affine else 0)


def _pool_cost(C: int, H: int, W: int, stride: int, affine: bool) -> Cost:
    return Cost(0, 0, C * H * W + C * _out(H, 3, stride, 1) * _out(W, 3, stride, 1))


def _sep_conv_cost(k: int):
    def cost(C: int, H: int, W: int, stride: int, affine: bool) -> Cost:
        pad = (k - 1) // 2
        dw1, ho, wo = _conv(C, C, k, stride, pad, 1, C, H, W)
        pw1, _, _ = _conv(C, C, 1, 1, 0, 1, 1, ho, wo)
        dw2, _, _ = _conv(C, C, k, 1, pad, 1, C, ho, wo)
        pw2, _, _ = _conv(C, C, 1, 1, 0, 1, 1, ho, wo)
        return dw1 + pw1 + dw2 + pw2 + _bn(C, affine) + _bn(C, affine)
    return cost


def _dil_conv_cost(k: int):
    def cost(C: int, H: int, W: int, stride: int, affine: bool) -> Cost:
        dw, ho, wo = _conv(C, C, k, stride, k - 1, 2, C, H, W)  # dilation 2: padding 2 (3x3) or 4 (5x5)
        pw, _, _ = _conv(C, C, 1, 1, 0, 1, 1, ho, wo)
        return dw + pw + _bn(C, affine)
    return cost


def _skip_cost(C: int, H: int, W: int, stride: int, affine: bool) -> Cost:
    if stride == 1:
        return Cost(0, 0, 2 * C * H * W)
    if C % 2 != 0:
        raise ValueError(f"C: skip_connect at stride 2 is FactorizedReduce, which needs an even C, got {C}")
    conv1, _, _ = _conv(C, C // 2, 1, 2, 0, 1, 1, H, W)  # FactorizedReduce
    conv2, _, _ = _conv(C, C // 2, 1, 2, 0, 1, 1, H - 1 + H % 2, W - 1 + W % 2)
    return conv1 + conv2 + _bn(C, affine)


# ---------------------------------------------------------------------------------------------------------------
# The eight primitives
# ---------------------------------------------------------------------------------------------------------------
def _skip(C: int, stride: int, affine: bool) -> nn.Module:
    if stride == 1:
        return Identity()
    if C % 2 != 0:
        raise ValueError(f"C: skip_connect at stride 2 is FactorizedReduce, which needs an even C, got {C}")
    return FactorizedReduce(C, C, affine=affine)


#: The candidate operations of an edge, in the order of the columns of ``log_alpha`` (a contract). Colours: ``none``
#: grey, pools blue, skip green, convolutions warm.
DARTS_PRIMITIVES: Tuple[Primitive, ...] = (
    Primitive("none", lambda C, stride, affine: Zero(stride), fold="zero", cost=lambda *_: Cost(),
              color="#7f7f7f"),
    Primitive("max_pool_3x3", lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
              fold="max_pool", cost=_pool_cost, color="#1f77b4"),
    Primitive("avg_pool_3x3",
              lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
              fold="avg_pool", cost=_pool_cost, color="#17becf"),
    Primitive("skip_connect", _skip, fold=lambda stride: "identity" if stride == 1 else "bn_tail", cost=_skip_cost,
              color="#2ca02c"),
    Primitive("sep_conv_3x3", lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine), fold="bn_tail",
              cost=_sep_conv_cost(3), color="#d62728"),
    Primitive("sep_conv_5x5", lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine), fold="bn_tail",
              cost=_sep_conv_cost(5), color="#ff7f0e"),
    Primitive("dil_conv_3x3", lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
              fold="bn_tail", cost=_dil_conv_cost(3), color="#9467bd"),
    Primitive("dil_conv_5x5", lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
              fold="bn_tail", cost=_dil_conv_cost(5), color="#8c564b"),
)

#: The names of :data:`DARTS_PRIMITIVES`, in column order.
PRIMITIVES: List[str] = [p.name for p in DARTS_PRIMITIVES]

#: DARTS-style table: ``OPS[name](C, stride, affine) -> nn.Module`` (pools without the search BN).
OPS = {p.name: p.build for p in DARTS_PRIMITIVES}

_COLOURS = ("#e377c2", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")  # primitives without a colour


class DartsSpace(SearchSpace):
    """The DARTS CNN space over ``primitives`` (default :data:`DARTS_PRIMITIVES`): cells of 14 edges, each a
    mixture of the primitives, stacked as in DARTS (reduction cells at 1/3 and 2/3 of the depth). The zero op, if
    any, is the primitive named ``none``.

    A space with other primitives (say a 9th, defined in user code) runs the search, the costs, both derivation
    rules, the plots and retraining unchanged: pass it as ``space=`` to :class:`~snas_fast.Supernet`,
    :class:`~snas_fast.NetworkCIFAR` and the cost and genotype functions. It needs one ``"zero"`` primitive at most
    and at least one other.
    """

    name = "darts"

    def __init__(self, primitives: Sequence[Primitive] = DARTS_PRIMITIVES):
        primitives = tuple(primitives)
        for k, p in enumerate(primitives):
            if not isinstance(p, Primitive):
                raise TypeError(f"primitives[{k}]: expected a Primitive, got {type(p).__name__}")
        names = [p.name for p in primitives]
        if len(set(names)) != len(names):
            raise ValueError(f"primitives: expected distinct names, got {names}")
        zeros = [p.name for p in primitives if p.fold_at(1) == "zero"]
        if zeros not in ([], ["none"]) or len(zeros) == len(primitives):
            raise ValueError(f"primitives: expected at most one zero op, named 'none' (the genotypes' word for a "
                             f"missing edge), and at least one other op, got {names} (zero ops: {zeros})")
        self.primitives = primitives

    def __repr__(self) -> str:
        return f"DartsSpace({list(self.op_names)})"

    def __eq__(self, other) -> bool:
        return isinstance(other, DartsSpace) and self.primitives == other.primitives

    def __hash__(self) -> int:
        return hash(self.primitives)

    def colour(self, name: str) -> str:
        """The plot colour of primitive ``name``: its own, else one of a fixed set by column."""
        k = self.op_names.index(name)
        return self.primitives[k].color or _COLOURS[k % len(_COLOURS)]

    # -- the SearchSpace protocol ------------------------------------------------------------------------------
    def supernet(self, C: int, num_classes: int, layers: int, **options) -> nn.Module:
        from .supernet import Supernet

        return Supernet(C, num_classes, layers, space=self, **options)

    def network(self, genotype, C: int, num_classes: int, layers: int, auxiliary: bool = False,
                **options) -> nn.Module:
        from .networks import NetworkCIFAR

        return NetworkCIFAR(C, num_classes, layers, auxiliary, genotype, space=self, **options)

    def random_genotype(self, generator: Optional[torch.Generator] = None, include_none: bool = False):
        from .genotypes import random_genotype

        return random_genotype(generator, space=self, include_none=include_none)

    def encode(self, genotype) -> Tensor:
        """``[2, 14, K]``: the one-hot Z of the normal and the reduction cell of ``genotype``."""
        from .genotypes import one_hot

        return torch.stack([one_hot(genotype.normal, space=self), one_hot(genotype.reduce, space=self)])

    def decisions(self, form: str = "top2") -> Tuple[int, ...]:
        from .genotypes import decision_sizes

        return decision_sizes(form, self)

    def from_decisions(self, choices: Sequence[int], form: str = "top2"):
        from .genotypes import from_decisions

        return from_decisions(choices, form, self)

    def derive(self, alphas: Sequence[Tensor], rule: str = "edge_all"):
        """The genotype of ``alphas = (normal [14, K], reduce [14, K])`` (:func:`~.genotypes.derive`)."""
        from .genotypes import derive

        normal, reduce = alphas
        return derive(normal, reduce, rule=rule, space=self)


#: The DARTS space with its eight primitives (every function here defaults to it).
DARTS = DartsSpace()


def check_primitive(name, space: Optional[DartsSpace] = None) -> str:
    """``name`` if it is a primitive of ``space`` (default :data:`DARTS`), else ValueError listing them."""
    space = space or DARTS
    if not isinstance(name, str) or name not in space.op_names:
        names = list(space.op_names) if space is not DARTS else PRIMITIVES
        raise ValueError(f"name: expected one of {names}, got {name!r}")
    return name


def make_op(name: str, C: int, stride: int, affine: bool, pool_bn: bool = False,
            space: Optional[DartsSpace] = None) -> nn.Module:
    """The candidate ``name`` of ``space`` (default :data:`DARTS`) for an edge with ``C`` channels in and out:
    ``[B, C, H, W] -> [B, C, H_out, W_out]``.

    ``stride`` is 1 (normal edge) or 2 (an edge from a cell input in a reduction cell); ``skip_connect`` is
    :class:`Identity` at stride 1 and ``FactorizedReduce(C, C)`` (needs an even C) at stride 2. ``affine``: whether
    the BNs have learnable scale and shift (False during search, snas.md). ``pool_bn=True`` follows each pool with
    ``BatchNorm2d(C, affine=False)`` (:class:`~snas_fast.spaces.SearchBN`), as DARTS's search does. ``none`` is
    :class:`snas_fast.Zero`.
    """
    primitive = (space or DARTS).primitive(check_primitive(name, space))
    check_int("C", C, 1)
    if isinstance(stride, bool) or stride not in (1, 2):
        raise ValueError(f"stride: expected 1 or 2, got {stride!r}")
    module = primitive.build(C, stride, bool(affine))
    if pool_bn and primitive.fold_at(stride) in ("max_pool", "avg_pool"):
        return SearchBN(module, C)
    return module


def space_of(space: Optional[DartsSpace]) -> DartsSpace:
    """``space``, or :data:`DARTS` for None; TypeError for anything but a DartsSpace."""
    if space is None:
        return DARTS
    if not isinstance(space, DartsSpace):
        raise TypeError(f"space: expected a DartsSpace, got {type(space).__name__}")
    return space
