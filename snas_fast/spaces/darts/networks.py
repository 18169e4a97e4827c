"""Evaluation networks built from a genotype: DARTS's ``NetworkCIFAR`` and ``NetworkImageNet`` (model.py), for
both kinds of genotype.

The modules follow DARTS's ``model.py`` layer for layer and keep its attribute names (``stem``, ``stem0``,
``stem1``, ``cells.i.preprocess0``, ``cells.i._ops.k``, ``auxiliary_head``, ``classifier``), so a DARTS state dict
of a top-2 genotype loads into them, and parameter counts are DARTS's. Differences, each for a reason:

- Cells take both genotype kinds (:mod:`snas_fast.genotypes`). A ``"top2"`` cell (DARTS, 8 pairs) and an
  ``"edge_all"`` cell (SNAS, 14 pairs) are built the same way: one module per listed pair, in the listed order,
  and intermediate node ``2 + i`` is the sum of its pairs' outputs, as SNAS's ``model_edge_all.py`` does. A
  ``none`` pair keeps its place in ``_ops`` (a :class:`~snas_fast.Zero`, no parameters) but is never run: it
  contributes nothing. A node none of whose pairs is live is a zero tensor of the node's shape
  (``[B, C, H', W']``).
- A concatenated node with no live input is kept as a block of zero channels: the cell's output layout
  (``len(concat) * C`` channels) does not depend on which edges are live, so the next cells are built the same
  way, the edge_all and top-2 forms of a published cell are the same network with the same parameter count, and
  the counts match the published figures (SNAS's released code does the same: its Zero ops output zeros and the
  cell concatenates them). A cell none of whose concatenated nodes is connected to the cell's inputs would output a
  value that does not depend on its input: such a genotype is refused with a ValueError naming the cell.
- ``in_channels`` (1 for the 8x8 digits) and inputs of any size: the auxiliary heads use DARTS's pooling when it
  gives the 2x2 map DARTS designed them for (8x8 to 10x10 inputs on CIFAR, 7x7 to 8x8 on ImageNet), else an
  adaptive average pool to 2x2; NetworkImageNet's final pool is adaptive (DARTS's ``AvgPool2d(7)`` is the same
  thing on the 7x7 map of a 224x224 image).
- drop-path is out of place (DARTS's ``utils.drop_path`` edits the op's output in place) and draws its mask on the
  input's device from torch's default generator (or a given one).

Parameter counts follow the papers (and DARTS's ``utils.count_parameters_in_MB``): the auxiliary head is left out,
:func:`count_parameters`. :func:`count_flops` counts multiply-adds (:func:`snas_fast.spaces.count_module`).
"""
from __future__ import annotations

import numbers
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._checks import check_int as _check_int, check_memory_format
from ...ops.zero import Zero, is_zero_op
from ..base import count_module
from .genotypes import Genotype, live_edges, load, nodes
from .operations import ReLUConvBN
from .space import DartsSpace, is_reduction_edge, make_op, reduction_cells, space_of

__all__ = [
    "AuxiliaryHeadCIFAR",
    "AuxiliaryHeadImageNet",
    "Cell",
    "NetworkCIFAR",
    "NetworkImageNet",
    "as_genotype",
    "count_flops",
    "count_parameters",
    "drop_path",
]

GenotypeLike = Union[Genotype, str, dict]


def as_genotype(genotype: GenotypeLike, space: Optional[DartsSpace] = None) -> Genotype:
    """``genotype`` as a :class:`Genotype` of ``space`` (DARTS's by default): a Genotype, the name of a published
    one (:func:`genotypes.load`), its dict or JSON form, or any object with DARTS's fields (``normal``,
    ``normal_concat``, ``reduce``, ``reduce_concat``; DARTS's namedtuple)."""
    if isinstance(genotype, Genotype):
        return Genotype.from_dict(genotype.to_dict(), space) if space is not None else genotype
    if isinstance(genotype, str):
        text = genotype.strip()
        return Genotype.from_json(text, space) if text.startswith("{") else load(genotype)
    if isinstance(genotype, dict):
        return Genotype.from_dict(genotype, space)
    fields = ("normal", "normal_concat", "reduce", "reduce_concat")
    if all(hasattr(genotype, f) for f in fields):
        return Genotype.from_dict({f: getattr(genotype, f) for f in fields}, space)
    raise TypeError(f"genotype: expected a Genotype, a published name, a dict or JSON text, "
                    f"got {type(genotype).__name__}")


