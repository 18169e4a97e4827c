"""SNAS's resource constraint: the cost of every candidate on every edge, computed from shapes alone.

Conventions (per example, i.e. batch size 1; every count is an exact integer):

- ``params``: learnable parameters of the module :func:`~snas_fast.search_space.make_op` builds: conv weights
  (the convs have no bias), plus ``2 * C`` per BN when ``affine=True``. Affine-free BNs (the search setting, and
  the BN ``pool_bn`` adds) have none.
- ``flops``: multiply-adds of the convs, ``C_out * H_out * W_out * (C_in / groups) * k * k`` per conv. Pools,
  identity, ``none``, ReLU, BN, padding and concat count 0. (SNAS's released code counts ``9 * C * H_out * W_out``
  for a pool; here a pool's FLOPs are 0, so under the FLOPs term a pool costs what ``none`` costs.)
- ``mac`` (memory access cost, ShuffleNet V2 / SNAS): for every conv and pool, the elements of the tensor it
  reads + the elements it writes + its weights; an identity (``skip_connect`` at stride 1) counts one read and one
  write of its input (``2 * C * H * W``), as SNAS does. ReLU and BN are taken as fused into the neighbouring layer
  (0), as are FactorizedReduce's concat and odd-size padding. The second conv of FactorizedReduce reads the
  shifted map ``x[:, :, 1:, 1:]`` (padded back to an even size when H or W is odd), so it reads
  ``C * (H - 1 + H % 2) * (W - 1 + W % 2)`` elements.

These are exactly what :func:`count_module` measures on the built module with hooks; the tests hold them equal
for every primitive at both strides and for whole derived cells.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .search_space import EDGES, PRIMITIVES, Identity, check_primitive

__all__ = [
    "Cost",
    "LINEAR_WEIGHTS",
    "LOG_WEIGHTS",
    "cell_costs",
    "count_module",
    "edge_costs",
    "expected_cost",
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


@dataclass(frozen=True)
class Cost:
    """``params``, ``flops`` (conv multiply-adds) and ``mac`` (elements read + written) of one module, per example.

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


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def _out(n: int, k: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output length of a conv or pool along one axis (PyTorch's formula, floor mode)."""
    return (n + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _conv(c_in: int, c_out: int, k: int, stride: int, pad: int, dilation: int, groups: int, h: int, w: int):
    """Cost and output size of one bias-free conv on a ``[c_in, h, w]`` input."""
    ho, wo = _out(h, k, stride, pad, dilation), _out(w, k, stride, pad, dilation)
    weights = c_out * (c_in // groups) * k * k
    return Cost(weights, weights * ho * wo, c_in * h * w + c_out * ho * wo + weights), ho, wo


def _sep_conv(C: int, k: int, stride: int, h: int, w: int, bn: int) -> Cost:
    pad = (k - 1) // 2
    dw1, ho, wo = _conv(C, C, k, stride, pad, 1, C, h, w)
    pw1, _, _ = _conv(C, C, 1, 1, 0, 1, 1, ho, wo)
    dw2, _, _ = _conv(C, C, k, 1, pad, 1, C, ho, wo)
    pw2, _, _ = _conv(C, C, 1, 1, 0, 1, 1, ho, wo)
    return dw1 + pw1 + dw2 + pw2 + Cost(params=2 * bn)


def _dil_conv(C: int, k: int, stride: int, h: int, w: int, bn: int) -> Cost:
    pad = k - 1  # dilation 2: padding 2 for 3x3, 4 for 5x5 (DARTS)
    dw, ho, wo = _conv(C, C, k, stride, pad, 2, C, h, w)
    pw, _, _ = _conv(C, C, 1, 1, 0, 1, 1, ho, wo)
    return dw + pw + Cost(params=bn)


def _factorized_reduce(C: int, h: int, w: int, bn: int) -> Cost:
    conv1, _, _ = _conv(C, C // 2, 1, 2, 0, 1, 1, h, w)
    conv2, _, _ = _conv(C, C // 2, 1, 2, 0, 1, 1, h - 1 + h % 2, w - 1 + w % 2)
    return conv1 + conv2 + Cost(params=bn)


def op_costs(name: str, C: int, H: int, W: int, stride: int, pool_bn: bool = False, affine: bool = False) -> Cost:
    """Cost of candidate ``name`` on an edge with ``C`` channels in and out and an ``H x W`` input, at ``stride``
    (1 or 2), per example; the conventions are in the module docstring. ``none`` costs 0; ``skip_connect`` at
    stride 2 is FactorizedReduce. ``affine``: count the BNs' scale and shift (the derived child's setting);
    ``pool_bn`` adds only affine-free BNs and changes nothing.
    """
    check_primitive(name)
    _check_int("C", C, 1)
    _check_int("H", H, 1)
    _check_int("W", W, 1)
    if isinstance(stride, bool) or stride not in (1, 2):
        raise ValueError(f"stride: expected 1 or 2, got {stride!r}")
    bn = 2 * C if affine else 0  # learnable parameters of one BatchNorm2d(C)
    if name == "none":
        return Cost()
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        ho, wo = _out(H, 3, stride, 1), _out(W, 3, stride, 1)
        return Cost(0, 0, C * H * W + C * ho * wo)
    if name == "skip_connect":
        if stride == 1:
            return Cost(0, 0, 2 * C * H * W)
        if C % 2 != 0:
            raise ValueError(f"C: skip_connect at stride 2 is FactorizedReduce, which needs an even C, got {C}")
        return _factorized_reduce(C, H, W, bn)
    k = int(name[-1])  # sep_conv_3x3 -> 3
    if name.startswith("sep_conv"):
        return _sep_conv(C, k, stride, H, W, bn)
    return _dil_conv(C, k, stride, H, W, bn)


def edge_costs(C: int, H: int, W: int, stride: int, pool_bn: bool = False, affine: bool = False,
               dtype: torch.dtype = torch.float64) -> Tensor:
    """``[8, 3]``: :func:`op_costs` of every candidate (rows in PRIMITIVES order; columns params, flops, mac).

    float64 by default, which holds every count exactly."""
    return torch.tensor([tuple(op_costs(p, C, H, W, stride, pool_bn, affine)) for p in PRIMITIVES], dtype=dtype)


def cell_costs(C: int, H: int, W: int, reduction: bool, pool_bn: bool = False, affine: bool = False,
               dtype: torch.dtype = torch.float64) -> Tensor:
    """``[14, 8, 3]``: the candidates' costs on every edge of a cell with ``C`` channels whose inputs are
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
            per_input[j] = edge_costs(C, H, W, 2 if reduction else 1, pool_bn, affine, dtype)
        else:
            per_input[j] = edge_costs(C, inner[0], inner[1], 1, pool_bn, affine, dtype)
    return torch.stack([per_input[j] for _, j in EDGES])


def network_costs(C: int = 16, layers: int = 8, H: int = 32, W: int = 32, pool_bn: bool = False,
                  affine: bool = False, dtype: torch.dtype = torch.float64) -> Tuple[Tensor, Tensor]:
    """Per-cell costs of the DARTS/SNAS search network (snas.md): ``layers`` cells, reduction cells at
    ``layers // 3`` and ``2 * layers // 3`` (channels doubled, resolution halved after them), cell ``C`` channels
    at first, input ``H x W`` (the stem keeps the resolution).

    Returns ``(costs_normal [n_normal, 14, 8, 3], costs_reduce [n_reduce, 14, 8, 3])`` in network order, the
    stacked form :func:`resource_penalty` takes. Only the edges are costed: the stem, the cells' preprocessing and
    the classifier do not depend on the architecture.
    """
    _check_int("C", C, 1)
    _check_int("layers", layers, 3)
    reduce_at = (layers // 3, 2 * layers // 3)
    c, h, w = C, H, W
    normal, reduce = [], []
    for i in range(layers):
        if i in reduce_at:
            c *= 2
            reduce.append(cell_costs(c, h, w, True, pool_bn, affine, dtype))
            h, w = (h + 1) // 2, (w + 1) // 2
        else:
            normal.append(cell_costs(c, h, w, False, pool_bn, affine, dtype))
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


def count_module(module: nn.Module, input_shape: Sequence[int]) -> Cost:
    """Measure ``module``'s cost directly, with forward hooks, on a zero input of ``input_shape`` (``[C, H, W]``
    or ``[N, C, H, W]``; counts are per example). For tests and checks only: it runs a forward pass.

    ``params``: parameters with ``requires_grad``. ``flops``: multiply-adds of every ``nn.Conv2d`` and
    ``nn.Linear``. ``mac``: input + output elements + weights of every conv, linear and pool, and input + output of
    every identity (:class:`~snas_fast.search_space.Identity`, ``nn.Identity``); nothing for other modules (the
    conventions of :func:`op_costs`). The module runs in eval mode under ``no_grad``; its mode is restored.
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
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, Identity, nn.Identity)):
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
