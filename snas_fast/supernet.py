"""The SNAS supernet: the DARTS CIFAR search space with every edge mixed by a Gumbel-softmax sample.

``Supernet(mixed="fused")`` mixes each edge with :func:`snas_fast.mixed_op` (one kernel each way);
``mixed="eager"`` builds the very same modules (same parameters, same initialisation under the same seed) and
mixes them the way DARTS does, ``sum(w * op(x))`` over all eight candidates, so the two can be compared number
for number and benchmarked fairly.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import reference
from .functional import mixed_op
from .genotypes import Genotype, derive
from .modules import is_zero_op
from .search_space import PRIMITIVES, FactorizedReduce, ReLUConvBN, make_op

MIXED = ("fused", "eager")
SAMPLING = ("step", "cell", "example")
NUM_EDGES = 14


class MixedEdge(nn.Module):
    """One edge: the eight candidate operations, mixed by a weight vector ``[K]`` or ``[B, K]``."""

    def __init__(self, C: int, stride: int, mixed: str, pool_bn: bool = False):
        super().__init__()
        self.mixed = mixed
        self.ops = nn.ModuleList([make_op(name, C, stride, affine=False, pool_bn=pool_bn) for name in PRIMITIVES])
        # identity candidates are not dropped by drop-path (as SNAS and DARTS)
        self.droppable = [not isinstance(op, nn.Identity) and not is_zero_op(op) for op in self.ops]

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
        return mixed_op([None if is_zero_op(op) else op(x) for op in self.ops], weights)

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

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, drop_prob: float = 0.0) -> Tensor:
        """``weights``: ``[14, K]`` or ``[B, 14, K]``; returns ``[B, multiplier * C, H', W']``."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            node = None
            for j, h in enumerate(states):
                w = weights[..., offset + j, :]
                out = self.edges[offset + j](h, w, drop_prob)
                node = out if node is None else node + out
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
        mixed: ``"fused"`` (the fused kernels) or ``"eager"`` (DARTS's sum, the baseline).
        pool_bn: DARTS's BatchNorm after each pool candidate (SNAS's official search uses bare pools).
        sampling: one Gumbel sample per step and cell type (``"step"``, SNAS's default), per cell (``"cell"``) or
            per example (``"example"``).

    ``forward(x, tau, hard=False, noise=None)`` takes ``x`` ``[B, in_channels, H, W]`` and returns logits
    ``[B, num_classes]``. ``noise``: a pair of Gumbel-noise tensors for (normal, reduce), each ``[14, 8]``
    (``"step"``), ``[cells of that type, 14, 8]`` (``"cell"``) or ``[B, 14, 8]`` (``"example"``).
    The sample used is kept in ``last_sample`` (normal, reduce) for the resource penalty.
    """

    def __init__(self, C: int, num_classes: int, layers: int, in_channels: int = 3, steps: int = 4,
                 multiplier: int = 4, stem_multiplier: int = 3, mixed: str = "fused", pool_bn: bool = False,
                 sampling: str = "step"):
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
        """Z for (normal, reduce) cells: ``softmax((log_alpha + g) / tau)``, straight-through one-hot if hard."""
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
            out.append(reference.straight_through(z) if hard else z)
        return out[0], out[1]

    def forward(self, x: Tensor, tau: float, hard: bool = False, noise=None) -> Tensor:
        z_normal, z_reduce = self.sample(tau, hard, noise, batch=x.shape[0])
        self.last_sample = (z_normal, z_reduce)
        s0 = s1 = self.stem(x)
        seen = [0, 0]
        for cell in self.cells:
            kind = int(cell.reduction)
            z = (z_reduce if cell.reduction else z_normal)
            if self.sampling == "cell":
                z = z[seen[kind]]
            # "example": z is [B, 14, K] and edge e mixes with the per-example rows z[:, e]
            seen[kind] += 1
            s0, s1 = s1, cell(s0, s1, z, self.drop_path_prob)
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
