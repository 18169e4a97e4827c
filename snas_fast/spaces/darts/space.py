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

import copy
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..._checks import check_int
from ..._settings import setting
from ..base import Cost, Decision, LayoutSettings, MixedSettings, Primitive, SearchBN, SearchSpace, SizeSettings
from .operations import DilConv, FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero  # noqa: F401  (0.1's search_space)

__all__ = ["DARTS", "DARTS_PRIMITIVES", "DartsSettings", "DartsSpace", "EDGES", "MIXED", "NUM_EDGES", "NUM_NODES", "OPS",
           "PRIMITIVES", "check_primitive", "edge_index", "make_op"]

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


def _conv(c_in: int, c_out: int, k: int, stride: int, pad: int, dilation: int, groups: int, h: int, w: int,
          one_row: bool = False):
    """Cost and output size of one bias-free ``k x k`` conv on a ``[c_in, h, w]`` input (``one_row``: a ``1 x k``
    conv, padding and dilation along the width only)."""
    ho = _out(h, 1, stride, 0) if one_row else _out(h, k, stride, pad, dilation)
    wo = _out(w, k, stride, pad, dilation)
    weights = c_out * (c_in // groups) * k * (1 if one_row else k)
    return Cost(weights, weights * ho * wo, c_in * h * w + c_out * ho * wo + weights), ho, wo


def _bn(C: int, affine: bool) -> Cost:
    return Cost(params=2 * C if affine else 0)


def _pool_cost_of(one_row: bool = False):
    """The cost of a 3x3 pool (``one_row``: 1x3) at padding 1 (0 across rows)."""
    def cost(C: int, H: int, W: int, stride: int, affine: bool) -> Cost:
        ho = _out(H, 1, stride, 0) if one_row else _out(H, 3, stride, 1)
        return Cost(0, 0, C * H * W + C * ho * _out(W, 3, stride, 1))
    return cost


_pool_cost = _pool_cost_of()


def _sep_conv_cost(k: int, one_row: bool = False):
    def cost(C: int, H: int, W: int, stride: int, affine: bool) -> Cost:
        pad = (k - 1) // 2
        dw1, ho, wo = _conv(C, C, k, stride, pad, 1, C, H, W, one_row)
        pw1, _, _ = _conv(C, C, 1, 1, 0, 1, 1, ho, wo)
        dw2, _, _ = _conv(C, C, k, 1, pad, 1, C, ho, wo, one_row)
        pw2, _, _ = _conv(C, C, 1, 1, 0, 1, 1, ho, wo)
        return dw1 + pw1 + dw2 + pw2 + _bn(C, affine) + _bn(C, affine)
    return cost


def _dil_conv_cost(k: int, one_row: bool = False):
    def cost(C: int, H: int, W: int, stride: int, affine: bool) -> Cost:
        dw, ho, wo = _conv(C, C, k, stride, k - 1, 2, C, H, W, one_row)  # dilation 2: padding 2 (k 3) or 4 (k 5)
        pw, _, _ = _conv(C, C, 1, 1, 0, 1, 1, ho, wo)
        return dw + pw + _bn(C, affine)
    return cost


def _skip_cost_of(one_row: bool = False):
    """The cost of ``skip_connect``: the identity at stride 1, FactorizedReduce (``one_row``: its 1-D form) at 2."""
    def cost(C: int, H: int, W: int, stride: int, affine: bool) -> Cost:
        if stride == 1:
            return Cost(0, 0, 2 * C * H * W)
        if C % 2 != 0:
            raise ValueError(f"C: skip_connect at stride 2 is FactorizedReduce, which needs an even C, got {C}")
        conv1, _, _ = _conv(C, C // 2, 1, 2, 0, 1, 1, H, W)  # FactorizedReduce
        conv2, _, _ = _conv(C, C // 2, 1, 2, 0, 1, 1, H if one_row else H - 1 + H % 2, W - 1 + W % 2)
        return conv1 + conv2 + _bn(C, affine)
    return cost


_skip_cost = _skip_cost_of()


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

#: The networks' size by role: a search's (the digits' short recipe) and a retraining's (:meth:`DartsSpace.defaults`).
SIZES = dict(search=dict(layers=5, channels=8), child=dict(layers=8, channels=16))
#: How the supernet mixes an edge (:mod:`.supernet`).
MIXED = ("fused", "fused_sum", "eager")
_FORMS = ("top2", "edge_all")  # the genotype forms (genotypes.py): a form of genotypes, a rule of derivation
_COLOURS = ("#e377c2", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")  # primitives without a colour


@dataclass
class DartsSettings(SizeSettings, MixedSettings, LayoutSettings):
    """The DARTS space's own settings (besides its size, how its supernet mixes and its memory format): the form of
    the genotypes a strategy draws, how a supernet's cells are read, the supernet's options, and a latency table."""

    form: str = setting("top2", "form of the genotypes a strategy draws and mutates: top2 (DARTS: per node two "
                                "inputs, each with an op other than none) or edge_all (an op per edge, none "
                                "included)", choices=_FORMS, roles=("search",))
    rule: str = setting("edge_all", "how a supernet's cells are derived: edge_all (SNAS: every edge's strongest op, "
                                    "none included) or top2 (DARTS: per node the two strongest inputs)",
                        choices=_FORMS, roles=("supernet",))
    latency_table: Optional[str] = setting(None, "the measured latency table of the search network (snas-fast "
                                                 "latency-table): the space then prices latency (SNAS's --penalty "
                                                 "latency, MONAS's --objective latency)", kind=str, roles=("supernet",))
    pool_bn: bool = setting(False, "BatchNorm after the pool candidates of the supernet (DARTS)", roles=("supernet",))
    partial_channels: int = setting(1, "PC-DARTS's k: each supernet edge mixes 1/k of its channels, the rest bypass "
                                       "and are shuffled in (1: all channels; memory falls about k-fold)",
                                    roles=("supernet",), minimum=1)
    edge_normalization: bool = setting(False, "PC-DARTS's edge normalisation: each supernet edge's output weighted "
                                              "by a softmax of beta over its node's incoming edges",
                                       roles=("supernet",))


class DartsSpace(SearchSpace):
    """The DARTS CNN space over ``primitives`` (default :data:`DARTS_PRIMITIVES`): cells of 14 edges, each a
    mixture of the primitives, stacked as in DARTS (reduction cells at 1/3 and 2/3 of the depth). The zero op, if
    any, is the primitive named ``none``.

    A space with other primitives (say a 9th, defined in user code) runs the search, the costs, both derivation
    rules, the plots and retraining unchanged: pass it as ``space=`` to :class:`~snas_fast.Supernet`,
    :class:`~snas_fast.NetworkCIFAR` and the cost and genotype functions. It needs one ``"zero"`` primitive at most
    and at least one other.

    As a :class:`~snas_fast.spaces.SearchSpace`: an architecture is a :class:`~.genotypes.Genotype`; its
    decisions are those of ``form`` (:func:`~.genotypes.decision_sizes`: top2's 32, edge_all's 28); ``encode`` is
    the one-hot of every edge's op, ``[2 * 14 * K]`` (normal then reduction cell, edges a top-2 cell leaves out
    on ``none``), so two orders of a node's inputs encode alike; ``distance`` the number of edges whose op differs.
    ``configure`` binds the network's size (``layers``, ``channels``), ``form``, ``rule`` and the images'
    shape (``info``).
    """

    name = "darts"
    data_kind = "images"
    settings = DartsSettings

    #: how its supernet may mix (``--mixed``)
    mixed_modes = MIXED
    #: the supernet's options that its settings give (:meth:`supernet`)
    SUPERNET_OPTIONS = ("mixed", "pool_bn", "partial_channels", "edge_normalization")

    def __init__(self, primitives: Sequence[Primitive] = DARTS_PRIMITIVES, layers: int = SIZES["search"]["layers"],
                 channels: int = SIZES["search"]["channels"], form: str = "top2", rule: str = "edge_all", info=None,
                 latency_table: Optional[str] = None):
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
        for what, value in (("form", form), ("rule", rule)):
            if value not in _FORMS:
                raise ValueError(f"{what}: expected one of {', '.join(_FORMS)}, got {value!r}")
        self.primitives = primitives
        self.layers, self.channels, self.form, self.rule, self.info = layers, channels, form, rule, info
        self.latency_table = latency_table
        self.mixed, self.pool_bn, self.partial_channels, self.edge_normalization = "fused", False, 1, False
        self.channels_last = False

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

    # -- one run's space ------------------------------------------------------------------------------------------
    def configure(self, config=None, info=None) -> "DartsSpace":
        space = copy.copy(self)
        for name in ("layers", "channels", "form", "rule", "latency_table", "channels_last") + self.SUPERNET_OPTIONS:
            value = getattr(config, name, None)
            if value is not None:
                setattr(space, name, value)
        if space.form not in _FORMS or space.rule not in _FORMS:
            raise ValueError(f"form, rule: expected {' or '.join(_FORMS)}, got {space.form!r}, {space.rule!r}")
        if space.mixed not in MIXED:
            raise ValueError(f"mixed: space darts mixes by {', '.join(MIXED)}, got {space.mixed!r}")
        if (isinstance(space.partial_channels, bool) or not isinstance(space.partial_channels, int)
                or space.partial_channels < 1):
            raise ValueError(f"partial_channels: expected an integer >= 1, got {space.partial_channels!r}")
        if space.channels % space.partial_channels:
            raise ValueError(f"partial_channels: channels = {space.channels} is not divisible by "
                             f"{space.partial_channels} (every edge mixes channels / k of them)")
        space.info = info if info is not None else self.info
        return space

    def defaults(self, role: str):
        """A search's networks: 5 cells of C = 8 (the digits' short recipe); a retraining's: 8 cells of C = 16
        (:data:`SIZES`)."""
        return dict(SIZES["child" if role == "child" else "search"])

    def _info(self):
        if self.info is None:
            raise ValueError("space darts: no dataset bound (configure(config, info) with the images' info)")
        return self.info

    # -- the choices ------------------------------------------------------------------------------------------
    def decisions(self) -> Tuple[Decision, ...]:
        """top2: per cell and node ``n`` (cell node ``n``): ``input1`` (its ``n`` earlier nodes), ``op1`` (every op
        but ``none``), ``input2`` (the k-th of the other inputs), ``op2``; edge_all: per cell and edge ``j->n``
        its op, ``none`` included."""
        from .genotypes import decision_ops

        ops = tuple(decision_ops(self.form, self))
        out = []
        for cell in ("normal", "reduce"):
            if self.form == "edge_all":
                out += [Decision(f"{cell}.edge{j}-{node + 2}", ops) for node, j in EDGES]
                continue
            for i in range(NUM_NODES):
                inputs = tuple(str(j) for j in range(i + 2))
                out += [Decision(f"{cell}.node{i + 2}.input1", inputs), Decision(f"{cell}.node{i + 2}.op1", ops),
                        Decision(f"{cell}.node{i + 2}.input2", tuple(f"other{j}" for j in range(i + 1))),
                        Decision(f"{cell}.node{i + 2}.op2", ops)]
        return tuple(out)

    def from_choices(self, choices: Sequence[int]):
        from .genotypes import from_decisions

        return from_decisions(choices, self.form, self)

    def to_choices(self, arch) -> Tuple[int, ...]:
        from .genotypes import to_decisions

        return to_decisions(arch, self.form, self)

    def sample(self, generator: Optional[torch.Generator] = None, zero: bool = False):
        """top2: :func:`~.genotypes.random_genotype` (two distinct inputs per node, each with an op other than
        ``none``; ``zero``: any op); edge_all: every edge's op uniformly, ``none`` included."""
        if self.form == "edge_all":
            return super().sample(generator)
        return self.random_genotype(generator, include_none=zero)

    def encode(self, arch) -> Tensor:
        return torch.stack(self.arch_weights(arch)).flatten()

    def to_dict(self, arch) -> dict:
        return {"space": self.name, **arch.to_dict()}

    def from_dict(self, d):
        from .genotypes import Genotype

        return Genotype.from_dict(self.check_tag(d), self)

    def costs(self, arch) -> dict:
        """``params``, ``flops``, ``mac`` of the genotype's edges in the network of this space's size on its images
        (:func:`~.costs.genotype_cost`, affine BatchNorms: the child's); with a ``latency_table``, ``latency`` too
        (milliseconds: the table's fixed part and its entries of the genotype's edges). ValueError, one line, for a
        table of another network."""
        from . import costs as cost_model

        key = (self.channels, self.layers, self._info().image_shape, self.latency_table)
        if getattr(self, "_cost_key", None) != key:
            self._cost_tables = cost_model.network_costs(self.channels, self.layers, *key[2], affine=True,
                                                         space=self)
            self._latency = self.latency(self.channels, self.layers) if self.latency_table else None
            self._cost_key = key
        params, flops, mac = cost_model.genotype_cost(arch, *self._cost_tables, space=self).tolist()
        out = dict(params=params, flops=flops, mac=mac)
        if self._latency is not None:
            table = self._latency
            out["latency"] = table.fixed_ms + float(cost_model.genotype_cost(arch, table.normal, table.reduce,
                                                                             space=self))
        return out

    def latency(self, channels: int, layers: int):
        """The measured table ``latency_table``, checked against a network of ``channels`` and ``layers`` on this
        space's images (:class:`~.latency.LatencyTable`); ValueError, one line, otherwise."""
        from .latency import LatencyTable

        try:
            table = LatencyTable.load(self.latency_table)
            table.check(channels, layers, self._info().image_size, self.op_names)
        except ValueError as error:
            raise ValueError(f"latency_table: {self.latency_table}: {error}") from None
        return table

    def published(self) -> Tuple[str, ...]:
        from .genotypes import available

        return tuple(available())

    def load(self, name: str):
        from .genotypes import load

        return load(name)

    # -- networks -----------------------------------------------------------------------------------------------
    def stem(self, in_channels: int, C: int) -> nn.Module:
        """The networks' stem: a 3x3 conv (padding 1, no bias) and a BatchNorm, ``[B, in_channels, H, W] ->
        [B, C, H, W]``."""
        return nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))

    def reduce_input(self, C_in: int, C_out: int, affine: bool) -> nn.Module:
        """A cell's ``preprocess0`` after a reduction cell: :class:`~.operations.FactorizedReduce`, ``[B, C_in, H,
        W] -> [B, C_out, ceil(H / 2), ceil(W / 2)]``."""
        return FactorizedReduce(C_in, C_out, affine=affine)

    def _memory_format(self):
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def child(self, arch, auxiliary: bool = False, **options) -> nn.Module:
        """:class:`~.networks.NetworkCIFAR` of ``arch`` at this space's size and memory format; ``options``: its
        own (``memory_format``, ...)."""
        info = self._info()
        options.setdefault("memory_format", self._memory_format())
        return self.network(arch, self.channels, info.num_classes, self.layers, auxiliary,
                            in_channels=info.in_channels, **options)

    def supernet(self, C: Optional[int] = None, num_classes: Optional[int] = None, layers: Optional[int] = None,
                 **options) -> nn.Module:
        """:class:`~.supernet.Supernet` (this space's size, images, memory format and supernet settings unless
        given); ``options``: its own."""
        from .supernet import Supernet

        if C is None and layers is None:  # this run's supernet: its settings
            for name in self.SUPERNET_OPTIONS:
                options.setdefault(name, getattr(self, name))
            options.setdefault("memory_format", self._memory_format())
        if num_classes is None or "in_channels" not in options:
            info = self._info()
            num_classes = info.num_classes if num_classes is None else num_classes
            options.setdefault("in_channels", info.in_channels)
        return Supernet(self.channels if C is None else C, num_classes, self.layers if layers is None else layers,
                        space=self, **options)

    def network(self, genotype, C: int, num_classes: int, layers: int, auxiliary: bool = False,
                **options) -> nn.Module:
        from .networks import NetworkCIFAR

        return NetworkCIFAR(C, num_classes, layers, auxiliary, genotype, space=self, **options)

    def random_genotype(self, generator: Optional[torch.Generator] = None, include_none: bool = False):
        from .genotypes import random_genotype

        return random_genotype(generator, space=self, include_none=include_none)

    def arch_weights(self, arch) -> List[Tensor]:
        """``[normal [14, K], reduce [14, K]]``: the one-hot Z of each cell type of ``arch``."""
        from .genotypes import one_hot

        return [one_hot(arch.normal, space=self), one_hot(arch.reduce, space=self)]

    def derive(self, source, rule: Optional[str] = None, kept: Optional[Sequence[Sequence[int]]] = None):
        """The genotype of a :class:`~.supernet.Supernet` (its ``softmax(log_alpha)``) or of ``(normal [14, K],
        reduce [14, K])`` weights, by ``rule`` (default: this space's; :func:`~.genotypes.derive`). ``kept``: per
        cell type, the edges kept (a top-2 cell of those edges, each with its strongest op, in edge order)."""
        from .genotypes import CONCAT, Genotype, derive

        if kept is None and isinstance(source, nn.Module):
            return source.genotype(rule or self.rule)  # PC-DARTS's edge normalisation weighs the edges there
        normal, reduce = source.alphas() if isinstance(source, nn.Module) else source
        if kept is None:
            return derive(normal, reduce, rule=rule or self.rule, space=self)
        names = self.op_names
        cells = [tuple((names[int(w[e].argmax())], EDGES[e][1]) for e in sorted(edges))
                 for w, edges in zip((normal, reduce), kept)]
        return Genotype.from_dict(dict(normal=cells[0], normal_concat=CONCAT, reduce=cells[1],
                                       reduce_concat=CONCAT), self)

    def topology(self) -> List[Tuple[int, List[int], int]]:
        """DARTS's topology decisions (DARTS-PT's second step): per cell type and node, its incoming edges, of which
        two are kept: ``(cell type, rows, 2)``."""
        return [(t, [e for e, (n, _) in enumerate(EDGES) if n == node], 2) for t in range(2)
                for node in range(NUM_NODES)]

    def penalty(self, supernet: nn.Module, form: str):
        """SNAS's resource penalty (:func:`~.costs.resource_penalty` of ``form``: log or linear, of params, FLOPs
        and MAC), or ``form="latency"``: the expected latency of the measured table ``latency_table``
        (:func:`~.latency.latency_penalty`). ValueError, one line, for a missing table or one of another network."""
        from . import costs as cost_model
        from .latency import latency_penalty

        size = self._info().image_shape
        device = supernet.log_alpha_normal.device
        if form == "latency":
            if not self.latency_table:
                raise ValueError("latency_table: the latency penalty needs a table (snas-fast latency-table)")
            table = self.latency(supernet.C, supernet.layers)
            normal, reduce = table.normal.to(device), table.reduce.to(device)
            return lambda z: latency_penalty(z[0], z[1], normal, reduce)
        normal, reduce = (t.to(device) for t in cost_model.supernet_costs(supernet, size))
        return lambda z: cost_model.resource_penalty(z[0], z[1], normal, reduce, form=form)


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
