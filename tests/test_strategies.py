"""The comparison strategies (random, rsws, naswot) and ``snas-fast compare``."""
from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections import Counter

import pytest
import torch
from scipy import stats
from torch import nn

from snas_fast import Supernet
from snas_fast.cli import main
from snas_fast.compare import CompareConfig, compare
from snas_fast.search import naswot
from snas_fast.search.random import RandomConfig, RandomSearch
from snas_fast.search.registry import get_strategy, strategy_names
from snas_fast.search.rsws import Rsws, RswsConfig, arch_weights
from snas_fast.spaces.darts.genotypes import random_genotype
from snas_fast.spaces.darts.space import PRIMITIVES


# -- NASWOT --------------------------------------------------------------------------------------------------------
def tiny_relu_net() -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))  # the ReLU sees x itself
        net[2].weight.fill_(1.0)
    return net


def test_naswot_equals_a_hand_computation():
    x = torch.tensor([[1.0, -1.0], [2.0, 3.0], [-1.0, -2.0]])
    # codes c = 1[x > 0]: [1, 0], [1, 1], [0, 0]; K[i, j] = units where i and j agree
    K = torch.tensor([[2.0, 1.0, 1.0], [1.0, 2.0, 0.0], [1.0, 0.0, 2.0]], dtype=torch.float64)
    assert naswot.score(tiny_relu_net(), x) == pytest.approx(math.log(torch.linalg.det(K).item()))  # log 4
    assert naswot.score(tiny_relu_net(), x) == pytest.approx(math.log(4.0))


def test_naswot_is_unchanged_by_permuting_the_batch_and_ranks_a_singular_k_last():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
    x = torch.randn(8, 5)
    a = naswot.score(net, x)
    b = naswot.score(net, x[torch.randperm(8)])
    assert math.isfinite(a) and a == pytest.approx(b, abs=1e-9)
    twins = torch.cat([x[:4], x[:4]])  # two equal examples: equal rows of K
    assert naswot.score(net, twins) == -math.inf
    assert sorted([a, -math.inf])[0] == -math.inf


def test_naswot_counts_only_relus_on_the_gradient_path_and_restores_the_model():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.used, self.dead = nn.Linear(2, 2, bias=False), nn.ReLU(), nn.ReLU()
            with torch.no_grad():
                self.lin.weight.copy_(torch.eye(2))

        def forward(self, x):
            self.dead(-x)  # runs, but its output reaches no logit
            return self.used(self.lin(x)).sum(1, keepdim=True)

    x = torch.tensor([[1.0, -1.0], [2.0, 3.0], [-1.0, -2.0]])
    net = Net().eval()
    assert naswot.score(net, x) == pytest.approx(math.log(4.0))  # the dead ReLU would change K
    assert not net.training and net.lin.weight.grad is None


def test_naswot_strategy_scores_every_draw(tmp_path):
    strategy = naswot.Naswot()
    config = naswot.NaswotConfig(archs=6, batch_size=32, layers=3, channels=4, out=str(tmp_path))
    result = strategy.run(config, strategy.load_data(config), progress=False)
    assert len(result.scores) == 6 and result.score == max(result.scores)
    saved = json.load(open(tmp_path / "scores.json"))
    assert [s["score"] for s in saved] == result.scores


# -- the samplers are uniform --------------------------------------------------------------------------------------
@pytest.mark.parametrize("include_none", [False, True])
def test_random_genotypes_are_uniform(include_none):
    gen = torch.Generator().manual_seed(0)
    ops, pairs = Counter(), Counter()
    for _ in range(3000):
        g = random_genotype(gen, include_none=include_none)
        ops.update(op for op, _ in g.normal + g.reduce)
        pairs[frozenset(j for _, j in g.normal[6:8])] += 1  # node 5's two inputs among 0..4
    expected_ops = PRIMITIVES if include_none else PRIMITIVES[1:]
    assert set(ops) == set(expected_ops)
    assert stats.chisquare([ops[o] for o in expected_ops]).pvalue > 1e-3
    assert len(pairs) == 10 and stats.chisquare(list(pairs.values())).pvalue > 1e-3


# -- rsws ----------------------------------------------------------------------------------------------------------
def test_rsws_runs_one_architecture_with_the_shared_weights():
    torch.manual_seed(0)
    model = Supernet(4, 10, 3, in_channels=1).eval()
    g = random_genotype(torch.Generator().manual_seed(1), include_none=True)
    weights, choices = arch_weights(model, model.space, g)  # one per cell type
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(model.run_arch(x, weights, choices), model.forward_child(x, tuple(choices)))


