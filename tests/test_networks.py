"""Evaluation networks from a genotype: the published parameter counts and FLOPs, both genotype kinds, zero
nodes, drop-path, the auxiliary heads, bad genotypes."""
from __future__ import annotations

import collections
import re

import pytest
import torch

import snas_fast
from snas_fast.spaces.darts import genotypes as G
from snas_fast.spaces.darts.genotypes import Genotype
from snas_fast.spaces.darts.networks import (AuxiliaryHeadCIFAR, Cell, NetworkCIFAR, NetworkImageNet, as_genotype, count_flops,
                                count_parameters, drop_path)

# Exact counts of this implementation (DARTS's model.py layer for layer), auxiliary head excluded as the papers count.
# CIFAR-10: C = 36, 20 cells. The published figures (snas.md, genotypes_published.json): DARTS_V2 3.3 M
# (3,349,342 with DARTS's own code), SNAS moderate 2.8 M, aggressive 2.3 M, mild 2.9 M.
CIFAR_PARAMS = {
    "DARTS_V1": 3_169_414,
    "DARTS_V2": 3_349_342,
    "SNAS_mild": 2_661_382,
    "SNAS_moderate": 2_847_358,
    "SNAS_aggressive": 2_313_622,
}


def test_exports():
    assert snas_fast.NetworkCIFAR is NetworkCIFAR and snas_fast.NetworkImageNet is NetworkImageNet


def test_darts_v2_cifar_has_darts_parameter_count():
    model = NetworkCIFAR(36, 10, 20, True, "DARTS_V2")
    assert count_parameters(model) == 3_349_342  # DARTS's utils.count_parameters_in_MB: 3.349342
    assert count_parameters(model, auxiliary=True) == 3_825_768


@pytest.mark.parametrize("name", sorted(CIFAR_PARAMS))
def test_published_cifar_parameter_counts(name):
    published = G._published()["_published_params_cifar10_M"].get(name)
    for kind in ("", "_edge_all"):  # the edge_all form of a SNAS cell is the same network
        if kind and name + kind not in G.available():
            continue
        count = count_parameters(NetworkCIFAR(36, 10, 20, False, name + kind))
        assert count == CIFAR_PARAMS[name], name + kind
    if published is None:
        return
    if name == "SNAS_mild":
        # The released SNAS_mild cell (SNAS-Series genotypes.py) gives 2.66 M; the paper's table says 2.9 M for
        # the mild model. The disagreement is the data's, not the network's: moderate and aggressive match.
        assert round(count / 1e6, 1) == 2.7 != published
    else:
        assert round(count / 1e6, 1) == published


def test_imagenet_mobile_counts():
    # DARTS_V2 at C = 48, 14 cells (DARTS's ImageNet setting): 4.7 M parameters as published.
    darts48 = NetworkImageNet(48, 1000, 14, True, "DARTS_V2")
    assert count_parameters(darts48) == 4_718_752
    # Multiply-adds of the convs and the classifier on a 224x224 image: 529.9 M at C = 48. DARTS's paper says 574 M;
    # the same count at C = 50 (SNAS's ImageNet width) gives 573.5 M. Conv + FC counts of DARTS_V2 at C = 48 below
    # the paper's 574 M are a known discrepancy (quark0/darts issue 46).
    assert count_flops(darts48, 224) == 529_911_552
    darts50 = NetworkImageNet(50, 1000, 14, False, "DARTS_V2")
    assert count_flops(darts50, 224) == 573_472_800
    # SNAS mild at SNAS's C = 50: 4.24 M / 474 M for the released cell (published: 4.3 M / 522 M; see the CIFAR note)
    mild = NetworkImageNet(50, 1000, 14, False, "SNAS_mild_edge_all")
    assert count_parameters(mild) == 4_235_875
    assert count_flops(mild, 224) == 474_169_400
    assert count_flops(mild, 224) == count_flops(NetworkImageNet(50, 1000, 14, True, "SNAS_mild"), 224)


def test_count_flops_by_hand_on_a_small_network():
    model = NetworkCIFAR(4, 10, 3, False, "DARTS_V2", in_channels=1)
    # the stem, every op and preprocessing conv of every cell, and the classifier; checked against the module walk
    expected = 0
    sizes = {}

    def hook(m, inputs, out):
        sizes[m] = out.shape

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d,
                                                                                          torch.nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, 8, 8))
    for h in handles:
        h.remove()
    for m, shape in sizes.items():
        if isinstance(m, torch.nn.Conv2d):
            expected += shape.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        else:
            expected += m.in_features * m.out_features
    assert count_flops(model, 8) == count_flops(model, (8, 8)) == expected


