"""The resource constraint: op costs from shapes against hand counts and direct (hooked) counts of the built
modules, for single candidates and for whole derived cells; the expectation and the penalty, with gradients."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from snas_fast.spaces.darts import genotypes as G
from snas_fast.spaces.darts.costs import (LINEAR_WEIGHTS, Cost, cell_costs, count_module, edge_costs, expected_cost,
                             network_costs, op_costs, resource_penalty)
from snas_fast.spaces.darts.space import EDGES, PRIMITIVES, make_op

SHAPES = [(16, 32, 32), (8, 7, 7), (4, 9, 6), (2, 1, 1)]  # (C, H, W): CIFAR, odd, mixed parity, the smallest


# -- hand counts ---------------------------------------------------------------------------------------------------

def test_sep_conv_3x3_by_hand():
    # Per half: depthwise 3x3 (16 * 9 = 144 weights) + pointwise 16x16 (256): 400; two halves: 800.
    assert op_costs("sep_conv_3x3", 16, 32, 32, 1) == Cost(800, 800 * 32 * 32, 32 * 32 * (7 * 16 + 16) + 800)
    assert op_costs("sep_conv_3x3", 16, 32, 32, 1).flops == 819_200
    # stride 2: every conv works at 16x16; the first depthwise conv reads the 32x32 input.
    assert op_costs("sep_conv_3x3", 16, 32, 32, 2) == Cost(800, 204_800, 16 * 32 * 32 + 7 * 16 * 16 * 16 + 800)
    assert op_costs("sep_conv_3x3", 16, 32, 32, 1, affine=True).params == 800 + 2 * 2 * 16


def test_dil_conv_5x5_by_hand():
    # depthwise 5x5 (16 * 25 = 400) + pointwise 16x16 (256) = 656 weights.
    assert op_costs("dil_conv_5x5", 16, 32, 32, 1) == Cost(656, 656 * 1024, 1024 * (3 * 16 + 16) + 656)
    assert op_costs("dil_conv_5x5", 16, 32, 32, 1).flops == 671_744
    assert op_costs("dil_conv_5x5", 16, 32, 32, 2) == Cost(656, 167_936, 16 * 1024 + 3 * 16 * 256 + 656)
    assert op_costs("dil_conv_5x5", 16, 32, 32, 2, affine=True).params == 656 + 2 * 16


def test_param_free_candidates():
    assert op_costs("none", 16, 32, 32, 2) == Cost(0, 0, 0)
    assert op_costs("skip_connect", 16, 32, 32, 1) == Cost(0, 0, 2 * 16 * 1024)
    assert op_costs("max_pool_3x3", 16, 32, 32, 1, pool_bn=True) == Cost(0, 0, 2 * 16 * 1024)
    assert op_costs("avg_pool_3x3", 16, 32, 32, 2, affine=True) == Cost(0, 0, 16 * 1024 + 16 * 256)
    # FactorizedReduce: two 1x1 convs 16 -> 8 at stride 2; the second reads the 31x31 shifted map.
    fr = op_costs("skip_connect", 16, 32, 32, 2)
    assert fr == Cost(256, 256 * 256, 16 * 1024 + 8 * 256 + 128 + 16 * 31 * 31 + 8 * 256 + 128)


@pytest.mark.parametrize("C,H,W", [(16, 32, 32), (32, 16, 16), (12, 8, 6)])
@pytest.mark.parametrize("stride", [1, 2])
def test_agrees_with_snas_released_formulas_on_even_sizes(C, H, W, stride):
    # SNAS's operations.py (y = H_out, square maps): size, flops = size * y^2, and MAC per op. FactorizedReduce is
    # left out: SNAS counts each of its convs as reading the whole input; here the second reads the shifted map.
    y2 = (H // stride) * (W // stride)
    snas = {
        "sep_conv_3x3": (2 * C * 9 + 2 * C * C, (7 * C + C) if stride == 1 else (10 * C + C)),
        "sep_conv_5x5": (2 * C * 25 + 2 * C * C, (7 * C + C) if stride == 1 else (10 * C + C)),
        "dil_conv_3x3": (C * 9 + C * C, (3 * C + C) if stride == 1 else (6 * C + C)),
        "dil_conv_5x5": (C * 25 + C * C, (3 * C + C) if stride == 1 else (6 * C + C)),
    }
    for name, (size, per_pixel) in snas.items():
        assert op_costs(name, C, H, W, stride) == Cost(size, size * y2, y2 * per_pixel + size), name
    for pool in ("max_pool_3x3", "avg_pool_3x3"):
        assert op_costs(pool, C, H, W, stride).mac == (2 if stride == 1 else 5) * y2 * C
    if stride == 1:
        assert op_costs("skip_connect", C, H, W, 1).mac == 2 * C * y2


# -- op_costs against a direct count of the built module -----------------------------------------------------------

@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"C{c}-{h}x{w}" for c, h, w in SHAPES])
@pytest.mark.parametrize("affine,pool_bn", [(False, False), (True, True)])
def test_op_costs_equal_a_direct_count(name, stride, shape, affine, pool_bn):
    C, H, W = shape
    module = make_op(name, C, stride, affine=affine, pool_bn=pool_bn)
    assert op_costs(name, C, H, W, stride, pool_bn=pool_bn, affine=affine) == count_module(module, shape)


def test_edge_costs_rows_follow_primitives():
    t = edge_costs(8, 7, 7, 2)
    assert t.shape == (8, 3) and t.dtype == torch.float64
    for k, name in enumerate(PRIMITIVES):
        assert t[k].tolist() == list(op_costs(name, 8, 7, 7, 2))
    assert t[0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("H,W", [(8, 8), (7, 9)])
def test_cell_costs_strides_and_sizes(H, W):
    normal = cell_costs(6, H, W, reduction=False)
    assert normal.shape == (14, 8, 3)
    assert torch.equal(normal, edge_costs(6, H, W, 1).expand(14, 8, 3))
    red = cell_costs(6, H, W, reduction=True)
    for e, (_, j) in enumerate(EDGES):
        expected = edge_costs(6, H, W, 2) if j < 2 else edge_costs(6, (H + 1) // 2, (W + 1) // 2, 1)
        assert torch.equal(red[e], expected), f"edge {e} (input {j})"


class ChildCell(nn.Module):
    """A derived cell built from a genotype's live edges (the test's child network), fed one input as both s0 and
    s1 (the cell's preprocessing is architecture-independent and not costed)."""

    def __init__(self, cell, C, reduction, affine, pool_bn):
        super().__init__()
        self.reduction = reduction
        self.edges = nn.ModuleList()
        self.inputs = []
        for group in G.live_edges(cell):
            ops = nn.ModuleList()
            for op, j in group:
                ops.append(make_op(op, C, 2 if reduction and j < 2 else 1, affine=affine, pool_bn=pool_bn))
            self.edges.append(ops)
            self.inputs.append([j for _, j in group])

    def forward(self, x):
        states = [x, x]
        B, C, H, W = x.shape
        shape = (B, C, (H + 1) // 2, (W + 1) // 2) if self.reduction else tuple(x.shape)
        for ops, inputs in zip(self.edges, self.inputs):
            s = x.new_zeros(shape)  # a node with no live input outputs zeros
            for op, j in zip(ops, inputs):
                s = s + op(states[j])
            states.append(s)
        return torch.cat(states[2:], dim=1)


@pytest.mark.parametrize("name", G.available())
@pytest.mark.parametrize("reduction", [False, True], ids=["normal", "reduce"])
@pytest.mark.parametrize("C,H,W,affine,pool_bn", [(8, 8, 8, True, False), (4, 7, 5, False, True)])
def test_cost_of_a_derived_cell_equals_a_direct_count(name, reduction, C, H, W, affine, pool_bn):
    g = G.load(name)
    cell = g.reduce if reduction else g.normal
    direct = count_module(ChildCell(cell, C, reduction, affine, pool_bn), (C, H, W))
    costs = cell_costs(C, H, W, reduction, pool_bn=pool_bn, affine=affine)
    # the expected cost under the child's one-hot Z ...
    from_z = expected_cost(G.one_hot(cell, torch.float64), costs)
    assert from_z.tolist() == list(direct)
    # ... is the sum of op_costs over the live edges.
    inner = ((H + 1) // 2, (W + 1) // 2) if reduction else (H, W)
    total = Cost()
    for group in G.live_edges(cell):
        for op, j in group:
            hw = (H, W) if j < 2 else inner
            total = total + op_costs(op, C, *hw, 2 if reduction and j < 2 else 1, pool_bn, affine)
    assert total == direct


def test_count_module_counts_linear_and_restores_the_mode():
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 5 * 5, 10))
    m.train()
    m[1].eval()
    c = count_module(m, (2, 3, 5, 5))
    conv_w, lin_w = 4 * 3 * 9 + 4, 100 * 10 + 10
    assert c.params == conv_w + 8 + lin_w
    assert c.flops == 4 * 25 * 27 + 10 * 100
    assert c.mac == (75 + 100 + conv_w) + (100 + 10 + lin_w)
    assert m.training and m[0].training and not m[1].training
    with pytest.raises(ValueError, match=r"input_shape: expected \[C, H, W\] or \[N, C, H, W\].*got \[5, 5\]"):
        count_module(m, (5, 5))
    with pytest.raises(TypeError, match=r"module: expected an nn.Module, got int"):
        count_module(3, (3, 5, 5))


# -- network_costs -------------------------------------------------------------------------------------------------

def test_network_costs_follow_the_search_network():
    normal, reduce = network_costs(C=16, layers=8, H=32, W=32)
    assert normal.shape == (6, 14, 8, 3) and reduce.shape == (2, 14, 8, 3)
    cells = [(16, 32, False), (16, 32, False), (32, 32, True), (32, 16, False), (32, 16, False), (64, 16, True),
             (64, 8, False), (64, 8, False)]
    expected_normal = [cell_costs(c, h, h, r) for c, h, r in cells if not r]
    expected_reduce = [cell_costs(c, h, h, r) for c, h, r in cells if r]
    assert torch.equal(normal, torch.stack(expected_normal)) and torch.equal(reduce, torch.stack(expected_reduce))
    with pytest.raises(ValueError, match=r"layers: expected an int >= 3, got 2"):
        network_costs(layers=2)


# -- expected_cost and resource_penalty ----------------------------------------------------------------------------

def test_expected_cost_and_its_gradient():
    torch.manual_seed(0)
    costs = cell_costs(8, 8, 8, reduction=True)
    Z = torch.softmax(torch.randn(14, 8, dtype=torch.float64), -1).requires_grad_()
    out = expected_cost(Z, costs[..., 1])
    assert out.shape == () and out.dtype == torch.float64
    assert torch.allclose(out, (Z * costs[..., 1]).sum())
    out.backward()
    assert torch.equal(Z.grad, costs[..., 1])  # each edge's gradient is its own costs: locally decomposable
    three = expected_cost(Z.detach().float(), costs)
    assert three.shape == (3,) and three.dtype == torch.float32
    assert torch.allclose(three.double(), (Z.detach()[..., None] * costs).sum((0, 1)), rtol=1e-6)
    with pytest.raises(ValueError, match=r"costs: expected shape \[14, 8\] or \[14, 8, 'M'\] to match Z, "
                                         r"got \[14, 7\]"):
        expected_cost(Z, costs[:, :7, 0])
    with pytest.raises(ValueError, match=r"Z: expected shape \[E, K\]"):
        expected_cost(Z[0], costs)


def _manual(Zs, costs, form, w):
    """The penalty of one cell type written out edge by edge (SNAS's code): sum over cells and edges / n."""
    total = 0.0
    for Z, c in zip(Zs, costs):
        for e in range(14):
            for m in range(3):
                E = sum(Z[e, k].item() * c[e, k, m].item() for k in range(8))
                total += w[m] * (math.log(E) if E >= 1 else 0.0) if form == "log" else w[m] * E
    return total / len(costs)


@pytest.mark.parametrize("form", ["log", "linear"])
def test_resource_penalty_is_snas_formula(form):
    torch.manual_seed(1)
    cn, cr = network_costs(C=4, layers=5, H=8, W=8)
    assert cn.shape[0] == 3 and cr.shape[0] == 2
    Zn = torch.softmax(torch.randn(14, 8, dtype=torch.float64) * 3, -1)
    Zr = torch.softmax(torch.randn(14, 8, dtype=torch.float64) * 3, -1)
    Zn[0] = torch.nn.functional.one_hot(torch.tensor(0), 8)  # edge 0 all none: cost 0, clamped to 1 in "log"
    w = (1 / 3,) * 3 if form == "log" else LINEAR_WEIGHTS
    got = resource_penalty(Zn, Zr, cn, cr, form=form, cell_weights=(1.0, 0.5))
    expected = _manual([Zn] * 3, cn, form, w) + 0.5 * _manual([Zr] * 2, cr, form, w)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_resource_penalty_gradient_reaches_only_z_and_is_local():
    torch.manual_seed(2)
    cn, cr = network_costs(C=4, layers=5, H=8, W=8)
    cn.requires_grad_()
    Zn = torch.softmax(torch.randn(14, 8, dtype=torch.float64), -1)
    Zn[3] = torch.nn.functional.one_hot(torch.tensor(0), 8)  # edge 3 all none
    Zn.requires_grad_()
    Zr = torch.softmax(torch.randn(14, 8, dtype=torch.float64), -1).requires_grad_()
    resource_penalty(Zn, Zr, cn, cr, form="log").backward()
    assert cn.grad is None
    assert Zn.grad.abs().sum() > 0 and Zr.grad.abs().sum() > 0
    assert torch.equal(Zn.grad[3], torch.zeros(8, dtype=torch.float64))  # clamped: no gradient, as SNAS
    # The gradient on edge e is sum_m w_m c[e, k, m] / E[e, m], averaged over cells: it depends on edge e alone.
    c = cn.detach()
    E = (Zn.detach()[None, :, :, None] * c).sum(-2)  # [3, 14, 3]
    g = ((c / E[:, :, None, :]) / 3).sum(-1).mean(0)
    assert torch.allclose(Zn.grad[[e for e in range(14) if e != 3]], g[[e for e in range(14) if e != 3]])


@pytest.mark.parametrize("form", ["log", "linear"])
def test_resource_penalty_gradcheck(form):
    torch.manual_seed(3)
    cn, cr = cell_costs(4, 6, 6, False), cell_costs(4, 6, 6, True)
    Zn = (torch.rand(14, 8, dtype=torch.float64) + 0.5).requires_grad_()
    Zr = (torch.rand(3, 14, 8, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: resource_penalty(a, b, cn, cr, form=form), (Zn, Zr))


def test_resource_penalty_stacking_and_counts():
    torch.manual_seed(4)
    cn, cr = cell_costs(4, 8, 8, False), cell_costs(8, 8, 8, True)
    Zn, Zr = torch.softmax(torch.randn(2, 14, 8, dtype=torch.float64), -1)
    one = resource_penalty(Zn, Zr, cn, cr, num_normal=6, num_reduce=2)
    stacked = resource_penalty(Zn, Zr, cn.expand(6, 14, 8, 3), cr.expand(2, 14, 8, 3))
    per_cell_z = resource_penalty(Zn.expand(6, 14, 8), Zr.expand(2, 14, 8), cn, cr)
    assert one.item() == pytest.approx(stacked.item(), rel=1e-12) == pytest.approx(per_cell_z.item(), rel=1e-12)
    # per-cell samples are averaged over the type's cells
    Zs = torch.softmax(torch.randn(3, 14, 8, dtype=torch.float64), -1)
    mixed = resource_penalty(Zs, Zr, cn, cr, cell_weights=(1.0, 0.0))
    assert mixed.item() == pytest.approx(
        sum(resource_penalty(z, Zr, cn, cr, cell_weights=(1.0, 0.0)).item() for z in Zs) / 3, rel=1e-12)
    assert resource_penalty(Zn.float(), Zr.float(), cn, cr).dtype == torch.float32


BAD_PENALTY = [
    ("form", dict(form="sqrt"), ValueError, r"form: expected one of \['log', 'linear'\], got 'sqrt'"),
    ("weights length", dict(weights=(1.0, 1.0)), ValueError, r"weights: expected 3 non-negative numbers"),
    ("weights negative", dict(weights=(1.0, -1.0, 1.0)), ValueError, r"weights: expected 3 finite non-negative"),
    ("cell weights", dict(cell_weights=(1.0,)), ValueError, r"cell_weights: expected 2 non-negative numbers"),
    ("count mismatch", dict(costs_normal=torch.zeros(6, 14, 8, 3), num_normal=5), ValueError,
     r"num_normal: Z_normal / costs_normal hold 6 cells, got num_normal=5"),
    ("count zero", dict(num_reduce=0), ValueError, r"num_reduce: expected an int >= 1, got 0"),
    ("samples vs cells", dict(Z_normal=torch.zeros(3, 14, 8), costs_normal=torch.zeros(6, 14, 8, 3)), ValueError,
     r"Z_normal: one sample per cell needs as many samples as costs_normal has cells \(6\), got 3"),
    ("Z shape", dict(Z_reduce=torch.zeros(14, 7)), ValueError,
     r"Z_reduce: expected shape \[14, 8\] or \[n_cells\] \+ that, to match costs_reduce, got \[14, 7\]"),
    ("costs shape", dict(costs_reduce=torch.zeros(14, 8)), ValueError,
     r"costs_reduce: expected shape \[E, K, 3\] or \[n_cells, E, K, 3\]"),
    ("integer Z", dict(Z_normal=torch.zeros(14, 8, dtype=torch.long)), TypeError,
     r"Z_normal: expected a floating-point tensor, got dtype torch.int64"),
    ("Z not a tensor", dict(Z_normal=[0.0]), TypeError, r"Z_normal: expected a tensor, got list"),
]


@pytest.mark.parametrize("desc,change,exc,pattern", BAD_PENALTY, ids=[c[0] for c in BAD_PENALTY])
def test_resource_penalty_rejects_bad_input_with_a_message(desc, change, exc, pattern):
    args = dict(Z_normal=torch.zeros(14, 8), Z_reduce=torch.zeros(14, 8), costs_normal=torch.zeros(14, 8, 3),
                costs_reduce=torch.zeros(14, 8, 3))
    args.update(change)
    with pytest.raises(exc, match=pattern):
        resource_penalty(**args)


BAD_COSTS = [
    ("unknown op", lambda: op_costs("conv_3x3", 4, 8, 8, 1), ValueError, r"name: expected one of \['none'"),
    ("stride", lambda: op_costs("none", 4, 8, 8, 3), ValueError, r"stride: expected 1 or 2, got 3"),
    ("H zero", lambda: op_costs("none", 4, 0, 8, 1), ValueError, r"H: expected an int >= 1, got 0"),
    ("W float", lambda: edge_costs(4, 8, 8.0, 1), TypeError, r"W: expected an int >= 1, got float"),
    ("odd C reduce", lambda: cell_costs(5, 8, 8, True), ValueError, r"C: skip_connect at stride 2 .*even C, got 5"),
]


@pytest.mark.parametrize("desc,call,exc,pattern", BAD_COSTS, ids=[c[0] for c in BAD_COSTS])
def test_cost_functions_reject_bad_input_with_a_message(desc, call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
