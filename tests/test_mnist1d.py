"""MNIST-1D and the darts1d space: the data generated offline in three disjoint parts, the 1-D candidates (shapes,
live-weight costs, the fused edge equal to eager), the published references at their published sizes, a search
that moves, and the ground-truth sample (resumable, its CSV read back without running anything)."""
from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest
import torch

from snas_fast import data as datasets
from snas_fast.cli import main
from snas_fast.spaces import count_module, get_space


def bound(**settings):
    from types import SimpleNamespace

    return get_space("darts1d").configure(SimpleNamespace(**settings), datasets.load("mnist1d", limit=8)[2])


# ----------------------------------------------------------------------------------------------------------------
# The data
# ----------------------------------------------------------------------------------------------------------------
def test_mnist1d_is_generated_without_the_network(monkeypatch):
    from snas_fast.data import mnist1d

    def no_network(*args, **kwargs):
        raise AssertionError("mnist1d touched the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    mnist1d.mnist1d_arrays.cache_clear()
    x, y, x_test, y_test = mnist1d.mnist1d_arrays()
    assert x.shape == (4000, 40) and x_test.shape == (1000, 40) and y.shape == (4000,) and y_test.shape == (1000,)
    assert set(np.unique(y)) == set(range(10)) and abs(float(x.mean())) < 0.05  # standardised by the package


def test_mnist1d_parts_are_disjoint_stratified_and_the_test_part_is_the_published_one():
    train, val, info = datasets.load("mnist1d", seed=3)
    assert info.image_shape == (1, 40) and info.num_classes == 10 and info.in_channels == 1
    assert train.tensors[0].shape == (2000, 1, 1, 40) and len(val) == 2000
    again_train, _, _ = datasets.load("mnist1d", seed=3)
    other_train, _, _ = datasets.load("mnist1d", seed=4)
    assert torch.equal(train.tensors[0], again_train.tensors[0])
    assert not torch.equal(train.tensors[0], other_train.tensors[0])
    counts = torch.bincount(train.tensors[1], minlength=10)
    assert int(counts.max() - counts.min()) <= 10  # stratified: the classes' 394..411 halved
    full, test, _ = datasets.load("mnist1d", split="train_test")
    assert len(full) == 4000 and len(test) == 1000
    rows = {tuple(r) for r in full.tensors[0].flatten(1).tolist()}
    assert all(tuple(r) in rows for r in train.tensors[0].flatten(1).tolist()[:50])  # search parts: of the 4000
    assert not any(tuple(r) in rows for r in test.tensors[0].flatten(1).tolist())  # the test part: none of them


# ----------------------------------------------------------------------------------------------------------------
# The space
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stride", [1, 2])
def test_every_1d_candidate_keeps_one_row_and_costs_its_live_weights(stride):
    space = bound()
    for p in space.primitives:
        if p.name == "none":
            continue
        module = p.build(8, stride, True)
        out = module(torch.randn(2, 8, 1, 40))
        assert out.shape == (2, 8, 1, 40 // stride), p.name
        assert tuple(p.costs(8, 1, 40, stride, True)) == tuple(count_module(module, (8, 1, 40))), p.name
    sep = space.primitive("sep_conv_1x3").build(8, 1, False)
    assert sum(m.weight.numel() for m in sep.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 8) == 2 * 8 * 3


def test_the_1d_factorized_reduce_reads_both_halves_of_the_row():
    from snas_fast.spaces.darts.operations import FactorizedReduce

    fr = FactorizedReduce(4, 4, affine=False, one_row=True).eval()
    x = torch.randn(3, 4, 1, 9)
    out = fr(x)
    assert out.shape == (3, 4, 1, 5)
    assert out[:, 2:].abs().sum() > 0 and not torch.equal(out[:, :2], out[:, 2:])  # the shifted half is not padding
    two_d = FactorizedReduce(4, 4, affine=False).eval()
    two_d.load_state_dict(fr.state_dict())
    assert torch.equal(two_d(torch.ones(1, 4, 1, 8))[:, 2:], torch.zeros(1, 2, 1, 4))  # what 2-D would do here


def test_the_1d_supernet_fused_equals_eager_in_float64():
    space = bound(layers=3, channels=4)
    x = torch.randn(6, 1, 1, 40, dtype=torch.float64)
    grads = {}
    for mixed in ("fused", "eager"):
        torch.manual_seed(0)
        space.mixed = mixed
        model = space.supernet().double()
        weights = [torch.softmax(a.detach() + torch.randn_like(a), -1).requires_grad_() for a in
                   model.arch_parameters()]
        out = model.run_arch(x, weights)
        out.square().sum().backward()
        grads[mixed] = (out.detach(), [w.grad for w in weights], [p.grad for p in model.parameters()
                                                                   if p.grad is not None])
    (o1, w1, p1), (o2, w2, p2) = grads["fused"], grads["eager"]
    torch.testing.assert_close(o1, o2, rtol=1e-9, atol=1e-9)
    for a, b in zip(w1 + p1, w2 + p2):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)


def test_darts1d_refuses_images_of_more_than_one_row():
    from types import SimpleNamespace

    with pytest.raises(ValueError, match=r"dataset: space darts1d takes one-row images .*got digits of 8x8"):
        get_space("darts1d").configure(SimpleNamespace(), datasets.load("digits", limit=4)[2])


@pytest.mark.parametrize("name,params", [("logistic", 410), ("mlp", 15210), ("convbase", 5210), ("gru", 5134)])
def test_the_references_have_their_published_parameter_counts(name, params):
    space = bound()
    model = space.baseline(name, space.baseline_width(name), 1)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(5, 1, 1, 40)).shape == (5, 10)