@pytest.mark.parametrize("name", G.available())
def test_forward_shapes_in_training_and_eval(name):
    torch.manual_seed(0)
    model = NetworkCIFAR(4, 10, 5, True, name, in_channels=1)
    x = torch.randn(3, 1, 8, 8)
    model.drop_path_prob = 0.2
    model.train()
    logits, aux = model(x)
    assert logits.shape == (3, 10) and aux.shape == (3, 10)
    (logits.sum() + aux.sum()).backward()
    model.eval()
    logits, aux = model(x)
    assert logits.shape == (3, 10) and aux is None


def test_imagenet_forward_on_a_small_image():
    model = NetworkImageNet(8, 7, 5, True, "SNAS_aggressive_edge_all")
    logits, aux = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 7) and aux.shape == (2, 7)


def _edge_all_key(top2: Genotype, full: Genotype):
    """Rename a top-2 network's ``cells.i._ops.k`` keys to the edge_all network's: the same (node, input) pair."""
    def position(cell):
        out, pos = {}, 0
        for i, group in enumerate(G.nodes(cell)):
            for op, j in group:
                out.setdefault((i, j), []).append(pos)
                pos += 1
        return out

    maps = {}
    for kind in ("normal", "reduce"):
        a, b = position(getattr(top2, kind)), position(getattr(full, kind))
        maps[kind] = {pa: b[edge][0] for edge, positions in a.items() for pa in positions}
    return maps


@pytest.mark.parametrize("name", ["SNAS_mild", "SNAS_moderate", "SNAS_aggressive"])
def test_edge_all_and_top2_forms_compute_the_same_function(name):
    torch.manual_seed(1)
    top2 = NetworkCIFAR(4, 10, 5, False, name, in_channels=1)
    full = NetworkCIFAR(4, 10, 5, False, name + "_edge_all", in_channels=1)
    maps = _edge_all_key(top2.genotype, full.genotype)
    renamed = {}
    for key, value in top2.state_dict().items():
        m = re.match(r"cells\.(\d+)\._ops\.(\d+)\.(.*)", key)
        if m:
            cell = top2.cells[int(m.group(1))]
            k = maps["reduce" if cell.reduction else "normal"][int(m.group(2))]
            key = f"cells.{m.group(1)}._ops.{k}.{m.group(3)}"
        renamed[key] = value
    full.load_state_dict(renamed)
    x = torch.randn(4, 1, 8, 8)
    for train in (True, False):
        top2.train(train)
        full.train(train)
        torch.testing.assert_close(full(x)[0], top2(x)[0], rtol=1e-5, atol=1e-6)


def test_a_node_without_live_input_is_zero_and_keeps_its_channels():
    g = G.load("SNAS_aggressive_edge_all")  # reduce cell: nodes 4 and 5 have only `none` inputs
    assert G.live_edges(g.reduce)[2:] == [[], []]
    C = 4
    cell = Cell(g, 6, 6, C, reduction=True, reduction_prev=False)
    for train in (True, False):
        cell.train(train)
        out = cell(torch.randn(2, 6, 5, 5), torch.randn(2, 6, 5, 5))
        assert out.shape == (2, 4 * C, 3, 3)  # ceil(5 / 2), all four nodes concatenated
        assert out[:, 2 * C:].abs().max() == 0 and out[:, :2 * C].abs().max() > 0


def test_a_cell_that_ignores_its_inputs_is_refused():
    g = G.load("SNAS_aggressive_edge_all")
    dead = [(op if j >= 2 else "none", j) for op, j in g.reduce]  # only intermediate-to-intermediate edges left
    bad = Genotype(normal=g.normal, normal_concat=g.normal_concat, reduce=dead, reduce_concat=g.reduce_concat)
    with pytest.raises(ValueError, match=r"genotype\.reduce: none of the concatenated nodes \[2, 3, 4, 5\] is "
                                         r"connected to the cell's inputs"):
        NetworkCIFAR(4, 10, 3, False, bad)


