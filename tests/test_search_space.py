"""The DARTS CIFAR search space: PRIMITIVES, edge numbering, the candidate modules, make_op and its checks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import snas_fast
from snas_fast.spaces.darts import operations as ss
from snas_fast.spaces.darts.space import EDGES, NUM_EDGES, PRIMITIVES, edge_index, make_op

SIZES = [(8, 8), (7, 7), (7, 10), (1, 1)]  # even, odd, mixed, the smallest


def test_primitives_order_is_the_contract():
    assert PRIMITIVES == ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                          "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]


def test_edges_in_darts_order():
    expected = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (2, 3),
                (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]
    assert EDGES == expected and NUM_EDGES == 14
    assert [edge_index(node, j) for node, j in EDGES] == list(range(14))


@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("hw", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_output_shape(name, stride, hw):
    H, W = hw
    C = 6
    op = make_op(name, C, stride, affine=False)
    y = op(torch.randn(2, C, H, W))
    expected = (2, C, H, W) if stride == 1 else (2, C, (H + 1) // 2, (W + 1) // 2)
    assert tuple(y.shape) == expected, f"{name} stride {stride} on {H}x{W}: got {tuple(y.shape)}"


@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("stride", [1, 2])
def test_pool_bn_keeps_the_shape(name, stride):
    op = make_op(name, 4, stride, affine=True, pool_bn=True)
    y = op(torch.randn(2, 4, 7, 8))
    assert tuple(y.shape) == ((2, 4, 7, 8) if stride == 1 else (2, 4, 4, 4))


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("stride", [1, 2])
def test_affine_flag_reaches_every_bn(name, stride, affine):
    op = make_op(name, 4, stride, affine=affine)
    for m in op.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.affine == affine
        if isinstance(m, nn.Conv2d):
            assert m.bias is None


@pytest.mark.parametrize("name", ["max_pool_3x3", "avg_pool_3x3"])
def test_pools(name):
    bare = make_op(name, 4, 2, affine=True)
    kind = nn.MaxPool2d if name == "max_pool_3x3" else nn.AvgPool2d
    assert isinstance(bare, kind) and bare.kernel_size == 3 and bare.stride == 2 and bare.padding == 1
    if kind is nn.AvgPool2d:
        assert bare.count_include_pad is False
    with_bn = make_op(name, 4, 1, affine=True, pool_bn=True)
    assert isinstance(with_bn, nn.Sequential) and isinstance(with_bn[0], kind)
    assert isinstance(with_bn[1], nn.BatchNorm2d) and not with_bn[1].affine  # affine-free even when affine=True
    assert sum(p.numel() for p in with_bn.parameters()) == 0


def test_none_is_the_package_zero_op_and_mixed_op_skips_it():
    op = make_op("none", 4, 2, affine=False)
    assert type(op) is snas_fast.Zero and op.stride == 2 and snas_fast.is_zero_op(op)
    mixed = snas_fast.FusedMixedOp([make_op(p, 4, 1, affine=False) for p in PRIMITIVES])
    assert mixed.live == list(range(1, 8))
    out = mixed(torch.randn(2, 4, 5, 5), torch.zeros(8), 1.0)
    assert tuple(out.shape) == (2, 4, 5, 5)


def test_skip_connect():
    assert isinstance(make_op("skip_connect", 4, 1, affine=False), ss.Identity)
    fr = make_op("skip_connect", 4, 2, affine=False)
    assert isinstance(fr, ss.FactorizedReduce)
    x = torch.randn(2, 4, 5, 5)
    assert make_op("skip_connect", 4, 1, affine=False)(x) is x


def _darts_factorized_reduce(fr, x):
    x = F.relu(x)
    return fr.bn(torch.cat([fr.conv_1(x), fr.conv_2(x[:, :, 1:, 1:])], dim=1))


def test_factorized_reduce_is_darts_on_even_sizes_and_pads_odd_ones():
    torch.manual_seed(0)
    fr = ss.FactorizedReduce(6, 6, affine=True).eval()
    x = torch.randn(2, 6, 8, 6)
    torch.testing.assert_close(fr(x), _darts_factorized_reduce(fr, x), rtol=0, atol=0)
    odd = torch.randn(2, 6, 7, 9)
    padded = F.pad(F.relu(odd)[:, :, 1:, 1:], (0, 1, 0, 1))
    expected = fr.bn(torch.cat([fr.conv_1(F.relu(odd)), fr.conv_2(padded)], dim=1))
    torch.testing.assert_close(fr(odd), expected, rtol=0, atol=0)


def test_module_layout_is_darts_so_state_dicts_load():
    names = lambda m: sorted(n for n, _ in m.named_parameters())  # noqa: E731
    assert names(make_op("sep_conv_3x3", 4, 1, affine=True)) == sorted(
        ["op.1.weight", "op.2.weight", "op.3.weight", "op.3.bias", "op.5.weight", "op.6.weight", "op.7.weight",
         "op.7.bias"])
    assert names(make_op("dil_conv_5x5", 4, 1, affine=True)) == ["op.1.weight", "op.2.weight", "op.3.bias",
                                                                 "op.3.weight"]
    assert names(make_op("skip_connect", 4, 2, affine=True)) == ["bn.bias", "bn.weight", "conv_1.weight",
                                                                 "conv_2.weight"]
    sep = make_op("sep_conv_5x5", 4, 2, affine=False)
    dw1, dw2 = sep.op[1], sep.op[5]
    assert (dw1.groups, dw1.kernel_size, dw1.stride, dw1.padding) == (4, (5, 5), (2, 2), (2, 2))
    assert (dw2.groups, dw2.stride) == (4, (1, 1))
    dil = make_op("dil_conv_3x3", 4, 2, affine=False)
    assert (dil.op[1].dilation, dil.op[1].padding, dil.op[1].groups, dil.op[1].stride) == ((2, 2), (2, 2), 4, (2, 2))
    assert make_op("dil_conv_5x5", 4, 1, affine=False).op[1].padding == (4, 4)
    rcb = ss.ReLUConvBN(4, 8, 1, 1, 0, affine=False)
    assert tuple(rcb(torch.randn(2, 4, 3, 3)).shape) == (2, 8, 3, 3)


BAD_CALLS = [
    ("unknown op", lambda: make_op("conv_7x1_1x7", 4, 1, False), ValueError,
     r"name: expected one of \['none', 'max_pool_3x3'.*'dil_conv_5x5'\], got 'conv_7x1_1x7'"),
    ("op not a string", lambda: make_op(3, 4, 1, False), ValueError, r"name: expected one of"),
    ("stride 3", lambda: make_op("sep_conv_3x3", 4, 3, False), ValueError, r"stride: expected 1 or 2, got 3"),
    ("stride True", lambda: make_op("sep_conv_3x3", 4, True, False), ValueError, r"stride: expected 1 or 2"),
    ("C zero", lambda: make_op("sep_conv_3x3", 0, 1, False), ValueError, r"C: expected an int >= 1, got 0"),
    ("C float", lambda: make_op("sep_conv_3x3", 4.0, 1, False), TypeError, r"C: expected an int >= 1, got float"),
    ("odd C reduce", lambda: make_op("skip_connect", 5, 2, False), ValueError,
     r"C: skip_connect at stride 2 is FactorizedReduce, which needs an even C, got 5"),
    ("FR odd C_out", lambda: ss.FactorizedReduce(4, 5), ValueError, r"C_out: .*even.*got 5"),
    ("node 4", lambda: edge_index(4, 0), ValueError, r"node: expected an intermediate node index in 0..3, got 4"),
    ("input past node", lambda: edge_index(1, 3), ValueError,
     r"input: node 1 \(cell node 3\) takes inputs 0..2, got 3"),
    ("negative input", lambda: edge_index(0, -1), ValueError, r"input: expected an int >= 0, got -1"),
]


@pytest.mark.parametrize("desc,call,exc,pattern", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_is_rejected_with_a_message(desc, call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
