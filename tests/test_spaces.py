"""A search space with a 9th primitive defined here, in user code: search, costs, both derivation rules, plots and
retraining run on it by passing ``space=`` (and ``--space`` on the CLI), with no edit of the package."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import snas_fast
from snas_fast.cli import main
from snas_fast.spaces import Primitive, count_module, get_space, register_space, space_names
from snas_fast.spaces.darts import DARTS_PRIMITIVES, DartsSpace
from snas_fast.spaces.darts import costs
from snas_fast.spaces.darts.genotypes import Genotype, derive, random_genotype
from snas_fast.spaces.darts.networks import NetworkCIFAR
from snas_fast.viz import plots


def conv_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    """A plain ReLU-Conv3x3-BN: no fold of its own, run as it is and summed."""
    return nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(C, C, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(C, affine=affine))


class ConvBN(nn.Module):
    """The same layers as a "bn_tail" candidate: ``pre_bn`` and a trailing affine-free ``bn`` the kernel folds."""

    def __init__(self, C: int, stride: int, affine: bool):
        super().__init__()
        self.conv = nn.Conv2d(C, C, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(C, affine=affine)

    def pre_bn(self, x, relu_x=None):
        return self.conv(torch.relu(x))

    def forward(self, x):
        return self.bn(self.pre_bn(x))


NINE = DartsSpace(DARTS_PRIMITIVES + (Primitive("conv_3x3", conv_3x3),))
NINE_FOLDED = DartsSpace(DARTS_PRIMITIVES + (Primitive("conv_3x3", ConvBN, fold="bn_tail", color="black"),))


def test_the_space_lists_its_primitives():
    assert NINE.op_names[-1] == "conv_3x3" and len(NINE.primitives) == 9
    assert NINE.zero_columns() == (0,)
    with pytest.raises(ValueError, match=r"primitives: expected distinct names"):
        DartsSpace(DARTS_PRIMITIVES + DARTS_PRIMITIVES[:1])
    with pytest.raises(ValueError, match=r"fold: expected one of"):
        Primitive("x", conv_3x3, fold="fused")
    with pytest.raises(ValueError, match=r"space: expected one of darts"):
        get_space("nope")


@pytest.mark.parametrize("space", [NINE, NINE_FOLDED], ids=["opaque", "bn_tail"])
@pytest.mark.parametrize("pool_bn", [False, True])
def test_the_supernet_mixes_nine_candidates_the_same_three_ways(space, pool_bn):
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    outs = {}
    for mixed in ("eager", "fused_sum", "fused"):
        torch.manual_seed(0)
        model = snas_fast.Supernet(4, 10, 3, in_channels=1, mixed=mixed, pool_bn=pool_bn, space=space).double()
        assert [tuple(p.shape) for p in model.arch_parameters()] == [(14, 9), (14, 9)]
        noise = [torch.randn(14, 9, dtype=torch.float64) for _ in range(2)]
        logits = model(x, 0.7, noise=noise)
        logits.sum().backward()
        outs[mixed] = (logits.detach(), model.log_alpha_normal.grad.clone())
    for mixed in ("fused_sum", "fused"):
        torch.testing.assert_close(outs[mixed][0], outs["eager"][0])
        torch.testing.assert_close(outs[mixed][1], outs["eager"][1])
    assert outs["eager"][1][:, 8].abs().sum() > 0  # the 9th column gets a gradient


def test_costs_of_the_ninth_primitive_are_counted_from_its_module():
    table = costs.edge_costs(4, 8, 8, 1, space=NINE)
    assert table.shape == (9, 3)
    assert tuple(table[8].long().tolist()) == tuple(count_module(conv_3x3(4, 1, False), (4, 8, 8)))
    torch.testing.assert_close(table[:8], costs.edge_costs(4, 8, 8, 1))  # the eight keep their formulas
    normal, reduce = costs.network_costs(4, 3, 8, 8, space=NINE)
    assert normal.shape == (1, 14, 9, 3) and reduce.shape == (2, 14, 9, 3)  # 3 cells: reductions at 1 and 2


@pytest.mark.parametrize("rule", ["edge_all", "top2"])
def test_both_derivation_rules_pick_the_ninth_primitive(rule):
    alpha = torch.zeros(14, 9)
    alpha[:, 8] = 3.0  # conv_3x3 everywhere
    alpha[0, 0] = 5.0  # none strongest on edge 0: edge_all keeps it, top2 skips none
    g = derive(alpha, alpha, rule=rule, space=NINE)
    ops = [op for op, _ in g.normal]
    assert ops.count("conv_3x3") == (13 if rule == "edge_all" else 8)
    assert Genotype.from_dict(g.to_dict(), NINE) == g
    with pytest.raises(ValueError, match="unknown op 'conv_3x3'"):
        Genotype.from_dict(g.to_dict())  # DARTS's eight do not know it
    drawn = {op for _ in range(20) for op, _ in random_genotype(space=NINE).normal}
    assert "conv_3x3" in drawn and "none" not in drawn
    assert NINE.encode(g).shape == (2 * 14 * 9,) and torch.stack(NINE.arch_weights(g)).shape == (2, 14, 9)


def test_plots_and_retraining_take_the_ninth_primitive(tmp_path):
    g = derive(torch.randn(14, 9), torch.randn(14, 9), rule="top2", space=NINE)
    history = [dict(normal_alpha=torch.softmax(torch.randn(14, 9), -1).tolist(),
                    reduce_alpha=torch.softmax(torch.randn(14, 9), -1).tolist()) for _ in range(2)]
    assert plots.plot_alphas(history, tmp_path / "a.png", space=NINE).stat().st_size > 0
    assert plots.plot_cell(g.normal, tmp_path / "c.png", space=NINE).stat().st_size > 0
    net = NetworkCIFAR(4, 10, 3, True, g, in_channels=1, space=NINE)
    logits, aux = net.train()(torch.randn(2, 1, 8, 8))
    assert logits.shape == aux.shape == (2, 10)
    assert any(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1 for m in net.cells.modules())


@pytest.mark.slow  # an end-to-end run of several epochs: make test-all
def test_search_and_train_run_on_a_registered_space(tmp_path, capsys):
    register_space("darts9", lambda: NINE)
    assert "darts9" in space_names()
    tiny = ["--dataset", "digits", "--data-limit", "64", "--epochs", "2", "--batch-size", "32", "--layers", "3",
            "--channels", "4", "--seed", "1", "--quiet", "--space", "darts9"]
    search = tmp_path / "search"
    assert main(["search", *tiny, "--out", str(search)]) == 0
    saved = json.load(open(search / "genotype.json"))
    assert len(saved["normal_alpha"][0]) == 9
    assert (search / "alphas.png").exists()
    # a derived cell that uses the 9th primitive: the search's, with conv_3x3 forced onto one edge
    cell = saved["genotype"]
    cell["normal"][0] = ["conv_3x3", 0]
    (tmp_path / "g.json").write_text(json.dumps(cell))
    train = tmp_path / "train"
    assert main(["train", "--genotype", str(tmp_path / "g.json"), *tiny, "--out", str(train)]) == 0
    assert json.load(open(train / "summary.json"))["params"] > 0
    # its "space" tag names darts9: it trains there without --space; the same cell untagged, or said to be of DARTS's
    # space, is refused by DARTS's eight primitives
    assert main(["train", "--genotype", str(tmp_path / "g.json"), *tiny[:-2], "--out", str(tmp_path / "t2")]) == 0
    assert cell.pop("space") == "darts9"
    (tmp_path / "g.json").write_text(json.dumps(cell))
    capsys.readouterr()
    assert main(["train", "--genotype", str(tmp_path / "g.json"), *tiny[:-2], "--out", str(tmp_path / "t3")]) == 2
    assert "unknown op 'conv_3x3'" in capsys.readouterr().err
    assert main(["train", "--genotype", str(tmp_path / "g.json"), *tiny[:-2], "--space", "darts",
                 "--out", str(tmp_path / "t4")]) == 2
