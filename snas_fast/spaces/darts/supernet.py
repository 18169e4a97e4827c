"""The DARTS supernet: every edge of every cell a mixture of the space's primitives, weighted by architecture
weights it is given. It holds the network's weights and ``log_alpha``; how the weights are drawn from ``log_alpha``
(SNAS's Gumbel sample per step, cell or example, soft or hard) is a strategy's policy
(:class:`snas_fast.search.snas.SnasSampler`), not the network's.

Three ways to mix an edge, building the very same modules (same parameters, BatchNorm buffers and initialisation
under the same seed), so they can be compared number for number and benchmarked fairly:

- ``mixed="fused"`` (default): :func:`snas_fast.mixed_edge`. The candidates' folds (:mod:`snas_fast.spaces.base`)
  say how: pools and the identity are computed from the edge input inside the kernel, every ``"bn_tail"`` candidate
  runs up to its trailing affine-free BatchNorm (the convolutions on one shared ``relu(x)``) and the kernel
  normalises, weights and sums; ``"opaque"`` candidates run as they are and :func:`snas_fast.mixed_op` adds them.
- ``mixed="fused_sum"``: every candidate module runs as it is and :func:`snas_fast.mixed_op` weights and sums.
- ``mixed="eager"``: DARTS's ``sum(w * op(x))`` over all candidates, the baseline.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._checks import check_bool, check_memory_format
from ...ops.functional import batch_norm_args, mixed_edge, mixed_op
from ...ops import reference
from ...ops.zero import Zero, is_zero_op
from .genotypes import Genotype, derive
from .networks import drop_path
from .operations import ReLUConvBN
from ..base import OneShot
from .space import EDGES, MIXED, NUM_EDGES, NUM_NODES, DartsSpace, is_reduction_edge, make_op, reduction_cells, space_of


#: Per-cell architecture weights: ``[14, K]`` (the batch shares them) or ``[B, 14, K]`` (one row per example).
CellWeights = Tensor
#: Per-cell sampled columns of hard sampling: 14 ints, or 14 lists of B ints (one per example).
CellChoice = Sequence


def _edge_plan(ops: Sequence[nn.Module], folds: Sequence[str]):
    """How the deep-fused edge (:func:`snas_fast.mixed_edge`) computes each candidate from its fold.

    Returns ``(cols, tails, opaque)``: ``cols = [max, avg, id]`` (the column of each term computed from ``x`` inside
    the kernel, -1 if absent), ``tails`` the columns of the ``"bn_tail"`` candidates, ``opaque`` those run as they
    are and summed.
    """
    cols, tails, opaque = [-1, -1, -1], [], []
    slot = {"max_pool": 0, "avg_pool": 1, "identity": 2}
    for k, (op, fold) in enumerate(zip(ops, folds)):
        if fold == "zero":
            continue
        if fold in slot and cols[slot[fold]] < 0:
            cols[slot[fold]] = k
        elif fold == "bn_tail":
            bn = getattr(op, "bn", None)
            if not (callable(getattr(op, "pre_bn", None)) and isinstance(bn, nn.BatchNorm2d)):
                raise TypeError(f"ops[{k}]: {type(op).__name__} is a 'bn_tail' primitive but has no pre_bn(x) and "
                                "trailing BatchNorm2d bn")
            if bn.affine:
                raise ValueError(f"ops[{k}]: the fused edge folds affine-free BatchNorms only (search mode), "
                                 "got affine=True")
            tails.append(k)
        else:  # opaque, or a second pool or identity: the kernel has one slot for each
            opaque.append(k)
    return cols, tails, opaque


def _fold(space: DartsSpace, k: int, stride: int, pool_bn: bool) -> str:
    fold = space.primitives[k].fold_at(stride)
    return "bn_tail" if pool_bn and fold in ("max_pool", "avg_pool") else fold  # a SearchBN-wrapped pool


class MixedEdge(nn.Module):
    """One edge: the space's candidate operations, mixed by a weight vector ``[K]`` or ``[B, K]``.

    ``mixed``: see the module docstring. The modules, parameters and BatchNorm buffers are the same in all three
    ways, so state dicts move between them. ``partial_channels`` k > 1: PC-DARTS's edge, the candidates built for
    and run on ``C / k`` channels, the rest bypassing (:func:`snas_fast.reference.partial_channel_edge`).
    """

    def __init__(self, C: int, stride: int, mixed: str, pool_bn: bool = False, space: Optional[DartsSpace] = None,
                 partial_channels: int = 1):
        super().__init__()
        space = space_of(space)
        self.mixed = mixed
        self.stride = stride
        self.partial_channels = partial_channels
        self.ops = nn.ModuleList([make_op(name, C // partial_channels, stride, affine=False, pool_bn=pool_bn,
                                          space=space) for name in space.op_names])
        folds = [_fold(space, k, stride, pool_bn) for k in range(len(self.ops))]
        # the identity is not dropped by drop-path (as SNAS and DARTS), the zero op has nothing to drop
        self.kept = [k for k, fold in enumerate(folds) if fold in ("identity", "zero")]
        self._cols, self._tails, self._opaque = _edge_plan(self.ops, folds)

    def _drop(self, weights: Tensor, batch: int, drop_prob: float) -> Tensor:
        """Drop-path of candidate k on example b as a per-example weight: ``w[b, k] * mask[b, k] / keep``
        (:func:`~snas_fast.spaces.darts.networks.drop_path`'s mask), the identity and the zero op kept; ``weights``
        as they are outside training or at ``drop_prob`` 0."""
        if not (drop_prob > 0.0 and self.training):
            return weights
        w = weights.expand(batch, -1) if weights.dim() == 1 else weights
        scale = drop_path(torch.ones(batch, len(self.ops), device=w.device, dtype=w.dtype), drop_prob)
        scale[:, self.kept] = 1.0
        return w * scale

    def _partial(self, x: Tensor, mix) -> Optional[Tensor]:
        """``mix(x)``, or with partial channels PC-DARTS's edge around it (then never None)."""
        if self.partial_channels == 1:
            return mix(x)
        return reference.partial_channel_edge(x, mix, self.partial_channels, self.stride)

    def forward(self, x: Tensor, weights: Tensor, drop_prob: float = 0.0) -> Tensor:
        """``x``: ``[B, C, H, W]``; ``weights``: ``[K]`` or ``[B, K]``. Returns ``[B, C, H', W']``."""
        if self.partial_channels > 1 and self._deep() and not self._opaque:
            # one mixed_edge call writes the mixed and the bypass channels where the shuffle puts them
            return self._forward_folded(x, self._drop(weights, x.shape[0], drop_prob), self.partial_channels)
        return self._partial(x, lambda x: self._mix(x, weights, drop_prob))

    def _deep(self) -> bool:
        """Whether the candidates' tails fold into :func:`mixed_edge`: ``mixed="fused"`` and every BatchNorm a
        ``BatchNorm2d``. A BatchNorm replaced by another kind (SyncBatchNorm under --sync-bn: statistics of the
        global batch) must run as the module it is: the edge falls back to the fused sum of the candidates."""
        return self.mixed == "fused" and all(type(self.ops[k].bn) is nn.BatchNorm2d for k in self._tails)

    def _mix(self, x: Tensor, weights: Tensor, drop_prob: float) -> Tensor:
        weights = self._drop(weights, x.shape[0], drop_prob)
        if self.mixed == "eager":  # DARTS: every candidate runs, the zero op included
            return reference.mixed_op([op(x) for op in self.ops], weights)
        if not self._deep():
            return mixed_op([None if is_zero_op(op) else op(x) for op in self.ops], weights)
        return self._forward_deep(x, weights)

    def _forward_deep(self, x: Tensor, weights: Tensor) -> Tensor:
        out = None
        if self._tails or max(self._cols) >= 0:
            out = self._forward_folded(x, weights)
        if self._opaque:
            rest = mixed_op([self.ops[k](x) if k in self._opaque else None for k in range(len(self.ops))], weights)
            out = rest if out is None else out + rest
        return out

    def _forward_folded(self, x: Tensor, weights: Tensor, groups: int = 1) -> Tensor:
        """The folded candidates in one :func:`mixed_edge` call; ``groups`` > 1: partial channels, the
        candidates run on the first ``C / groups`` channels."""
        tails = [self.ops[k] for k in self._tails]
        xm = x if groups == 1 else x[:, : x.shape[1] // groups]
        relu_x = None
        if any(getattr(op, "relu_input", False) for op in tails):
            with torch.no_grad():  # one relu(x) for every convolution candidate, recomputed in their backward
                relu_x = F.relu(xm)
        us = [op.pre_bn(xm, relu_x if getattr(op, "relu_input", False) else None) for op in tails]
        return mixed_edge(x, us, weights, self._cols + self._tails, self.stride, groups=groups,
                          **batch_norm_args([op.bn for op in tails]))

    def forward_hard(self, x: Tensor, weights: Tensor, choice, drop_prob: float = 0.0) -> Optional[Tensor]:
        """Hard sampling: only the sampled candidate runs.

        ``choice``: the sampled column, an int (one sample for the batch) or B ints (one per example; the examples
        are grouped by candidate). ``weights``: ``[K]`` or ``[B, K]``, one-hot valued, whose sampled column carries
        the estimator's gradient. Returns ``[B, C, H', W']``, or None when every example sampled the zero op (and
        the channels are not partial).
        """
        return self._partial(x, lambda x: self._hard(x, weights, choice, drop_prob))

    def _hard(self, x: Tensor, weights: Tensor, choice, drop_prob: float) -> Optional[Tensor]:
        B = x.shape[0]
        w = weights.expand(B, -1) if weights.dim() == 1 else weights
        w = self._drop(w, B, drop_prob)
        if isinstance(choice, int):
            y = self._single(x, choice)
            return None if y is None else w[:, choice].view(B, 1, 1, 1).to(y.dtype) * y
        out = None
        for k in sorted(set(choice)):
            if is_zero_op(self.ops[k]):
                continue
            idx = torch.tensor([b for b, c in enumerate(choice) if c == k], device=x.device)
            y = self.ops[k](x.index_select(0, idx))
            part = w.index_select(0, idx)[:, k].view(-1, 1, 1, 1).to(y.dtype) * y
            if out is None:
                out = y.new_zeros((B,) + tuple(y.shape[1:]))
            out = out.index_put((idx,), part)
        return out

    def forward_single(self, x: Tensor, k: int) -> Optional[Tensor]:
        """Candidate k alone (the derived child's edge); None for the zero op (with full channels)."""
        return self._partial(x, lambda x: self._single(x, k))

    def _single(self, x: Tensor, k: int) -> Optional[Tensor]:
        op = self.ops[k]
        return None if is_zero_op(op) else op(x)


class SearchCell(nn.Module):
    """A DARTS cell: two preprocessed inputs, ``steps`` nodes, each the sum of one edge from every earlier node."""

    def __init__(self, steps, multiplier, C_pp, C_p, C, reduction, reduction_prev, mixed, pool_bn=False,
                 space: Optional[DartsSpace] = None, partial_channels: int = 1):
        super().__init__()
        self.reduction = reduction
        self.C = C  # channels of every edge
        self.steps, self.multiplier = steps, multiplier
        if reduction_prev:
            self.preprocess0 = space_of(space).reduce_input(C_pp, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_pp, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(MixedEdge(C, 2 if is_reduction_edge(reduction, j) else 1, mixed, pool_bn, space,
                                             partial_channels) for _, j in EDGES)

    def _nodes(self, s0: Tensor, s1: Tensor, edge, edge_weights: Optional[Tensor] = None) -> Tensor:
        """The node loop: ``edge(e, h)`` is edge e's output on its input state ``h`` (None: nothing), times
        ``edge_weights[e]`` when given (PC-DARTS's edge normalisation). A node with no live input is zero, of the
        shape the edges give."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(self.steps):
            total = None
            for e in (e for e, (n, _) in enumerate(EDGES) if n == node):
                out = edge(e, states[EDGES[e][1]])
                if out is not None and edge_weights is not None:
                    out = edge_weights[e] * out
                if out is not None:
                    total = out if total is None else total + out
            if total is None:
                total = Zero(2 if self.reduction else 1)(states[0])
            states.append(total)
        return torch.cat(states[-self.multiplier:], dim=1)

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, drop_prob: float = 0.0, choice=None,
                edge_weights: Optional[Tensor] = None) -> Tensor:
        """``weights``: ``[14, K]`` or ``[B, 14, K]``; returns ``[B, multiplier * C, H', W']``.

        ``choice``: None (soft: every candidate of every edge is mixed), or hard sampling's sampled column of each
        edge (14 ints, or 14 lists of B ints), when only the sampled candidates run. ``edge_weights``: ``[14]``
        or None, each edge's output multiplied by its weight (:func:`normalised_edge_weights`)."""
        if choice is None:
            return self._nodes(s0, s1, lambda e, h: self.edges[e](h, weights[..., e, :], drop_prob), edge_weights)
        return self._nodes(s0, s1, lambda e, h: self.edges[e].forward_hard(h, weights[..., e, :], choice[e],
                                                                           drop_prob), edge_weights)

    def forward_child(self, s0: Tensor, s1: Tensor, choice: Sequence[int],
                      edge_weights: Optional[Tensor] = None) -> Tensor:
        """The derived child: edge e runs only candidate ``choice[e]``; a node with no live input is zero."""
        return self._nodes(s0, s1, lambda e, h: self.edges[e].forward_single(h, choice[e]), edge_weights)


def normalised_edge_weights(beta: Tensor) -> Tensor:
    """PC-DARTS's edge normalisation: ``beta [14]`` softmaxed over each node's incoming edges (2, 3, 4, 5 of them;
    :data:`EDGES` lists a node's edges together). Returns ``[14]``."""
    return torch.cat([F.softmax(beta[[e for e, (n, _) in enumerate(EDGES) if n == node]], dim=-1)
                      for node in range(NUM_NODES)])


class Supernet(nn.Module, OneShot):
    """The one-shot network of the DARTS space: its weights and its architecture parameters ``log_alpha``
    (:class:`~snas_fast.spaces.OneShot`: ``alpha_names`` ``("normal", "reduce")``).

    Args:
        C: channels of the first cells (16 in the paper's search).
        num_classes: classifier outputs.
        layers: number of cells (8 in the paper's search); reduction cells at 1/3 and 2/3 of the depth.
        in_channels: image channels (3 for CIFAR-10, 1 for digits).
        steps, multiplier, stem_multiplier: DARTS's cell and stem settings.
        mixed: ``"fused"``, ``"fused_sum"`` or ``"eager"`` (the module docstring); all three compute the same
            function from the same parameters and buffers.
        pool_bn: DARTS's BatchNorm after each pool candidate (SNAS's official search uses bare pools).
        space: the :class:`~snas_fast.spaces.darts.DartsSpace` whose primitives every edge mixes (DARTS's 8).
        memory_format: ``torch.contiguous_format`` (NCHW) or ``torch.channels_last`` (NHWC: parameters and
            activations; the input is converted); every way of mixing stays NHWC throughout (the fused ops read
            and write it in place; bench/RESULTS.md has the step times).
        partial_channels: PC-DARTS's k (Xu et al. 2020): every edge mixes the first ``C / k`` channels of its
            input, the others bypass, then a channel shuffle (:func:`snas_fast.reference.partial_channel_edge`);
            with ``mixed="fused"`` one ``mixed_edge(groups=k)`` call per edge, no concatenated or shuffled tensor;
            1: every channel is mixed. ``C`` must be divisible by k.
        edge_normalization: PC-DARTS's ``beta``: each edge's output times the softmax of ``beta`` over its node's
            incoming edges (:meth:`beta_parameters`, :func:`normalised_edge_weights`).

    ``forward(x, weights, choices=None)``: ``x [B, in_channels, H, W]``, ``weights`` one architecture weight
    tensor per cell (:data:`CellWeights`, in cell order), ``choices`` None (soft) or one :data:`CellChoice` per cell
    (hard: only the chosen candidates run). Returns logits ``[B, num_classes]``. SNAS's sample at a temperature is
    :class:`snas_fast.search.snas.SnasSampler`'s job (``snas_fast.Supernet`` is this network with it attached).
    """

    alpha_names = ("normal", "reduce")

    def __init__(self, C: int, num_classes: int, layers: int, in_channels: int = 3, steps: int = 4,
                 multiplier: int = 4, stem_multiplier: int = 3, mixed: str = "fused", pool_bn: bool = False,
                 space: Optional[DartsSpace] = None, memory_format=torch.contiguous_format,
                 partial_channels: int = 1, edge_normalization: bool = False):
        super().__init__()
        for name, value in (("C", C), ("num_classes", num_classes), ("layers", layers), ("in_channels", in_channels),
                            ("partial_channels", partial_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if C % partial_channels:
            raise ValueError(f"partial_channels: C = {C} is not divisible by k = {partial_channels} (every edge "
                             f"mixes C / k channels)")
        if steps != 4:
            raise ValueError(f"steps: the 14-edge search space needs steps = 4, got {steps}")
        if mixed not in MIXED:
            raise ValueError(f"mixed: expected one of {MIXED}, got {mixed!r}")
        self.space = space_of(space)
        self.C, self.num_classes, self.layers, self.in_channels = C, num_classes, layers, in_channels
        self.mixed, self.pool_bn = mixed, pool_bn
        self.memory_format = check_memory_format(memory_format)
        self.partial_channels, self.edge_normalization = partial_channels, check_bool("edge_normalization",
                                                                                      edge_normalization)
        self.drop_path_prob = 0.0
        C_curr = stem_multiplier * C
        self.stem = self.space.stem(in_channels, C_curr)
        C_pp, C_p, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in reduction_cells(layers)
            if reduction:
                C_curr *= 2
            cell = SearchCell(steps, multiplier, C_pp, C_p, C_curr, reduction, reduction_prev, mixed, pool_bn,
                              self.space, partial_channels)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)
        K = len(self.space.primitives)
        self.log_alpha_normal = nn.Parameter(torch.normal(1.0, 0.01, (NUM_EDGES, K)))
        self.log_alpha_reduce = nn.Parameter(torch.normal(1.0, 0.01, (NUM_EDGES, K)))
        if edge_normalization:  # PC-DARTS's beta, initialised as theirs (1e-3 * randn)
            self.beta_normal = nn.Parameter(1e-3 * torch.randn(NUM_EDGES))
            self.beta_reduce = nn.Parameter(1e-3 * torch.randn(NUM_EDGES))
        self.to(memory_format=self.memory_format)

    # -- parameters ------------------------------------------------------------------------------------------
    def arch_parameters(self) -> List[nn.Parameter]:
        """``[log_alpha_normal, log_alpha_reduce]``, each ``[14, K]``."""
        return [self.log_alpha_normal, self.log_alpha_reduce]

    def beta_parameters(self) -> List[nn.Parameter]:
        """``[beta_normal, beta_reduce]`` (each ``[14]``) with ``edge_normalization``, else ``[]``: architecture
        parameters too, trained with ``log_alpha``."""
        return [self.beta_normal, self.beta_reduce] if self.edge_normalization else []

    def weight_parameters(self) -> List[nn.Parameter]:
        """Every parameter but the architecture's (``log_alpha`` and the betas)."""
        arch = {id(p) for p in self.arch_parameters() + self.beta_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def edge_weights(self) -> List[Optional[Tensor]]:
        """Per cell, in order: its :func:`normalised_edge_weights` ``[14]``, or None without edge normalisation."""
        if not self.edge_normalization:
            return [None] * len(self.cells)
        betas = [normalised_edge_weights(b) for b in self.beta_parameters()]
        return [betas[t] for t in self.cell_types()]

    def cell_types(self) -> List[int]:
        """Per cell, in order: 0 (normal) or 1 (reduction), the index of its ``log_alpha``."""
        return [int(c.reduction) for c in self.cells]

    def cell_counts(self) -> Tuple[int, int]:
        """(normal cells, reduction cells)."""
        reduce = sum(self.cell_types())
        return len(self.cells) - reduce, reduce

    # -- forward ---------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, weights: Sequence[CellWeights], choices: Optional[Sequence[CellChoice]] = None
                ) -> Tensor:
        return self.run(x, weights, choices)

    def run(self, x: Tensor, weights: Sequence[CellWeights], choices: Optional[Sequence[CellChoice]] = None
            ) -> Tensor:
        """Logits ``[B, num_classes]`` of ``x`` under per-cell ``weights`` (and ``choices``): :meth:`forward`, under a
        name subclasses with another ``forward`` keep."""
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x: expected images [B, {self.in_channels}, H, W] (in_channels={self.in_channels}), "
                             f"got {got}")
        if len(weights) != len(self.cells) or (choices is not None and len(choices) != len(self.cells)):
            raise ValueError(f"weights, choices: expected one per cell ({len(self.cells)}), got {len(weights)} and "
                             f"{None if choices is None else len(choices)}")
        s0 = s1 = self.stem(x.contiguous(memory_format=self.memory_format))
        for i, (cell, edge_weights) in enumerate(zip(self.cells, self.edge_weights())):
            s0, s1 = s1, cell(s0, s1, weights[i], self.drop_path_prob, None if choices is None else choices[i],
                              edge_weights)
        return self.classifier(self.global_pooling(s1).flatten(1))

    def run_arch(self, x: Tensor, weights: Sequence[Tensor], choices: Optional[Sequence[Sequence[int]]] = None
                 ) -> Tensor:
        """Logits under one weight tensor per cell type (``weights = [normal, reduce]``, each ``[14, K]`` or ``[B, 14,
        K]``) and, for hard paths, the chosen columns per cell type: every cell takes its type's
        (:class:`~snas_fast.spaces.OneShot`)."""
        types = self.cell_types()
        return self.run(x, [weights[t] for t in types], None if choices is None else [choices[t] for t in types])

    def forward_child(self, x: Tensor, genotype_choice: Optional[Tuple[Sequence[int], Sequence[int]]] = None) -> Tensor:
        """The derived child with the supernet's weights: every edge runs only its argmax candidate (or the
        columns ``genotype_choice = (normal [14], reduce [14])``)."""
        if genotype_choice is None:
            genotype_choice = tuple(la.argmax(-1).tolist() for la in self.arch_parameters())
        s0 = s1 = self.stem(x.contiguous(memory_format=self.memory_format))
        for cell, edge_weights in zip(self.cells, self.edge_weights()):
            s0, s1 = s1, cell.forward_child(s0, s1, genotype_choice[int(cell.reduction)], edge_weights)
        return self.classifier(self.global_pooling(s1).flatten(1))

    # -- derivation ------------------------------------------------------------------------------------------
    def alphas(self) -> Tuple[Tensor, Tensor]:
        """``softmax(log_alpha)`` of (normal, reduce), each ``[14, K]``, detached."""
        return tuple(F.softmax(la.detach(), dim=-1) for la in self.arch_parameters())

    def genotype(self, rule: str = "edge_all") -> Genotype:
        """The derived child: ``"edge_all"`` (argmax on every edge, SNAS) or ``"top2"`` (DARTS). With edge
        normalisation an edge's strength is its op weights times its normalised beta (PC-DARTS's derivation; the
        per-edge argmax of ``"edge_all"`` does not change)."""
        normal, reduce = self.alphas()
        if self.edge_normalization:
            normal, reduce = (a * normalised_edge_weights(b.detach())[:, None]
                              for a, b in zip((normal, reduce), self.beta_parameters()))
        return derive(normal, reduce, rule=rule, space=self.space)
