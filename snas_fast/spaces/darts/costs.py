"""SNAS's resource constraint: the cost of every candidate on every edge, computed from shapes alone.

Every candidate's :class:`~snas_fast.spaces.Cost` (params, FLOPs, MAC per example) comes from its primitive
(:attr:`snas_fast.spaces.Primitive.cost`; the DARTS conventions are in :mod:`snas_fast.spaces.darts.space`), or is
measured on the built module (:func:`~snas_fast.spaces.count_module`) for a primitive without a formula. Here: the
tables of a cell and of a network, and SNAS's penalty on them.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..._checks import check_int as _check_int
from ..base import Cost, count_module
from .space import EDGES, DartsSpace, check_primitive, reduction_cells, space_of

__all__ = [
    "Cost",
    "LINEAR_WEIGHTS",
    "LOG_WEIGHTS",
    "cell_costs",
    "count_module",
    "edge_costs",
    "expected_cost",
    "genotype_cost",
    "network_costs",
    "op_costs",
    "resource_penalty",
]

#: Default weights of (params, flops, mac) in the "linear" penalty: SNAS's released search code,
#: ``(size * 2 + flops / 4000 + mac / 100) * 0.43``. The scales bring the three terms of one edge of the
#: CIFAR search network (C = 16 .. 64) to the same order of magnitude (hundreds to a few thousands).
LINEAR_WEIGHTS: Tuple[float, float, float] = (2 * 0.43, 0.43 / 4000, 0.43 / 100)

#: Default weights of (log params, log flops, log mac) in the "log" penalty: their mean (snas.md).
LOG_WEIGHTS: Tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)

_FORMS = ("log", "linear")


def op_costs(name: str, C: int, H: int, W: int, stride: int, pool_bn: bool = False, affine: bool = False,
             space: Optional[DartsSpace] = None) -> Cost:
    """Cost of candidate ``name`` of ``space`` (default: DARTS's) on an edge with ``C`` channels in and out and an
    ``H x W`` input, at ``stride`` (1 or 2), per example: its primitive's ``cost`` (the conventions are in
    :mod:`snas_fast.spaces.darts.space`), or, for a primitive without one, measured on the built module. ``none``
    costs 0; ``skip_connect`` at stride 2 is FactorizedReduce. ``affine``: count the BNs' scale and shift (the
    derived child's setting); ``pool_bn`` adds only affine-free BNs and changes nothing.
    """
    space = space_of(space)
    check_primitive(name, space)
    _check_int("C", C, 1)
    _check_int("H", H, 1)
    _check_int("W", W, 1)
    if isinstance(stride, bool) or stride not in (1, 2):
        raise ValueError(f"stride: expected 1 or 2, got {stride!r}")
    return space.primitive(name).costs(C, H, W, stride, bool(affine))


def edge_costs(C: int, H: int, W: int, stride: int, pool_bn: bool = False, affine: bool = False,
               dtype: torch.dtype = torch.float64, space: Optional[DartsSpace] = None) -> Tensor:
    """``[K, 3]``: :func:`op_costs` of every candidate of ``space`` (rows in column order, 8 for DARTS's; columns
    params, flops, mac). float64 by default, which holds every count exactly."""
    space = space_of(space)
    return torch.tensor([tuple(op_costs(p, C, H, W, stride, pool_bn, affine, space)) for p in space.op_names],
                        dtype=dtype)


def cell_costs(C: int, H: int, W: int, reduction: bool, pool_bn: bool = False, affine: bool = False,
               dtype: torch.dtype = torch.float64, space: Optional[DartsSpace] = None) -> Tensor:
    """``[14, K, 3]``: the candidates' costs on every edge of a cell with ``C`` channels whose inputs are
    ``H x W`` (edge order :data:`~snas_fast.search_space.EDGES`, then PRIMITIVES, then params/flops/mac).

    In a reduction cell the edges from the two cell inputs have stride 2 and see ``H x W``; the edges from
    intermediate nodes have stride 1 and see those nodes' ``ceil(H / 2) x ceil(W / 2)``. In a normal cell every
    edge has stride 1 and sees ``H x W``.
    """
    _check_int("H", H, 1)
    _check_int("W", W, 1)
    reduction = bool(reduction)
    inner = ((H + 1) // 2, (W + 1) // 2) if reduction else (H, W)
    per_input = {}
    for j in sorted({j for _, j in EDGES}):
        if j < 2:
            per_input[j] = edge_costs(C, H, W, 2 if reduction else 1, pool_bn, affine, dtype, space)
        else:
            per_input[j] = edge_costs(C, inner[0], inner[1], 1, pool_bn, affine, dtype, space)
    return torch.stack([per_input[j] for _, j in EDGES])


def network_costs(C: int = 16, layers: int = 8, H: int = 32, W: int = 32, pool_bn: bool = False,
                  affine: bool = False, dtype: torch.dtype = torch.float64,
                  space: Optional[DartsSpace] = None) -> Tuple[Tensor, Tensor]:
    """Per-cell costs of the DARTS/SNAS search network (snas.md): ``layers`` cells, reduction cells at
    ``layers // 3`` and ``2 * layers // 3`` (channels doubled, resolution halved after them), cell ``C`` channels
    at first, input ``H x W`` (the stem keeps the resolution).

    Returns ``(costs_normal [n_normal, 14, 8, 3], costs_reduce [n_reduce, 14, 8, 3])`` in network order, the
    stacked form :func:`resource_penalty` takes. Only the edges are costed: the stem, the cells' preprocessing and
    the classifier do not depend on the architecture.
    """
    _check_int("C", C, 1)
    _check_int("layers", layers, 3)
    c, h, w = C, H, W
    normal, reduce = [], []
    for i in range(layers):
        if i in reduction_cells(layers):
            c *= 2
            reduce.append(cell_costs(c, h, w, True, pool_bn, affine, dtype, space))
            h, w = (h + 1) // 2, (w + 1) // 2
        else:
            normal.append(cell_costs(c, h, w, False, pool_bn, affine, dtype, space))
    return torch.stack(normal), torch.stack(reduce)


def _check_tensor(name: str, t) -> Tensor:
    if not torch.is_tensor(t):
        raise TypeError(f"{name}: expected a tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    return t


def expected_cost(Z: Tensor, costs: Tensor) -> Tensor:
    """SNAS's expected cost ``sum_e sum_k Z[e, k] * costs[e, k]`` of a sample ``Z [E, K]`` (e.g. ``[14, 8]``).

    ``costs``: ``[E, K]`` gives a scalar; ``[E, K, M]`` (e.g. the ``[14, 8, 3]`` of :func:`cell_costs`) gives
    ``[M]``. Differentiable in ``Z``; ``costs`` is a constant (detached). Computed in the promoted dtype of the two
    and returned in ``Z``'s dtype, on ``Z``'s device.
    """
    _check_tensor("Z", Z)
    _check_tensor("costs", costs)
    if Z.dim() != 2:
        raise ValueError(f"Z: expected shape [E, K] (edges x candidates), got {list(Z.shape)}")
    if costs.dim() not in (2, 3) or tuple(costs.shape[:2]) != tuple(Z.shape):
        raise ValueError(f"costs: expected shape {list(Z.shape)} or {list(Z.shape) + ['M']} to match Z, "
                         f"got {list(costs.shape)}")
    dtype = torch.promote_types(Z.dtype, costs.dtype)
    c = costs.detach().to(Z.device, dtype)
    z = Z.to(dtype)
    out = (z.unsqueeze(-1) * c).sum((0, 1)) if c.dim() == 3 else (z * c).sum()
    return out.to(Z.dtype)


def genotype_cost(genotype, costs_normal: Tensor, costs_reduce: Tensor,
                  space: Optional[DartsSpace] = None) -> Tensor:
    """The cost of the child ``genotype`` in the network whose per-cell tables are ``costs_normal [n, 14, K, ...]``
    and ``costs_reduce [m, 14, K, ...]`` (:func:`network_costs`, or a latency table's ``[n, 14, K]``): every cell's
    one-hot sample priced by :func:`expected_cost` and summed over the cells. ``[M]`` for tables with a last axis
    of M costs, a scalar for ``[n, 14, K]``; float64."""
    z = torch.stack(space_of(space).arch_weights(genotype)).to(torch.float64)  # [2, 14, K]
    total = 0
    for t, tables in enumerate((costs_normal, costs_reduce)):
        for table in tables:
            total = total + expected_cost(z[t], table.to(torch.float64))
    return torch.as_tensor(total, dtype=torch.float64)


def _check_weights(name: str, weights, n: int) -> Tuple[float, ...]:
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != n:
        raise ValueError(f"{name}: expected {n} non-negative numbers, got {weights!r}")
    out = []
    for v in weights:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name}: expected {n} finite non-negative numbers, got {list(weights)!r}")
        out.append(float(v))
    return tuple(out)


def _per_type(kind: str, Z: Tensor, costs: Tensor, count: Optional[int]) -> Optional[int]:
    """Check one cell type's inputs; return the number of cells they stack (None when neither is stacked)."""
    zname, cname, num = f"Z_{kind}", f"costs_{kind}", f"num_{kind}"
    _check_tensor(zname, Z)
    _check_tensor(cname, costs)
    if costs.dim() not in (3, 4) or costs.shape[-1] != 3:
        raise ValueError(f"{cname}: expected shape [E, K, 3] or [n_cells, E, K, 3] (params, flops, mac), "
                         f"got {list(costs.shape)}")
    if Z.dim() not in (2, 3) or tuple(Z.shape[-2:]) != tuple(costs.shape[-3:-1]):
        raise ValueError(f"{zname}: expected shape {list(costs.shape[-3:-1])} or [n_cells] + that, to match "
                         f"{cname}, got {list(Z.shape)}")
    z_cells = Z.shape[0] if Z.dim() == 3 else None
    c_cells = costs.shape[0] if costs.dim() == 4 else None
    if z_cells is not None and c_cells is not None and z_cells != c_cells:
        raise ValueError(f"{zname}: one sample per cell needs as many samples as {cname} has cells "
                         f"({c_cells}), got {z_cells}")
    n = z_cells if z_cells is not None else c_cells
    if n == 0:
        raise ValueError(f"{cname}: expected at least one cell, got 0")
    if count is not None:
        _check_int(num, count, 1)
        if n is not None and count != n:
            raise ValueError(f"{num}: {zname} / {cname} hold {n} cells, got {num}={count}")
    return n


def resource_penalty(Z_normal: Tensor, Z_reduce: Tensor, costs_normal: Tensor, costs_reduce: Tensor,
                     form: str = "log", weights: Optional[Sequence[float]] = None, *,
                     num_normal: Optional[int] = None, num_reduce: Optional[int] = None,
                     cell_weights: Sequence[float] = (1.0, 1.0)) -> Tensor:
    """SNAS's locally decomposable resource penalty (snas.md), a scalar to add to the loss times lambda.

    For one cell with sample ``Z [14, 8]`` and costs ``c [14, 8, 3]``, each edge's expected cost is
    ``E[e, m] = sum_k Z[e, k] * c[e, k, m]`` (m: params, flops, mac), and the cell's term is

    - ``form="linear"``: ``sum_e sum_m w_m * E[e, m]``, default ``w =`` :data:`LINEAR_WEIGHTS` (SNAS's scales);
    - ``form="log"``: ``sum_e sum_m w_m * log(max(E[e, m], 1))``, default ``w =`` :data:`LOG_WEIGHTS`, i.e.
      ``(log size + log flops + log mac) / 3`` per edge with values below 1 clamped to 1 (the clamp passes no
      gradient), as in SNAS's official runs (lambda = 1.5e-3).

    Per cell type (snas.md; SNAS's code divides by 6 and 2): the terms of the cells of one type are summed and
    divided by their number, and ``penalty = cell_weights[0] * normal + cell_weights[1] * reduce``. Cells of one
    type differ in channels and resolution, so ``costs_*`` is ``[n, 14, 8, 3]`` (one slice per cell of that type,
    e.g. from :func:`network_costs`) or ``[14, 8, 3]`` (one cell's costs standing for all of them); ``Z_*`` is
    ``[14, 8]`` (one sample shared by the type, snas.md's default) or ``[n, 14, 8]`` (one sample per cell).
    ``num_normal`` / ``num_reduce``, the numbers of cells of each type, are read from the stacked inputs and checked
    against them when given; when neither input of a type is stacked, its n equal terms average to one term and
    the count does not change the value.

    The gradient reaches only ``Z_normal`` and ``Z_reduce`` (the costs are detached). The result has
    ``Z_normal``'s dtype and device; it is computed in the promoted dtype (float64 with the default costs).
    """
    if form not in _FORMS:
        raise ValueError(f"form: expected one of {list(_FORMS)}, got {form!r}")
    if weights is None:
        weights = LOG_WEIGHTS if form == "log" else LINEAR_WEIGHTS
    w = _check_weights("weights", weights, 3)
    cw = _check_weights("cell_weights", cell_weights, 2)
    total = None
    for kind, Z, costs, count, type_weight in (("normal", Z_normal, costs_normal, num_normal, cw[0]),
                                               ("reduce", Z_reduce, costs_reduce, num_reduce, cw[1])):
        _per_type(kind, Z, costs, count)
        dtype = torch.promote_types(Z.dtype, costs.dtype)
        c = costs.detach().to(Z.device, dtype)
        E = (Z.to(dtype).unsqueeze(-1) * c).sum(-2)  # [(n,) 14, 3]: expected params, flops, mac of each edge
        if form == "log":
            E = torch.log(torch.clamp(E, min=1.0))
        cell_terms = (E.sum(-2) * torch.tensor(w, dtype=dtype, device=Z.device)).sum(-1)  # [(n,)]
        term = cell_terms.mean() if cell_terms.dim() == 1 else cell_terms  # sum over the type's cells / n
        total = type_weight * term if total is None else total + type_weight * term
    return total.to(Z_normal.dtype)


def supernet_costs(model, image_size) -> Tuple[Tensor, Tensor]:
    """Per cell type, the cost tables of a :class:`~snas_fast.spaces.darts.supernet.Supernet`'s cells stacked,
    ``[n, 14, K, 3]`` (params, FLOPs, MAC of every candidate of every edge, from the shapes alone:
    :func:`network_costs`; the search's BatchNorms, affine-free), on images of ``image_size`` (the side of a square,
    or ``(H, W)``). A supernet of fewer than 3 cells has no reduction cell; that type then costs nothing (zeros
    ``[14, K, 3]``)."""
    H, W = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if model.layers >= 3:
        return network_costs(model.C, model.layers, H, W, pool_bn=model.pool_bn, space=model.space)
    normal = cell_costs(model.C, H, W, False, pool_bn=model.pool_bn, space=model.space)
    return normal.expand(model.layers, -1, -1, -1), torch.zeros_like(normal)
