"""snas_fast.convergence and the search's convergence report: figures, recipes, the "did not search" warning."""
from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from snas_fast.search import convergence
from snas_fast.search import snas as trainer
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
    assert convergence.unmoved_warning(changed=3, decided=7, edges=28) is None
    assert "did not search" in convergence.unmoved_warning(changed=0, decided=5, edges=28)
    assert "barely moved: 6/28" in convergence.unmoved_warning(changed=20, decided=6, edges=28)


def test_summary_names_both_cells_and_the_changed_edges():
    stats = dict(entropy=1.0, margin=0.5, decided=3, edges=14)
    text = convergence.summary(dict(normal=stats, reduce=stats, changed_edges=4), 8, sep="\n")
    lines = text.split("\n")
    assert lines[0].startswith("normal: entropy 1.00 nats (uniform 2.08), margin 0.500, 3/14 edges decided")
    assert lines[1].startswith("reduce:") and lines[2] == "4 edges changed since the start"


# ------------------------------------------------------------------------------------------------- recipes


def test_recipes_fill_only_what_is_left_unset():
    short = trainer.SearchConfig()
    assert (short.arch_optimizer, short.tau_epochs, short.epochs) == ("adam", None, 20)
    assert short.bn_recalibration > 0
    paper = trainer.SearchConfig(recipe="snas-cifar")
    assert (paper.epochs, paper.layers, paper.channels) == (150, 8, 16)
    assert (paper.arch_optimizer, paper.arch_lr, paper.tau_epochs, paper.drop_path) == ("sgd", 3e-4, 150, 0.3)
    assert (paper.lr, paper.lr_min, paper.tau_start, paper.tau_end, paper.resource_lambda) == (0.025, 0.001, 1.0, 0.03,
                                                                                           1.5e-3)
    assert trainer.SearchConfig(recipe="snas-cifar", arch_lr=1e-3).arch_lr == 1e-3  # an explicit value wins
    with pytest.raises(trainer.SearchError, match=r"recipe: expected one of short, snas-cifar, graph, custom, got 'fast'"):
        trainer.SearchConfig(recipe="fast")
    # a saved config comes back as it was
    assert trainer.SearchConfig.from_dict(paper.to_dict()) == paper
    with pytest.raises(trainer.SearchError,
                       match=r"epochs: expected a value \(recipe 'custom' gives none\), got None"):
        trainer.SearchConfig(recipe="custom").validate()  # custom: every setting must be given
    for name, bad in (("arch_weight_decay", -1.0), ("bn_recalibration", 2.5), ("arch_lr", "0.1")):
        with pytest.raises(trainer.SearchError, match=f"{name}: expected"):
            trainer.SearchConfig(**{name: bad}).validate()


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
    assert err.strip() == "snas-fast: error: recipe: expected one of short, snas-cifar, graph, custom, got 'fast'"
    assert not (tmp_path / "never").exists()


# ------------------------------------------------------------------------------------------------- the search


def _config(out, **kw):
    settings = dict(dataset="digits", data_limit=64, epochs=2, batch_size=32, layers=3, channels=4, seed=1,
                    bn_recalibration=1, out=str(out))
    settings.update(kw)
    return trainer.SearchConfig(**settings)


@pytest.mark.slow  # an end-to-end run of several epochs
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


@pytest.mark.slow  # an end-to-end run of several epochs
def test_the_short_recipe_moves_the_architecture_reports_it_and_does_not_warn(tmp_path):
    # the recipe's log_alpha optimiser and rate, 4 steps an epoch for 5 epochs
    config = _config(tmp_path / "moving", epochs=5, data_limit=128)
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
    # no warning means at least a quarter of the 28 edges left uniform, not only near-ties flipping
    assert rows[-1]["normal_decided"] + rows[-1]["reduce_decided"] >= 7
    saved = json.load(open(tmp_path / "moving" / "genotype.json"))
    initial = trainer.DartsSpace().from_dict(saved["initial_genotype"])
    assert initial != result.genotype


@pytest.mark.slow  # an end-to-end run of several epochs
def test_resume_of_a_run_from_before_recipes_keeps_its_settings(tmp_path):
    out = tmp_path / "run"
    assert main(["search", "--dataset", "digits", "--data-limit", "64", "--epochs", "2", "--batch-size", "32",
                 "--layers", "3", "--channels", "4", "--arch-optimizer", "sgd", "--arch-lr", "3e-4", "--quiet",
                 "--out", str(out)]) == 0
    config = json.load(open(out / "config.json"))
    del config["recipe"]  # as a config.json of the paper's defaults held it
    config["epochs"] = 3
    (out / "config.json").write_text(json.dumps(config))
    assert main(["search", "--resume", str(out), "--quiet"]) == 0
    resumed = torch.load(out / "checkpoint.pt", weights_only=True)["config"]  # the settings the resumed epoch ran
    assert (resumed["recipe"], resumed["arch_optimizer"], resumed["arch_lr"], resumed["epochs"]) == ("custom", "sgd",
                                                                                                      3e-4, 3)


@pytest.mark.slow  # an end-to-end run of several epochs: make test-all
def test_resume_refuses_a_checkpoint_of_other_splits(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["search", "--dataset", "digits", "--data-limit", "64", "--epochs", "1", "--batch-size", "32",
            "--layers", "3", "--channels", "4", "--quiet", "--out", str(out)]
    assert main(args) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    del state["split_sizes"]  # as a checkpoint from before the digits had a test part
    torch.save(state, out / "checkpoint.pt")
    capsys.readouterr()
    assert main(["search", "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "the checkpoint was made on other data splits" in err and len(err.strip().splitlines()) == 1
