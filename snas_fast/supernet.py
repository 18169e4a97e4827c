"""The SNAS supernet: the DARTS CIFAR search space with every edge mixed by a Gumbel-softmax sample.

Three ways to mix an edge, building the very same modules (same parameters, BatchNorm buffers and initialisation
under the same seed), so they can be compared number for number and benchmarked fairly:

- ``mixed="fused"`` (default): :func:`snas_fast.mixed_edge`. The pools and the identity are computed from the edge
  input inside the kernel, every convolution candidate runs up to its trailing affine-free BatchNorm on one shared
  ``relu(x)``, and the kernel normalises, weights and sums (one launch after a statistics pass; two backward).
- ``mixed="fused_sum"``: every candidate module runs as it is and :func:`snas_fast.mixed_op` weights and sums.
- ``mixed="eager"``: DARTS's ``sum(w * op(x))`` over all eight candidates, the baseline.

``forward(x, tau, hard=True)`` is hard sampling: each edge draws a one-hot sample and only the sampled candidate
runs, with GDAS's straight-through or DSNAS's score-function gradient for ``log_alpha`` (``estimator``).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import reference
from .functional import mixed_edge, mixed_op
from .genotypes import Genotype, derive
from .modules import is_zero_op
from .recompute import lean_pre_bn
from .search_space import PRIMITIVES, FactorizedReduce, Identity, ReLUConvBN, make_op

MIXED = ("fused", "fused_sum", "eager")
SAMPLING = ("step", "cell", "example")
ESTIMATORS = ("st", "dsnas")
NUM_EDGES = 14


def _edge_plan(ops: Sequence[nn.Module]):
    """How the deep-fused edge (:func:`snas_fast.mixed_edge`) computes each candidate.

    Returns ``(cols, tails)``: ``cols = [max, avg, id]`` (the column of each term computed from ``x`` inside the
    kernel, -1 if absent) and ``tails``, one ``(column, kind, module)`` per BatchNorm-ended candidate, ``kind``
    ``"relu"`` (``module.pre_bn(relu(x))``: the convolutions and FactorizedReduce, sharing one ``relu(x)``) or
    ``"pool"`` (``module[0](x)``: a pool followed by DARTS's search BatchNorm).
    """
    cols, tails = [-1, -1, -1], []
    for k, op in enumerate(ops):
        if is_zero_op(op):
            continue
        if isinstance(op, nn.MaxPool2d):
            cols[0] = k
        elif isinstance(op, nn.AvgPool2d):
            cols[1] = k
        elif isinstance(op, (Identity, nn.Identity)):
            cols[2] = k
        elif isinstance(op, nn.Sequential) and len(op) == 2 and isinstance(op[1], nn.BatchNorm2d):
            tails.append((k, "pool", op))
        elif hasattr(op, "pre_bn") and isinstance(getattr(op, "bn", None), nn.BatchNorm2d):
            tails.append((k, "relu", op))
        else:
            raise TypeError(f"ops[{k}]: {type(op).__name__} has no fused form (expected a pool, an identity, a zero op "
                            "or a module with pre_bn() and a trailing affine-free BatchNorm bn)")
    for k, _, op in tails:
        bn = op[1] if isinstance(op, nn.Sequential) else op.bn
        if bn.affine:
            raise ValueError(f"ops[{k}]: the fused edge folds affine-free BatchNorms only (search mode), got affine=True")
    return cols, tails


class MixedEdge(nn.Module):
    """One edge: the eight candidate operations, mixed by a weight vector ``[K]`` or ``[B, K]``.

    ``mixed="fused"`` runs :func:`snas_fast.mixed_edge` (the pools, the identity and every candidate's trailing
    BatchNorm inside the kernel; the convolution candidates share one ``relu(x)``); ``"fused_sum"`` runs every
    candidate module and sums with :func:`snas_fast.mixed_op`; ``"eager"`` is DARTS's ``sum(w * op(x))``. The
    modules, parameters and BatchNorm buffers are the same in all three, so state dicts move between them.
    """

    def __init__(self, C: int, stride: int, mixed: str, pool_bn: bool = False):
        super().__init__()
        self.mixed = mixed
        self.stride = stride
        self.ops = nn.ModuleList([make_op(name, C, stride, affine=False, pool_bn=pool_bn) for name in PRIMITIVES])
        # identity candidates are not dropped by drop-path (as SNAS and DARTS)
        self.droppable = [not isinstance(op, nn.Identity) and not is_zero_op(op) for op in self.ops]
        self._cols, self._tails = _edge_plan(self.ops)

    def _tail_bns(self) -> List[nn.BatchNorm2d]:
        return [op[1] if kind == "pool" else op.bn for _, kind, op in self._tails]

    def forward(self, x: Tensor, weights: Tensor, drop_prob: float = 0.0) -> Tensor:
        """``x``: ``[B, C, H, W]``; ``weights``: ``[K]`` or ``[B, K]``. Returns ``[B, C, H', W']``."""
        if drop_prob > 0.0 and self.training:
            # drop-path of candidate k on example b == a per-example weight w[b, k] * mask / keep
            keep = 1.0 - drop_prob
            mask = torch.bernoulli(torch.full((x.shape[0], len(self.ops)), keep, device=x.device))
            mask[:, [k for k, d in enumerate(self.droppable) if not d]] = keep
            weights = weights.expand(x.shape[0], -1) * (mask / keep)
        if self.mixed == "eager":  # DARTS: every candidate runs, the zero op included
            return reference.mixed_op([op(x) for op in self.ops], weights)
        if self.mixed == "fused_sum":
            return mixed_op([None if is_zero_op(op) else op(x) for op in self.ops], weights)
        return self._forward_deep(x, weights)

    def _forward_deep(self, x: Tensor, weights: Tensor) -> Tensor:
        bns = self._tail_bns()
        if any(type(bn) is not nn.BatchNorm2d for bn in bns):
            # A BatchNorm replaced by another kind (SyncBatchNorm under --sync-bn: statistics of the global batch)
            # must run as the module it is: the edge falls back to the fused sum of the candidate modules.
            return mixed_op([None if is_zero_op(op) else op(x) for op in self.ops], weights)
        relu_x = None
        if any(kind == "relu" for _, kind, _ in self._tails):
            with torch.no_grad():  # one relu(x) for every convolution candidate, recomputed in their backward
                relu_x = F.relu(x)
        us = [lean_pre_bn(op, x, relu_x) if kind == "relu" else op[0](x) for _, kind, op in self._tails]
        batch_stats = True
        running_mean, running_var = [], []
        momentum, eps = 0.1, 1e-5
        if bns:
            bn = bns[0]
            batch_stats = bn.training or not bn.track_running_stats
            if bn.track_running_stats:
                running_mean = [b.running_mean for b in bns]
                running_var = [b.running_var for b in bns]
                if bn.training:
                    torch._foreach_add_([b.num_batches_tracked for b in bns], 1)
            momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked.item())
            eps = bn.eps
        cols = self._cols + [k for k, _, _ in self._tails]
        return mixed_edge(x, us, weights, cols, self.stride, running_mean=running_mean, running_var=running_var,
                          batch_stats=batch_stats, momentum=momentum, eps=eps)

    def forward_hard(self, x: Tensor, weights: Tensor, choice, drop_prob: float = 0.0) -> Optional[Tensor]:
        """Hard sampling: only the sampled candidate runs.

        ``choice``: the sampled column, an int (one sample for the batch) or B ints (one per example; the examples
        are grouped by candidate). ``weights``: ``[K]`` or ``[B, K]``, one-hot valued, whose sampled column carries
        the estimator's gradient (see :meth:`Supernet.sample`). Returns ``[B, C, H', W']``, or None when every
        example sampled the zero op.
        """
        B = x.shape[0]
        w = weights.expand(B, -1) if weights.dim() == 1 else weights
        if drop_prob > 0.0 and self.training:
            keep = 1.0 - drop_prob
            mask = torch.bernoulli(torch.full((B, len(self.ops)), keep, device=x.device))
            mask[:, [k for k, d in enumerate(self.droppable) if not d]] = keep
            w = w * (mask / keep)
        if isinstance(choice, int):
            y = self.forward_single(x, choice)
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
        """Candidate k alone (the derived child's edge); None for the zero op."""
        op = self.ops[k]
        return None if is_zero_op(op) else op(x)


class SearchCell(nn.Module):
    """A DARTS cell: two preprocessed inputs, ``steps`` nodes, each the sum of one edge from every earlier node."""

    def __init__(self, steps, multiplier, C_pp, C_p, C, reduction, reduction_prev, mixed, pool_bn=False):
        super().__init__()
        self.reduction = reduction
        self.C = C  # channels of every edge
        self.steps, self.multiplier = steps, multiplier
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_pp, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_pp, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                self.edges.append(MixedEdge(C, 2 if reduction and j < 2 else 1, mixed, pool_bn))

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, drop_prob: float = 0.0, choice=None) -> Tensor:
        """``weights``: ``[14, K]`` or ``[B, 14, K]``; returns ``[B, multiplier * C, H', W']``.

        ``choice``: None (soft: every candidate of every edge is mixed), or hard sampling's sampled column of each
        edge (14 ints, or 14 lists of B ints), when only the sampled candidates run."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            node = None
            for j, h in enumerate(states):
                e = offset + j
                w = weights[..., e, :]
                if choice is None:
                    out = self.edges[e](h, w, drop_prob)
                else:
                    out = self.edges[e].forward_hard(h, w, choice[e], drop_prob)
                if out is not None:
                    node = out if node is None else node + out
            if node is None:  # every input edge sampled `none`: the node is zero (the zero op gives its shape)
                node = self.edges[offset].ops[0](states[0])
            offset += len(states)
            states.append(node)
        return torch.cat(states[-self.multiplier :], dim=1)

    def forward_child(self, s0: Tensor, s1: Tensor, choice: Sequence[int]) -> Tensor:
        """The derived child: edge e runs only candidate ``choice[e]``; a node with no live input is zero."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            node = None
            for j, h in enumerate(states):
                out = self.edges[offset + j].forward_single(h, choice[offset + j])
                if out is not None:
                    node = out if node is None else node + out
            if node is None:  # every input edge is `none`: the node is zero (the zero op gives its shape)
                node = self.edges[offset].ops[0](states[0])
            offset += len(states)
            states.append(node)
        return torch.cat(states[-self.multiplier :], dim=1)


class Supernet(nn.Module):
    """The SNAS search network on the DARTS CIFAR space.

    Args:
        C: channels of the first cells (16 in the paper's search).
        num_classes: classifier outputs.
        layers: number of cells (8 in the paper's search); reduction cells at 1/3 and 2/3 of the depth.
        in_channels: image channels (3 for CIFAR-10, 1 for digits).
        steps, multiplier, stem_multiplier: DARTS's cell and stem settings.
        mixed: ``"fused"`` (:func:`snas_fast.mixed_edge`: pools, identity and every candidate's trailing BatchNorm
            inside the fused kernels, one shared ``relu(x)`` per edge), ``"fused_sum"`` (the candidate modules as
            they are, summed by :func:`snas_fast.mixed_op`) or ``"eager"`` (DARTS's sum, the baseline). All three
            compute the same function from the same parameters and buffers.
        pool_bn: DARTS's BatchNorm after each pool candidate (SNAS's official search uses bare pools).
        sampling: one Gumbel sample per step and cell type (``"step"``, SNAS's default), per cell (``"cell"``) or
            per example (``"example"``).
        estimator: the ``log_alpha`` gradient of hard sampling (``forward(..., hard=True)``): ``"st"`` (GDAS's
            straight-through: the sampled path's weight is ``1 - z_k.detach() + z_k``) or ``"dsnas"`` (DSNAS's
            score function: its weight is ``exp(log p_k - log p_k.detach())`` with ``p = softmax(log_alpha)``, so
            ``d loss / d log_alpha = (d loss / d weight_k) * grad log p_k``, the local reward times the score).

    ``forward(x, tau, hard=False, noise=None)`` takes ``x`` ``[B, in_channels, H, W]`` and returns logits
    ``[B, num_classes]``. ``hard=True``: every edge draws a one-hot sample and only the sampled candidate runs
    (per example with ``sampling="example"``, grouping the examples by candidate). ``noise``: a pair of Gumbel-noise tensors for (normal, reduce), each ``[14, 8]``
    (``"step"``), ``[cells of that type, 14, 8]`` (``"cell"``) or ``[B, 14, 8]`` (``"example"``).
    The sample used is kept in ``last_sample`` (normal, reduce) for the resource penalty.
    """

    def __init__(self, C: int, num_classes: int, layers: int, in_channels: int = 3, steps: int = 4,
                 multiplier: int = 4, stem_multiplier: int = 3, mixed: str = "fused", pool_bn: bool = False,
                 sampling: str = "step", estimator: str = "st"):
        super().__init__()
        for name, value, low in (("C", C, 1), ("num_classes", num_classes, 1), ("layers", layers, 1),
                                 ("in_channels", in_channels, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        if steps != 4:
            raise ValueError(f"steps: the 14-edge search space needs steps = 4, got {steps}")
        if mixed not in MIXED:
            raise ValueError(f"mixed: expected one of {MIXED}, got {mixed!r}")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling: expected one of {SAMPLING}, got {sampling!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}")
        self.estimator = estimator
        self.C, self.num_classes, self.layers, self.in_channels = C, num_classes, layers, in_channels
        self.mixed, self.pool_bn, self.sampling = mixed, pool_bn, sampling
        self.drop_path_prob = 0.0
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_pp, C_p, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = layers >= 3 and i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = SearchCell(steps, multiplier, C_pp, C_p, C_curr, reduction, reduction_prev, mixed, pool_bn)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)
        K = len(PRIMITIVES)
        self.log_alpha_normal = nn.Parameter(torch.normal(1.0, 0.01, (NUM_EDGES, K)))
        self.log_alpha_reduce = nn.Parameter(torch.normal(1.0, 0.01, (NUM_EDGES, K)))
        self.last_sample: Optional[Tuple[Tensor, Tensor]] = None

    # -- parameters ------------------------------------------------------------------------------------------
    def arch_parameters(self) -> List[nn.Parameter]:
        """``[log_alpha_normal, log_alpha_reduce]``, each ``[14, 8]``."""
        return [self.log_alpha_normal, self.log_alpha_reduce]

    def weight_parameters(self) -> List[nn.Parameter]:
        """Every parameter but the architecture's."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def cell_counts(self) -> Tuple[int, int]:
        """(normal cells, reduction cells)."""
        reduce = sum(1 for c in self.cells if c.reduction)
        return len(self.cells) - reduce, reduce

    # -- sampling --------------------------------------------------------------------------------------------
    def _noise_shape(self, cells_of_type: int, batch: int) -> Tuple[int, ...]:
        lead = {"step": (), "cell": (cells_of_type,), "example": (batch,)}[self.sampling]
        return lead + (NUM_EDGES, len(PRIMITIVES))

    def sample(self, tau: float, hard: bool = False, noise=None, batch: int = 1) -> Tuple[Tensor, Tensor]:
        """Z for (normal, reduce) cells: ``softmax((log_alpha + g) / tau)``; if hard, the one-hot ``argmax`` with the
        gradient of ``self.estimator``."""
        counts = self.cell_counts()
        out = []
        for i, (la, n) in enumerate(zip(self.arch_parameters(), counts)):
            shape = self._noise_shape(max(n, 1), batch)
            if noise is None:
                u = torch.rand(shape, device=la.device).clamp_(1e-10, 1.0 - 1e-7)
                g = -torch.log(-torch.log(u))
            else:
                g = noise[i]
                if tuple(g.shape) != shape:
                    raise ValueError(f"noise[{i}]: expected shape {shape} for sampling={self.sampling!r}, "
                                     f"got {tuple(g.shape)}")
            z = reference.gumbel_softmax(la, tau, g.to(la))
            if not hard:
                out.append(z)
            elif self.estimator == "st":
                out.append(reference.straight_through(z))
            else:  # DSNAS: one-hot values, the score function's gradient
                one_hot = F.one_hot(z.detach().argmax(-1), z.shape[-1]).to(z.dtype)
                log_p = F.log_softmax(la, dim=-1)
                out.append(one_hot * (log_p - log_p.detach()).exp())
        return out[0], out[1]

    def forward(self, x: Tensor, tau: float, hard: bool = False, noise=None) -> Tensor:
        z_normal, z_reduce = self.sample(tau, hard, noise, batch=x.shape[0])
        self.last_sample = (z_normal, z_reduce)
        # hard: the sampled columns, read once per step (one device sync), [..., 14] as nested lists
        choices = [z.detach().argmax(-1).tolist() for z in (z_normal, z_reduce)] if hard else None
        s0 = s1 = self.stem(x)
        seen = [0, 0]
        for cell in self.cells:
            kind = int(cell.reduction)
            z = (z_reduce if cell.reduction else z_normal)
            choice = choices[kind] if hard else None
            if self.sampling == "cell":
                z = z[seen[kind]]
                choice = choice[seen[kind]] if hard else None
            elif self.sampling == "example" and hard:
                choice = [list(col) for col in zip(*choice)]  # [B][14] -> [14][B]
            # "example": z is [B, 14, K] and edge e mixes with the per-example rows z[:, e]
            seen[kind] += 1
            s0, s1 = s1, cell(s0, s1, z, self.drop_path_prob, choice)
        return self.classifier(self.global_pooling(s1).flatten(1))

    def forward_child(self, x: Tensor, genotype_choice: Optional[Tuple[Sequence[int], Sequence[int]]] = None) -> Tensor:
        """The derived child with the supernet's weights: every edge runs only its argmax candidate."""
        if genotype_choice is None:
            genotype_choice = tuple(la.argmax(-1).tolist() for la in self.arch_parameters())
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell.forward_child(s0, s1, genotype_choice[int(cell.reduction)])
        return self.classifier(self.global_pooling(s1).flatten(1))

    # -- derivation ------------------------------------------------------------------------------------------
    def alphas(self) -> Tuple[Tensor, Tensor]:
        """``softmax(log_alpha)`` of (normal, reduce), each ``[14, 8]``, detached."""
        return tuple(F.softmax(la.detach(), dim=-1) for la in self.arch_parameters())

    def genotype(self, rule: str = "edge_all") -> Genotype:
        """The derived child: ``"edge_all"`` (argmax on every edge, SNAS) or ``"top2"`` (DARTS)."""
        normal, reduce = self.alphas()
        return derive(normal, reduce, rule=rule)