def test_random_and_rsws_strategies_run(tmp_path):
    for strategy, config in ((RandomSearch(), RandomConfig(archs=2, epochs=1, layers=3, channels=4, data_limit=96,
                                                           out=str(tmp_path / "random"))),
                             (Rsws(), RswsConfig(epochs=1, layers=3, channels=4, archs=5, minibatches=1, top=2,
                                                 data_limit=96, out=str(tmp_path / "rsws")))):
        result = strategy.run(config, strategy.load_data(config), progress=False)
        assert len(result.genotype.normal) == 8 and 0.0 <= result.score <= 1.0
        saved = json.load(open(tmp_path / strategy.name / "genotype.json"))["genotype"]
        assert saved == dict(space="darts", **result.genotype.to_dict())
    assert set(strategy_names()) >= {"snas", "random", "rsws", "naswot"}
    assert get_strategy("naswot").name == "naswot"


# -- compare -------------------------------------------------------------------------------------------------------
TINY = ["--data-limit", "64", "--seeds", "1", "--search-epochs", "1", "--archs", "3", "--random-archs", "1",
        "--random-epochs", "1", "--epochs", "1", "--layers", "3", "--channels", "4", "--quiet"]


def test_compare_writes_the_leaderboard_and_resumes_without_redoing(tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    assert main(["compare", "--strategies", "naswot,random", *TINY, "--out", str(out)]) == 0
    for name in ("leaderboard.csv", "leaderboard.md", "accuracy_vs_params.png", "accuracy_vs_search_time.png",
                 "cells/naswot-seed0.json", "cells/random-seed0.json"):
        assert (out / name).exists(), name
    rows = list(csv_rows(out / "leaderboard.csv"))
    assert [r["strategy"] for r in rows] == ["naswot", "random"]
    assert all(0 <= float(r["test_acc"]) <= 1 and int(r["params"]) > 0 and int(r["flops"]) > 0 for r in rows)

    def no_rerun(*args, **kw):
        raise AssertionError("a finished strategy x seed ran again")

    monkeypatch.setattr(naswot.Naswot, "run", no_rerun)
    monkeypatch.setattr(RandomSearch, "run", no_rerun)
    assert not (out / "claims").exists()
    (out / "claims").mkdir()  # an interrupted run's claims do not hold the units back
    (out / "claims" / "unit0").touch()
    assert main(["compare", "--resume", str(out), "--quiet"]) == 0
    assert list(csv_rows(out / "leaderboard.csv")) == rows


def csv_rows(path):
    import csv

    with open(path) as f:
        yield from csv.DictReader(f)


@pytest.mark.parametrize("flags,message", [
    (["--strategies", "snas,foo"], "strategies: expected a comma-separated list"),
    (["--seeds", "0"], "seeds: expected an integer >= 1, got 0"),
    (["--archs", "0"], "archs: expected an integer >= 1, got 0"),
    (["--dataset", "mnist"], "dataset: expected one of digits, cifar10, mnist1d, got 'mnist'"),
    (["--strategies", "snas+foo"], "strategies: snas's variants are warmup, no-bn-recal, tau-exp, no-arch-wd, got "
                                   "'foo' in 'snas+foo'"),
    (["--strategies", "naswot+warmup"], "strategies: naswot's variants are none, got 'warmup'"),
    (["--strategies", "snas,snas"], "strategies: expected each at most once"),
])
def test_compare_bad_arguments_are_one_line_and_write_nothing(tmp_path, capsys, flags, message):
    out = tmp_path / "cmp"
    assert main(["compare", *flags, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_compare_refuses_to_mix_two_comparisons(tmp_path, capsys):
    out = tmp_path / "cmp"
    (out / "cells").mkdir(parents=True)
    (out / "cells" / "naswot-seed0.json").write_text("{}")
    assert main(["compare", "--strategies", "naswot", *TINY, "--out", str(out)]) == 2
    assert "holds a comparison already" in capsys.readouterr().err


def test_plan_pairs_snas_pt_with_its_snas_and_runs_the_variants_last():
    from snas_fast.compare import plan, queue

    units = plan(["snas-pt", "naswot", "snas+warmup", "snas"], 2)
    assert units == [[("naswot", 0)], [("naswot", 1)], [("snas", 0), ("snas-pt", 0)], [("snas", 1), ("snas-pt", 1)],
                     [("snas+warmup", 0)], [("snas+warmup", 1)]]
    assert plan(["snas-pt"], 1) == [[("snas-pt", 0)]]
    # taken longest first (the snas/snas-pt pairs), the variants after every strategy, ties in plan order
    assert queue(units) == [2, 3, 0, 1, 4, 5]
    units = plan(["naswot", "snas+warmup", "snas"], 1, baselines=["gcn"])
    assert units[-1] == [("baseline:gcn", 0)] and queue(units) == [1, 0, 2, 3]  # the baselines, which only train, last


def test_a_unit_is_claimed_once(tmp_path):
    from snas_fast.compare import claim

    assert claim(str(tmp_path), 3) and not claim(str(tmp_path), 3) and claim(str(tmp_path), 4)


@pytest.mark.slow  # an end-to-end run of several epochs
def test_compare_ablation_rows_and_snas_pt_on_snas_supernet(tmp_path, monkeypatch):
    """snas-pt selects from the snas search of its seed (its supernet is not trained twice); a variant is its
    strategy with the one change, reported against it in leaderboard.md."""
    from snas_fast.search import snas, snas_pt

    trained = []
    original = snas.SnasSearch.update

    def counting(self, loss, epoch):
        trained.append(self.config.out)
        return original(self, loss, epoch)

    monkeypatch.setattr(snas.SnasSearch, "update", counting)
    monkeypatch.setattr(snas_pt.SnasPtConfig, "pt_interval", 0)
    out = tmp_path / "cmp"
    rows = compare(CompareConfig(strategies="snas,snas-pt,snas+no-arch-wd", seeds=1, search_epochs=1, epochs=1,
                                 layers=3, channels=4, data_limit=64, out=str(out)), progress=False)
    assert [r["strategy"] for r in rows] == ["snas", "snas-pt", "snas+no-arch-wd"]
    assert {os.path.basename(os.path.dirname(os.path.dirname(p))) for p in trained} == {"snas", "snas+no-arch-wd"}
    pt_search, snas_search = out / "snas-pt" / "seed0" / "search", out / "snas" / "seed0" / "search"
    assert (pt_search / "metrics.jsonl").read_text() == (snas_search / "metrics.jsonl").read_text()
    assert json.load(open(pt_search / "config.json"))["supernet"] == str(snas_search)
    assert rows[1]["search_s"] > rows[0]["search_s"]  # snas-pt's seconds include the supernet's
    variant = json.load(open(out / "snas+no-arch-wd" / "seed0" / "search" / "config.json"))
    assert variant["arch_weight_decay"] == 0.0 and json.load(open(snas_search / "config.json"))[
        "arch_weight_decay"] == 1e-3
    board = (out / "leaderboard.md").read_text()
    delta = rows[2]["test_acc"] - rows[0]["test_acc"]
    assert "| snas+no-arch-wd | arch_weight_decay=0.0 |" in board and f"{delta:+.4f}" in board


def test_snas_pt_refuses_a_supernet_searched_otherwise(tmp_path):
    from snas_fast.search.snas import SearchConfig, search
    from snas_fast.search.snas_pt import SnasPt, SnasPtConfig, SearchError

    tiny = dict(epochs=1, layers=3, channels=4, data_limit=32)
    first = SearchConfig(out=str(tmp_path / "snas"), **tiny)
    search(first, first.load_data(), progress=False)
    for change, message in ((dict(seed=1), "other settings (seed 0, here 1)"),
                            (dict(epochs=2), "other settings (epochs 1, here 2)")):
        config = SnasPtConfig(out=str(tmp_path / "pt"), supernet=first.out, **dict(tiny, **change))
        with pytest.raises(SearchError, match=re.escape(f"supernet: {first.out} was searched with " + message)):
            SnasPt().run(config, config.load_data(), progress=False)
    config = SnasPtConfig(out=str(tmp_path / "pt"), supernet=str(tmp_path / "nowhere"), **tiny)
    with pytest.raises(SearchError, match="is not a snas search directory"):
        SnasPt().run(config, config.load_data(), progress=False)


@pytest.mark.slow  # torchrun processes
def test_compare_under_torchrun_shares_the_cells_out(tmp_path):
    """Two ranks take the cells from one queue: each runs whole cells alone and writes them, every cell once; rank 0
    writes the leaderboard of all and removes the claims."""
    import subprocess
    import sys

    out = tmp_path / "cmp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "snas_fast", "compare", "--strategies", "naswot,random", *TINY[:2], *TINY[4:-1],
                           "--seeds", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ran = {line.split(":")[0] for line in proc.stdout.splitlines() if " seed " in line and "rank" in line}
    assert any("(rank 0)" in r for r in ran) and any("(rank 1)" in r for r in ran), proc.stdout
    rows = list(csv_rows(out / "leaderboard.csv"))
    assert [(r["strategy"], r["seed"]) for r in rows] == [("naswot", "0"), ("naswot", "1"), ("random", "0"),
                                                          ("random", "1")]
    assert len(list((out / "cells").glob("*.json"))) == 4 and len(ran) == 4 and not (out / "claims").exists()


# -- rank ----------------------------------------------------------------------------------------------------------
def test_rank_correlations_are_scipys_and_rank_minus_infinity_last():
    from snas_fast.rank import rank_correlations

    proxy, reference = [0.3, 0.1, 0.9, 0.5, 0.7], [0.2, 0.1, 0.8, 0.9, 0.5]
    got = rank_correlations(proxy, reference)
    assert got["kendall_tau"] == pytest.approx(stats.kendalltau(proxy, reference).statistic)
    assert got["spearman_rho"] == pytest.approx(stats.spearmanr(proxy, reference).statistic)
    assert got["kendall_tau"] == pytest.approx(0.6)  # 8 concordant, 2 discordant pairs of 10
    assert rank_correlations([-math.inf, 1.0, 2.0], [0.0, 1.0, 2.0])["kendall_tau"] == pytest.approx(1.0)


def test_rank_command_writes_every_proxy_and_its_correlations(tmp_path):
    import csv

    out = tmp_path / "rank"
    assert main(["rank", "--data-limit", "64", "--archs", "3", "--epochs", "1", "--search-epochs", "1",
                 "--layers", "3", "--channels", "4", "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(open(out / "rank.csv")))
    assert len(rows) == 3
    table = json.load(open(out / "correlations.json"))
    trained = [float(r["trained"]) for r in rows]
    for proxy in ("naswot", "rsws", "snas"):
        tau = stats.kendalltau([float(r[proxy]) for r in rows], trained).statistic
        assert (math.isnan(tau) and math.isnan(table[proxy]["kendall_tau"])) or table[proxy]["kendall_tau"] == \
            pytest.approx(tau)
        assert (out / f"{proxy}_vs_trained.png").exists()
    assert main(["rank", "--archs", "1", "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    assert not (tmp_path / "bad").exists()


# -- snas-pt -------------------------------------------------------------------------------------------------------
def test_perturbation_selection_keeps_the_op_whose_removal_hurts_most(monkeypatch):
    """A toy accuracy landscape: the supernet is only as good as the weight its edges give sep_conv_3x3 (column 4),
    later inputs counting slightly more. Selection must keep sep_conv_3x3 on every edge (its removal hurts most),
    then per node drop the inputs whose removal hurts least (the earliest) until two remain."""
    from snas_fast.engine.distributed import Context
    from snas_fast.search import snas_pt

    def toy_accuracy(model, weights, loader, device):
        return sum(float(w[e, 4]) * (1 + e / 100) for w in weights for e in range(14))

    monkeypatch.setattr(snas_pt, "_accuracy", toy_accuracy)
    torch.manual_seed(0)
    model = Supernet(4, 10, 3, in_channels=1)
    config = snas_pt.SnasPtConfig(pt_interval=0, bn_recalibration=0, data_limit=32, layers=3, channels=4)
    data = config.load_data()
    g = snas_pt.select(model, config, data, Context(), model.space)
    expected = tuple(("sep_conv_3x3", j) for node in range(4) for j in (node, node + 1))
    assert g.normal == expected and g.reduce == expected
    assert "snas-pt" in strategy_names()


def test_compare_hands_its_search_batch_size_and_layers_to_every_strategy_and_refuses_bad_ones():
    from snas_fast.compare import CompareError
    from snas_fast.search.registry import get_strategy

    config = CompareConfig(space="gnn", dataset="sbm-cluster", strategies="snas,random", batch_size=16,
                           search_batch_size=8, layers=3, search_layers=4)
    config.validate()
    for name in ("snas", "random"):
        searched = config.search_config(get_strategy(name), 0, "out")
        assert (searched.batch_size, searched.layers) == (8, 4)
    assert (config.train_config(0, "out").batch_size, config.train_config(0, "out").layers) == (16, 3)
    unset = CompareConfig(space="gnn", dataset="sbm-cluster", strategies="snas")
    assert unset.search_config(get_strategy("snas"), 0, "out").batch_size != 8
    for name in ("search_batch_size", "search_layers"):
        with pytest.raises(CompareError, match=f"{name}: expected an integer >= 1, got 0"):
            CompareConfig(space="gnn", dataset="sbm-cluster", strategies="snas", **{name: 0}).validate()