def test_drop_path_keeps_identities_and_drops_examples():
    x = torch.randn(1000, 2, 3, 3)
    y = drop_path(x, 0.25, torch.Generator().manual_seed(0))
    kept = (y != 0).flatten(1).any(1)
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    assert 0.65 < kept.float().mean() < 0.85
    assert drop_path(x, 0.0) is x
    # a normal cell of skip connections only: drop-path never touches an identity
    skips = Genotype(normal=[("skip_connect", 0), ("skip_connect", 1)] * 4, normal_concat=[2, 3, 4, 5],
                     reduce=G.load("DARTS_V2").reduce, reduce_concat=[2, 3, 4, 5])
    cell = Cell(skips, 4, 4, 4, reduction=False, reduction_prev=False).train()
    s0, s1 = torch.randn(8, 4, 6, 6), torch.randn(8, 4, 6, 6)
    torch.manual_seed(0)
    a = cell(s0, s1, 0.0)
    torch.manual_seed(0)
    torch.testing.assert_close(cell(s0, s1, 0.9), a)
    conv = Cell(G.load("DARTS_V2"), 4, 4, 4, reduction=False, reduction_prev=False).train()
    torch.manual_seed(0)
    assert not torch.allclose(conv(s0, s1, 0.9), conv(s0, s1, 0.0))
    conv.eval()
    torch.testing.assert_close(conv(s0, s1, 0.9), conv(s0, s1, 0.0))  # eval: no drop-path


def test_auxiliary_head_uses_darts_pooling_on_8x8_and_adapts_elsewhere():
    head = AuxiliaryHeadCIFAR(16, 10).eval()
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(head(x), head.classifier(head.features(x).flatten(1)))  # DARTS's exact path
    assert head(torch.randn(2, 16, 2, 2)).shape == (2, 10)  # digits: 8x8 images are 2x2 after two reductions
    assert head(torch.randn(2, 16, 16, 16)).shape == (2, 10)


def test_darts_state_dict_names():
    keys = set(NetworkCIFAR(4, 10, 3, True, "DARTS_V2").state_dict())
    for key in ("stem.0.weight", "stem.1.running_mean", "cells.0.preprocess0.op.1.weight",
                "cells.2.preprocess0.conv_1.weight", "cells.0._ops.0.op.1.weight", "auxiliary_head.features.2.weight",
                "auxiliary_head.classifier.weight", "classifier.weight"):
        assert key in keys, key
    keys = set(NetworkImageNet(8, 10, 3, True, "DARTS_V2").state_dict())
    assert {"stem0.0.weight", "stem1.1.weight", "auxiliary_head.features.5.weight"} <= keys


def test_genotype_arguments():
    g = G.load("DARTS_V2")
    DartsGenotype = collections.namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
    assert as_genotype("DARTS_V2") == as_genotype(g.to_dict()) == as_genotype(g.to_json()) == g
    assert as_genotype(DartsGenotype(*(getattr(g, f) for f in DartsGenotype._fields))) == g
    with pytest.raises(KeyError, match="name: expected one of"):
        NetworkCIFAR(4, 10, 3, False, "DARTS_V3")
    with pytest.raises(TypeError, match="genotype: expected a Genotype"):
        NetworkCIFAR(4, 10, 3, False, 3)
    with pytest.raises(ValueError, match="C: expected an int >= 1, got 0"):
        NetworkCIFAR(0, 10, 3, False, g)


def test_unused_parameters_are_detected():
    g = G.load("DARTS_V2")
    assert not NetworkCIFAR(4, 10, 3, True, g).has_unused_parameters()
    partial = Genotype(normal=g.normal, normal_concat=[2, 3], reduce=g.reduce, reduce_concat=g.reduce_concat)
    assert NetworkCIFAR(4, 10, 3, False, partial).has_unused_parameters()


def test_network_cifar_in_channels_last_is_the_same_function():
    """About as close to the float64 NCHW network as the float32 NCHW one is: the layouts' convolutions (oneDNN)
    sum the weight gradients in other orders, and these sums cancel heavily (seen: 3.2x the NCHW error on a 1x1
    convolution's gradient, 1e-4 relative), so the bound is 4x its error or 2e-4 of the tensor's largest value. A
    layout mistake would be off by the values themselves."""
    from snas_fast.spaces.darts.networks import NetworkCIFAR

    out = {}
    for fmt, dtype in ((torch.contiguous_format, torch.float64), (torch.contiguous_format, torch.float32),
                       (torch.channels_last, torch.float32)):
        torch.manual_seed(0)
        net = NetworkCIFAR(4, 10, 3, True, "DARTS_V2", memory_format=fmt).to(dtype)
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)).to(dtype)
        logits, aux = net(x)
        grads = torch.autograd.grad(logits.sum() + aux.sum(), list(net.parameters()))
        out[fmt, dtype] = [t.double() for t in [logits, *grads]]
    assert net.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    want = out[torch.contiguous_format, torch.float64]
    scale = max(t.abs().max().item() for t in want)
    for i, (got, plain, ref) in enumerate(zip(out[torch.channels_last, torch.float32],
                                              out[torch.contiguous_format, torch.float32], want)):
        bound = max(4 * (plain - ref).abs().max().item(), 2e-4 * ref.abs().max().item()) + 1e-6 * scale
        assert (got - ref).abs().max() <= bound, i