def test_train_a_reference_through_the_cli(tmp_path, capsys):
    out = tmp_path / "conv"
    assert main(["train", "--space", "darts1d", "--baseline", "convbase", "--epochs", "2", "--data-limit", "400",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.load(open(out / "summary.json"))
    assert summary["params"] == 5210 and summary["width"] == 25
    assert summary["test_acc"] > 0.15  # above chance after 8 steps of Adam at 1e-2
    config = json.load(open(out / "config.json"))
    assert (config["optimizer"], config["lr"], config["batch_size"], config["dataset"]) == ("adam", 0.01, 100,
                                                                                            "mnist1d")


# ----------------------------------------------------------------------------------------------------------------
# The ground truth
# ----------------------------------------------------------------------------------------------------------------
def test_groundtruth_trains_its_sample_resumes_and_writes_a_csv_that_reads_back(tmp_path, monkeypatch):
    from snas_fast import groundtruth as gt
    from snas_fast import compare as retrain  # the trainings go through compare.retrain_row

    out = tmp_path / "gt"
    tiny = ["groundtruth", "--space", "darts1d", "--archs", "3", "--seeds", "2", "--seeded-archs", "1", "--epochs",
            "1", "--layers", "2", "--channels", "4", "--data-limit", "64", "--out", str(out), "--quiet"]
    real_train, trained = retrain.train, []

    def stop_at_the_third(config, *args, **kw):
        if len(trained) == 2:
            raise KeyboardInterrupt
        trained.append(config.out)
        return real_train(config, *args, **kw)

    monkeypatch.setattr(retrain, "train", stop_at_the_third)
    assert main(tiny) == 130
    assert len(list((out / "cells").iterdir())) == 2
    finished = list(trained)
    monkeypatch.setattr(retrain, "train", lambda config, *args, **kw: trained.append(config.out) or real_train(
        config, *args, **kw))
    assert main(["groundtruth", "--resume", str(out), "--quiet"]) == 0
    assert len(trained) == 4 and not set(trained[2:]) & set(finished)  # the finished two are read back
    header, rows = gt.read_groundtruth(str(out / "groundtruth.csv"))
    assert [(r["arch"], r["seed"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (2, 0)]
    assert header["space"] == "darts1d" and header["torch"] == torch.__version__ and "epochs=1" in header["recipe"]
    space = bound(layers=2, channels=4)
    drawn = gt.sample_archs(space, 3, 0)
    assert [space.from_dict(r["genotype"]) for r in rows[1:]] == drawn
    assert all(0.0 <= r["test_acc"] <= 1.0 and r["seconds"] > 0 and r["params"] > 0 for r in rows)
    means = gt.arch_means(rows)
    assert [m["seeds"] for m in means] == [2, 1, 1]
    assert "3 architectures, 4 trainings" in (out / "groundtruth.md").read_text()


def test_groundtruth_csv_errors_name_the_file_and_row(tmp_path):
    from snas_fast.groundtruth import GroundTruthError, percentile, read_groundtruth

    bad = tmp_path / "bad.csv"
    bad.write_text("# space: darts1d\narch,seed,test_acc,params,flops,seconds,genotype\n0,0,zero,1,1,1,{}\n")
    with pytest.raises(GroundTruthError, match=r"bad.csv: data row 1: could not convert string to float: 'zero'"):
        read_groundtruth(str(bad))
    bad.write_text("arch,seed\n0,0\n")
    with pytest.raises(GroundTruthError, match="expected the columns arch, seed, test_acc"):
        read_groundtruth(str(bad))
    pickled = tmp_path / "p.csv"
    pickled.write_bytes(b"\x80\x04\x95")
    with pytest.raises(GroundTruthError, match="cannot read"):
        read_groundtruth(str(pickled))
    assert percentile(0.5, [0.1, 0.2, 0.6, 0.7]) == 50.0 and percentile(0.6, [0.1, 0.6]) == 75.0
    assert math.isnan(percentile(0.5, []))


def test_rank_against_a_ground_truth_reports_every_proxy_with_an_interval(tmp_path, capsys):
    import csv

    from scipy import stats

    from snas_fast.groundtruth import arch_means, read_groundtruth
    from snas_fast.rank import rank_correlations

    gt = tmp_path / "gt"
    small = ["--layers", "3", "--channels", "4", "--data-limit", "64", "--epochs", "1"]
    assert main(["groundtruth", "--space", "darts1d", "--archs", "4", *small, "--out", str(gt), "--quiet"]) == 0
    csv_path = str(gt / "groundtruth.csv")
    out = tmp_path / "rank"
    assert main(["rank", "--space", "darts1d", "--groundtruth", csv_path, *small, "--search-epochs", "1", "--out",
                 str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(open(out / "rank.csv")))
    truth = [m["test_acc"] for m in arch_means(read_groundtruth(csv_path)[1])]
    assert [float(r["groundtruth"]) for r in rows] == pytest.approx(truth)
    table = json.load(open(out / "correlations.json"))
    assert set(table) == {"naswot", "rsws", "snas", "trained"}
    for proxy, t in table.items():
        assert (out / f"{proxy}_vs_groundtruth.png").exists()
        tau = stats.kendalltau([float(r[proxy]) for r in rows], truth).statistic
        assert (math.isnan(tau) and math.isnan(t["kendall_tau"])) or t["kendall_tau"] == pytest.approx(tau)
    assert "95 % bootstrap interval" in (out / "rank.md").read_text()
    capsys.readouterr()
    assert main(["rank", "--space", "darts", "--groundtruth", csv_path, "--out", str(tmp_path / "no"), "--quiet"]) == 2
    assert "is a sample of space darts1d, the ranking's space is darts" in capsys.readouterr().err
    proxy, reference = [0.1, 0.4, 0.35, 0.8, 0.7, 0.9, 0.2, 0.5], [0.2, 0.3, 0.5, 0.7, 0.9, 0.8, 0.1, 0.4]
    got = rank_correlations(proxy, reference, resamples=200, seed=1)
    assert got["kendall_tau_low"] <= got["kendall_tau"] <= got["kendall_tau_high"] <= 1.0
    assert got["spearman_rho_low"] <= got["spearman_rho"] <= got["spearman_rho_high"] <= 1.0
    assert rank_correlations(proxy, reference, resamples=200, seed=1) == got  # seeded


def test_compare_on_mnist1d_trains_the_references_and_places_every_row_in_the_ground_truth(tmp_path, capsys):
    import csv

    from snas_fast.groundtruth import arch_means, percentile, read_groundtruth

    small = ["--layers", "2", "--channels", "4", "--data-limit", "64", "--epochs", "1"]
    gt = tmp_path / "gt"
    assert main(["groundtruth", "--space", "darts1d", "--archs", "3", *small, "--out", str(gt), "--quiet"]) == 0
    truth = [m["test_acc"] for m in arch_means(read_groundtruth(str(gt / "groundtruth.csv"))[1])]
    out = tmp_path / "cmp"
    assert main(["compare", "--space", "darts1d", "--strategies", "random", "--random-archs", "2", "--random-epochs",
                 "1", "--seeds", "1", "--baselines", "logistic,convbase", "--baseline-epochs", "2", "--groundtruth",
                 str(gt / "groundtruth.csv"), *small, "--out", str(out), "--quiet"]) == 0
    rows = {r["strategy"]: r for r in csv.DictReader(open(out / "leaderboard.csv"))}
    assert set(rows) == {"random", "baseline:logistic", "baseline:convbase"}
    assert int(rows["baseline:convbase"]["params"]) == 5210 and int(rows["baseline:logistic"]["params"]) == 410
    assert json.loads(rows["baseline:convbase"]["genotype"]) == {"baseline": "convbase", "epochs": 2}
    for r in rows.values():
        assert float(r["percentile"]) == pytest.approx(percentile(float(r["test_acc"]), truth))
    board = (out / "leaderboard.md").read_text()
    assert "random architectures (ground truth) | 3 architectures" in board and "ground-truth percentile" in board
    capsys.readouterr()
    assert main(["compare", "--space", "darts1d", "--baselines", "resnet", "--out", str(tmp_path / "no")]) == 2
    assert "baselines: space darts1d has the baselines convbase, mlp, gru, logistic, got 'resnet'" in \
        capsys.readouterr().err
