"""snas_fast.convergence and the search's convergence report: figures, recipes, the "did not search" warning."""
from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from snas_fast import convergence, trainer
from snas_fast.cli import main


def test_arch_stats_of_uniform_and_one_hot_rows():
    uniform = torch.full((14, 8), 1 / 8)
    s = convergence.arch_stats(uniform)
    assert s["entropy"] == pytest.approx(math.log(8)) and s["margin"] == pytest.approx(0) and s["decided"] == 0
    one_hot = torch.eye(8)[torch.arange(14) % 8]
    s = convergence.arch_stats(one_hot)
    assert s["entropy"] == pytest.approx(0, abs=1e-12) and s["margin"] == pytest.approx(1) and s["decided"] == 14


def test_arch_stats_margin_and_decided_count():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.34, 0.33, 0.33], [0.6, 0.2, 0.2]], dtype=torch.float64)
    s = convergence.arch_stats(p)
    assert s["margin"] == pytest.approx((0.2 + 0.01 + 0.4) / 3)
    assert s["decided"] == 2  # margins 0.2 and 0.4 exceed 0.05; 0.01 does not
    expected_h = float(-(p * p.log()).sum(-1).mean())
    assert s["entropy"] == pytest.approx(expected_h)


def test_changed_edges_counts_argmax_moves():
    p = torch.eye(4)[[0, 1, 2, 3]].double()
    assert convergence.changed_edges(p, [0, 1, 2, 3]) == 0
    assert convergence.changed_edges(p, [0, 0, 0, 0]) == 3
    with pytest.raises(ValueError, match=r"initial_choice: expected 4 columns \(one per edge\), got \[3\]"):
        convergence.changed_edges(p, [0, 1, 2])


def test_bad_probs_name_the_argument():
    with pytest.raises(ValueError, match=r"probs: expected a floating-point \[edges, K >= 2\] tensor"):
        convergence.arch_stats(torch.ones(3, dtype=torch.long))


def test_unmoved_warning_both_ways():
    assert convergence.unmoved_warning(changed=3, decided=0) is None
    assert "did not search" in convergence.unmoved_warning(changed=0, decided=5)


# ------------------------------------------------------------------------------------------------- recipes


def test_recipes_fill_only_what_is_left_unset():
    short = trainer.SearchConfig()
    assert (short.arch_optimizer, short.tau_epochs, short.epochs) == ("adam", None, 20)
    assert short.bn_recalibration > 0
    paper = trainer.SearchConfig(recipe="snas-cifar")
    assert (paper.epochs, paper.layers, paper.channels) == (150, 8, 16)
    assert (paper.arch_optimizer, paper.arch_lr, paper.tau_epochs, paper.drop_path) == ("sgd", 3e-4, 150, 0.3)
    assert (paper.lr, paper.lr_min, paper.tau0, paper.tau_min, paper.resource_lambda) == (0.025, 0.001, 1.0, 0.03,
                                                                                           1.5e-3)
    assert trainer.SearchConfig(recipe="snas-cifar", arch_lr=1e-3).arch_lr == 1e-3  # an explicit value wins
    with pytest.raises(trainer.SearchError, match=r"recipe: expected one of short, snas-cifar, got 'fast'"):
        trainer.SearchConfig(recipe="fast")
    # a saved config comes back as it was
    assert trainer.SearchConfig.from_dict(paper.to_dict()) == paper


def test_short_recipe_anneals_tau_over_the_run():
    config = trainer.SearchConfig(epochs=10)
    taus = [trainer.temperature(config, e) for e in range(10)]
    assert taus[0] == 1.0 and taus[-1] == pytest.approx(0.03 + 0.97 / 10)
    paper = trainer.SearchConfig(recipe="snas-cifar", epochs=10)
    assert trainer.temperature(paper, 9) == pytest.approx((1 - 9 / 150) * 0.97 + 0.03)


def test_cli_recipe_flag_and_overrides(tmp_path):
    out = tmp_path / "run"
    assert main(["search", "--recipe", "snas-cifar", "--dataset", "digits", "--data-limit", "32", "--epochs", "1",
                 "--layers", "3", "--channels", "4", "--batch-size", "32", "--out", str(out), "--quiet"]) == 0
    saved = json.load(open(out / "config.json"))
    assert saved["recipe"] == "snas-cifar" and saved["arch_optimizer"] == "sgd" and saved["tau_epochs"] == 150
    assert saved["epochs"] == 1 and saved["layers"] == 3


def test_cli_unknown_recipe_is_a_one_line_error(tmp_path, capsys):
    assert main(["search", "--recipe", "fast", "--out", str(tmp_path / "never"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "snas-fast: error: recipe: expected one of short, snas-cifar, got 'fast'"
    assert not (tmp_path / "never").exists()


# ------------------------------------------------------------------------------------------------- the search


def _config(out, **kw):
    settings = dict(dataset="digits", data_limit=64, epochs=2, batch_size=32, layers=3, channels=4, seed=1,
                    bn_recalibration=1, out=str(out))
    settings.update(kw)
    return trainer.SearchConfig(**settings)


def test_a_search_that_cannot_move_warns(tmp_path, capsys):
    config = _config(tmp_path / "frozen", arch_lr=0.0, resource_lambda=0.0)
    with pytest.warns(trainer.SearchWarning, match="did not search"):
        result = trainer.search(config, trainer.load_search_data(config), progress=False)
    assert result.arch["changed_edges"] == 0 and result.warning is not None
    rows = [json.loads(line) for line in open(tmp_path / "frozen" / "metrics.jsonl")]
    assert all(r["changed_edges"] == 0 for r in rows)
    assert rows[-1]["normal_margin"] < 0.05 and rows[-1]["normal_entropy"] > 2.0
    # the CLI says so on one line of stderr
    assert main(["search", "--dataset", "digits", "--data-limit", "64", "--epochs", "1", "--batch-size", "32",
                 "--layers", "3", "--channels", "4", "--arch-lr", "0", "--lambda", "0", "--quiet",
                 "--out", str(tmp_path / "cli")]) == 0
    captured = capsys.readouterr()
    assert "snas-fast: warning: the derived cells are the ones the untrained supernet gives" in captured.err
    assert "entropy" in captured.out and "edges decided" in captured.out


def test_the_short_recipe_moves_the_architecture_reports_it_and_does_not_warn(tmp_path):
    config = _config(tmp_path / "moving", epochs=3)  # the recipe's log_alpha optimiser and rate, 6 steps
    with warnings.catch_warnings():
        warnings.simplefilter("error", trainer.SearchWarning)
        result = trainer.search(config, trainer.load_search_data(config), progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "moving" / "metrics.jsonl")]
    for key in ("normal_entropy", "normal_margin", "normal_decided", "reduce_entropy", "reduce_margin",
                "reduce_decided", "changed_edges"):
        assert key in rows[-1], key
    assert rows[-1]["changed_edges"] > 0 and result.warning is None
    assert rows[-1]["normal_margin"] > rows[0]["normal_margin"]
    assert rows[-1]["normal_entropy"] < rows[0]["normal_entropy"]
    saved = json.load(open(tmp_path / "moving" / "genotype.json"))
    initial = trainer.Genotype.from_dict(saved["initial_genotype"])
    assert initial != result.genotype