def drop_path(x: Tensor, drop_prob: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """Drops whole examples of ``x [B, ...]`` with probability ``drop_prob`` and scales the kept ones by
    ``1 / (1 - drop_prob)`` (DARTS's ``utils.drop_path``, out of place): the expectation is ``x``."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
    mask.bernoulli_(keep, generator=generator)
    return x * (mask / keep)


def _used_nodes(cell, concat) -> set:
    """Cell nodes (0..5) whose value reaches the cell's output through live edges."""
    used = set(concat)
    for i, group in reversed(list(enumerate(live_edges(cell)))):
        if i + 2 in used:
            used.update(j for _, j in group)
    return used


def _connected(cell) -> List[bool]:
    """``out[n]``: whether cell node ``n`` (0..5) depends on the cell's inputs through live edges."""
    conn = [True, True]
    for group in live_edges(cell):
        conn.append(any(conn[j] for _, j in group))
    return conn


class Cell(nn.Module):
    """One evaluation cell of ``genotype`` (DARTS's ``model.Cell``, for top-2 and edge_all cells alike).

    Inputs ``s0 [B, C_prev_prev, H0, W0]`` (the cell before the previous one) and ``s1 [B, C_prev, H, W]``;
    ``reduction_prev`` says ``s0`` is twice ``s1``'s size (it is then reduced by a FactorizedReduce). Output
    ``[B, len(concat) * C, H', W']`` with ``H' = ceil(H / 2)`` in a reduction cell, else ``H``.
    """

    def __init__(self, genotype: Genotype, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, space: Optional[DartsSpace] = None):
        super().__init__()
        space = space_of(space)
        self.reduction = bool(reduction)
        if reduction_prev:
            self.preprocess0 = space.reduce_input(C_prev_prev, C, affine=True)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        kind = "reduce" if reduction else "normal"
        cell = genotype.reduce if reduction else genotype.normal
        concat = genotype.reduce_concat if reduction else genotype.normal_concat
        conn = _connected(cell)
        if not any(conn[n] for n in concat):
            raise ValueError(
                f"genotype.{kind}: none of the concatenated nodes {list(concat)} is connected to the cell's inputs "
                f"(every path to them has a 'none' edge), so the cell's output would not depend on its input")
        self.C = C
        self._concat = tuple(concat)
        self.multiplier = len(concat)
        groups = nodes(cell)
        self._steps = len(groups)
        self._ops = nn.ModuleList()
        self._indices: List[int] = []
        self._node_of: List[int] = []  # _node_of[k]: the intermediate node (0..3) pair k feeds
        self._droppable: List[bool] = []  # drop-path applies (not to the identity)
        for i, group in enumerate(groups):
            for name, j in group:
                stride = 2 if is_reduction_edge(reduction, j) else 1
                self._ops.append(make_op(name, C, stride, affine=True, space=space))
                self._droppable.append(space.primitive(name).fold_at(stride) not in ("identity", "zero"))
                self._indices.append(j)
                self._node_of.append(i)
        used = _used_nodes(cell, concat)
        #: whether every parameter of the cell reaches its output (DistributedDataParallel needs
        #: find_unused_parameters=True otherwise): both inputs are read and no live op feeds a node left out
        self.uses_all_parameters = {0, 1} <= used and all(
            i + 2 in used for i, group in enumerate(live_edges(cell)) for _ in group)

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float = 0.0) -> Tensor:
        s0 = self.preprocess0(s0)
        s1 = self.preprocess1(s1)
        states = [s0, s1]
        sums: List[Optional[Tensor]] = [None] * self._steps
        k = 0
        for i in range(self._steps):
            while k < len(self._ops) and self._node_of[k] == i:
                op = self._ops[k]
                if not is_zero_op(op):  # `none` contributes nothing and is not run
                    h = op(states[self._indices[k]])
                    if self.training and drop_prob > 0.0 and self._droppable[k]:  # the identity is never dropped
                        h = drop_path(h, drop_prob)
                    sums[i] = h if sums[i] is None else sums[i] + h
                k += 1
            if sums[i] is None:  # no live input: a zero node of the node's shape
                sums[i] = Zero(2 if self.reduction else 1)(s1)
            states.append(sums[i])
        return torch.cat([states[n] for n in self._concat], dim=1)


def _pool_to_2x2(x: Tensor, pool: nn.Module) -> Tensor:
    """DARTS's pooling of the auxiliary head when it yields 2x2 (the size the head was designed for), else an
    adaptive average pool to 2x2."""
    k, s = pool.kernel_size, pool.stride
    if all(n >= k and (n - k) // s + 1 == 2 for n in x.shape[-2:]):
        return pool(x)
    return F.adaptive_avg_pool2d(x, 2)


class _AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier: ReLU, a 5x5 average pool of ``stride`` to a 2x2 map (other sizes are pooled
    to 2x2 adaptively), 1x1 conv to 128 + BN + ReLU, 2x2 conv to 768 (+ BN if ``bn_768``) + ReLU, linear.
    ``[B, C, H, W] -> [B, num_classes]``."""

    def __init__(self, C: int, num_classes: int, stride: int, bn_768: bool):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=stride, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            *([nn.BatchNorm2d(768)] if bn_768 else []),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features[0](x)
        x = _pool_to_2x2(x, self.features[1])
        x = self.features[2:](x)
        return self.classifier(x.flatten(1))


class AuxiliaryHeadCIFAR(_AuxiliaryHead):
    """DARTS's auxiliary classifier for CIFAR, on the ``[B, C, 8, 8]`` output of the second reduction cell
    (8x8 -> 2x2 by a stride-3 pool). Returns ``[B, num_classes]`` logits."""

    def __init__(self, C: int, num_classes: int):
        super().__init__(C, num_classes, stride=3, bn_768=True)


class AuxiliaryHeadImageNet(_AuxiliaryHead):
    """DARTS's auxiliary classifier for ImageNet, on the ``[B, C, 7, 7]`` output of the second reduction cell of a
    224x224 image (7x7 -> 2x2 by a stride-2 pool; no BN after the 2x2 conv, as in DARTS's experiments). Returns
    ``[B, num_classes]`` logits."""

    def __init__(self, C: int, num_classes: int):
        super().__init__(C, num_classes, stride=2, bn_768=False)


class _Network(nn.Module):
    """The cell stack shared by both networks: ``layers`` cells, reductions at ``layers // 3`` and
    ``2 * layers // 3``, the auxiliary head after the second reduction."""

    def _setup(self, C: int, min_C: int, num_classes: int, layers: int, auxiliary: bool, genotype: GenotypeLike,
               in_channels: int, space: Optional[DartsSpace], memory_format) -> None:
        _check_int("C", C, min_C)
        _check_int("num_classes", num_classes, 1)
        _check_int("layers", layers, 1)
        _check_int("in_channels", in_channels, 1)
        self.space = space_of(space)
        self.genotype = as_genotype(genotype, space)
        self._layers = layers
        self._auxiliary = bool(auxiliary)
        self.drop_path_prob = 0.0
        self.memory_format = check_memory_format(memory_format)

    def _build_cells(self, genotype: Genotype, C: int, C_stem: int, layers: int, reduction_prev: bool) -> int:
        C_prev_prev, C_prev, C_curr = C_stem, C_stem, C
        self.cells = nn.ModuleList()
        self._aux_after = 2 * layers // 3
        C_aux = None
        for i in range(layers):
            reduction = i in reduction_cells(layers)
            if reduction:
                C_curr *= 2
            cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev, self.space)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self._aux_after:
                C_aux = C_prev
        self._C_aux = C_aux
        return C_prev

    def _take_memory_format(self) -> None:
        """The parameters in :attr:`memory_format` (4-d ones change; the input is converted in ``forward``)."""
        self.to(memory_format=self.memory_format)

    def has_unused_parameters(self) -> bool:
        """Whether some parameter never reaches the logits (a cell input nobody reads, a node left out of the
        concat); DistributedDataParallel then needs ``find_unused_parameters=True``."""
        return not all(cell.uses_all_parameters for cell in self.cells)

    def _run_cells(self, s0: Tensor, s1: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self._aux_after and self._auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)
        return s1, logits_aux


class NetworkCIFAR(_Network):
    """DARTS's CIFAR evaluation network from a genotype (``model.NetworkCIFAR``).

    Args:
        C: channels of the first cells (36 in DARTS's and SNAS's evaluation).
        num_classes: classifier outputs.
        layers: cells (20); reduction cells at ``layers // 3`` and ``2 * layers // 3``.
        auxiliary: build the auxiliary head after the second reduction cell (its logits in training only).
        genotype: a :class:`Genotype`, a published name (``"DARTS_V2"``), or its dict; top-2 or edge_all cells.
        in_channels: image channels (3; 1 for digits).
        space: the :class:`~snas_fast.spaces.darts.DartsSpace` whose primitives the genotype names (DARTS's 8).
        memory_format: ``torch.contiguous_format`` (NCHW) or ``torch.channels_last`` (NHWC: the parameters and
            every activation; the input is converted; faster convolutions on CPU, and cuDNN's layout in half
            precision).

    ``forward(x [B, in_channels, H, W])`` returns ``(logits [B, num_classes], logits_aux)``; ``logits_aux`` is the
    auxiliary head's ``[B, num_classes]`` in training mode with ``auxiliary=True``, else None. ``drop_path_prob``
    (an attribute, 0 at first) is the drop-path probability of every non-identity op in training.
    """

    def __init__(self, C: int, num_classes: int, layers: int, auxiliary: bool, genotype: GenotypeLike,
                 in_channels: int = 3, space: Optional[DartsSpace] = None, memory_format=torch.contiguous_format):
        super().__init__()
        self._setup(C, 1, num_classes, layers, auxiliary, genotype, in_channels, space, memory_format)
        C_stem = 3 * C  # stem_multiplier
        self.stem = self.space.stem(in_channels, C_stem)
        C_prev = self._build_cells(self.genotype, C, C_stem, layers, reduction_prev=False)
        if self._auxiliary:
            self.auxiliary_head = AuxiliaryHeadCIFAR(self._C_aux, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self._take_memory_format()

    def forward(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        s0 = s1 = self.stem(x.contiguous(memory_format=self.memory_format))
        s1, logits_aux = self._run_cells(s0, s1)
        return self.classifier(self.global_pooling(s1).flatten(1)), logits_aux


class NetworkImageNet(_Network):
    """DARTS's ImageNet (mobile setting) evaluation network from a genotype (``model.NetworkImageNet``): a
    two-stage stem (three stride-2 3x3 convs, 224 -> 28), ``layers`` cells (14; C = 48 in DARTS, reductions at
    1/3 and 2/3), an auxiliary head after the second reduction. Same arguments and outputs as
    :class:`NetworkCIFAR`."""

    def __init__(self, C: int, num_classes: int, layers: int, auxiliary: bool, genotype: GenotypeLike,
                 in_channels: int = 3, space: Optional[DartsSpace] = None, memory_format=torch.contiguous_format):
        super().__init__()
        self._setup(C, 2, num_classes, layers, auxiliary, genotype, in_channels, space, memory_format)
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, C // 2, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        C_prev = self._build_cells(self.genotype, C, C, layers, reduction_prev=True)
        if self._auxiliary:
            self.auxiliary_head = AuxiliaryHeadImageNet(self._C_aux, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self._take_memory_format()

    def forward(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        s0 = self.stem0(x.contiguous(memory_format=self.memory_format))
        s1 = self.stem1(s0)
        s1, logits_aux = self._run_cells(s0, s1)
        return self.classifier(self.global_pooling(s1).flatten(1)), logits_aux


def count_parameters(model: nn.Module, auxiliary: bool = False) -> int:
    """Learnable parameters of ``model``; those of the auxiliary head (names containing ``auxiliary``) only with
    ``auxiliary=True``. The papers' counts leave the head out (DARTS's ``utils.count_parameters_in_MB``)."""
    return sum(p.numel() for name, p in model.named_parameters()
               if p.requires_grad and (auxiliary or "auxiliary" not in name))


def count_flops(model: nn.Module, image_size: Union[int, Sequence[int]], in_channels: Optional[int] = None) -> int:
    """Multiply-adds of one forward pass of one ``image_size`` image (an int for a square image, or ``(H, W)``),
    in eval mode, so without the auxiliary head: every conv's ``C_out * H_out * W_out * C_in / groups * k * k``
    plus every linear layer's ``in * out`` (:func:`snas_fast.spaces.count_module`). ``in_channels`` defaults to the
    first conv's."""
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    else:
        size = tuple(image_size)
    if in_channels is None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise ValueError("in_channels: the model has no Conv2d to read it from; pass it")
        in_channels = first.in_channels
    return count_module(model, (in_channels,) + size).flops
