"""MONAS: the rewards against their formulas, REINFORCE on a bandit, the controller's decisions, the latency table,
and an exact resume of a search."""
from __future__ import annotations

import json
import math

import pytest
import torch

from snas_fast.cli import main
from snas_fast.search.controller import Controller, Reinforce
from snas_fast.search.monas import Monas, MonasConfig, MonasError
from snas_fast.search.rewards import RewardSettings, constrained, mixed, mnas, reward
from snas_fast.spaces import get_space
from snas_fast.spaces.darts.genotypes import Genotype
from snas_fast.spaces.darts.latency import LatencyTable


# -- rewards -------------------------------------------------------------------------------------------------------
def test_each_reward_is_its_formula():
    assert mixed(0.8, 300.0, a=0.9, cost_ref=200.0) == pytest.approx(0.9 * 0.8 - 0.1 * 1.5)
    assert mixed(0.8, 300.0, a=1.0, cost_ref=200.0) == pytest.approx(0.8)
    assert constrained(0.8, 150.0, budget=200.0, p=2.0) == 0.8  # within the budget: accuracy alone
    assert constrained(0.8, 300.0, budget=200.0, p=2.0) == pytest.approx(0.8 - 2.0 * 0.5)
    assert mnas(0.8, 300.0, target=200.0) == pytest.approx(0.8 * 1.5 ** -0.07)
    assert mnas(0.8, 100.0, target=200.0, w=-0.5) == pytest.approx(0.8 * 0.5 ** -0.5)
    settings = RewardSettings("constrained", budget=200.0, p=2.0)
    assert reward(settings, 0.8, 300.0) == constrained(0.8, 300.0, 200.0, 2.0)


@pytest.mark.parametrize("call,message", [
    (lambda: mixed(0.5, 1.0, a=1.5, cost_ref=1.0), "a: expected a weight in [0, 1], got 1.5"),
    (lambda: mixed(0.5, 1.0, a=0.5, cost_ref=0.0), "cost_ref: expected a number > 0, got 0.0"),
    (lambda: constrained(0.5, -1.0, budget=1.0, p=1.0), "cost: expected a number >= 0.0, got -1.0"),
    (lambda: mnas(0.5, 1.0, target=float("nan")), "target: expected a finite number, got nan"),
    (lambda: reward(RewardSettings("energy"), 0.5, 1.0), "reward: expected one of mixed, constrained, mnas"),
])
def test_reward_arguments_are_checked(call, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call()


# -- controller ----------------------------------------------------------------------------------------------------
def test_reinforce_on_a_two_armed_bandit_converges_to_the_better_arm():
    torch.manual_seed(0)
    controller = Controller([2], hidden=16)
    learner = Reinforce(controller, lr=0.05)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        choices, log_p, entropy = controller.sample(gen)
        learner.step([0.2, 0.8][choices[0]], log_p, entropy)
    p_better = controller.evaluate([1])[1].exp().item()
    assert p_better > 0.95 and controller.greedy() == [1]


def test_controller_log_prob_is_the_sum_of_its_decisions():
    torch.manual_seed(1)
    controller = Controller([3, 2, 4], hidden=8)
    choices, log_p, entropy = controller.sample(torch.Generator().manual_seed(3))
    again = controller.evaluate(choices)
    assert again[0] == choices and torch.allclose(again[1], log_p) and torch.allclose(again[2], entropy)
    # the probabilities of every sequence add up to 1
    total = sum(controller.evaluate([a, b, c])[1].exp().item() for a in range(3) for b in range(2) for c in range(4))
    assert total == pytest.approx(1.0, abs=1e-5)


def test_decisions_make_every_top2_and_edge_all_cell():
    from snas_fast.spaces.darts import DartsSpace

    space = get_space("darts")
    sizes = tuple(d.size for d in space.decisions())
    assert len(sizes) == 32 and sizes[:8] == (2, 7, 1, 7, 3, 7, 2, 7)
    assert space.decisions()[1].name == "normal.node2.op1" and space.decisions()[1].options[0] == "max_pool_3x3"
    # node 2: first input 1, sep_conv_3x3; second input among the others (only 0), skip_connect
    ops = [op for op in space.op_names if op != "none"]
    choices = [1, ops.index("sep_conv_3x3"), 0, ops.index("skip_connect")] + [0] * 12 + [0] * 16
    g = space.from_choices(choices)
    assert g.normal[:2] == (("sep_conv_3x3", 1), ("skip_connect", 0))
    assert {j for _, j in g.normal[2:4]} == {0, 1}
    assert space.to_choices(g) == tuple(choices)
    edge_all = DartsSpace(form="edge_all")
    assert len(edge_all.decisions()) == 28 and len(edge_all.from_choices([0] * 28).normal) == 14
    with pytest.raises(ValueError, match=r"choices\[0\]: expected an index in 0..1, got 2"):
        space.from_choices([2] + [0] * 31)


# -- latency table -------------------------------------------------------------------------------------------------
def test_latency_table_round_trips_and_refuses_another_network(tmp_path):
    out = tmp_path / "table.json"
    assert main(["latency-table", "--channels", "4", "--layers", "3", "--repeats", "2", "--warmup", "0",
                 "--batch-size", "4", "--check", "3", "--out", str(out), "--quiet"]) == 0
    table = LatencyTable.load(str(out))
    assert table.normal.shape == (1, 14, 8) and table.reduce.shape == (2, 14, 8) and (table.normal >= 0).all()
    assert table.channels == 4 and table.torch_version == torch.__version__ and table.device == "cpu"
    check = json.load(open(tmp_path / "table.check.json"))
    assert check["children"] == 3 and -1 <= check["pearson_r"] <= 1 and check["mape"] >= 0
    g = Genotype.from_dict(check["rows"][0]["genotype"])
    assert table.predict(g) == pytest.approx(check["rows"][0]["predicted_ms"])
    assert LatencyTable.from_dict(table.to_dict()).predict(g) == table.predict(g)
    # a MONAS search of another network shape refuses the table, in one line
    config = MonasConfig(out=str(tmp_path / "m"), epochs=1, layers=5, channels=4, data_limit=64,
                         objective="latency", latency_table=str(out))
    with pytest.raises(MonasError, match="measured for layers 3, this network has 5"):
        Monas().run(config, config.load_data(), progress=False)
    assert not (tmp_path / "m" / "checkpoint.pt").exists()


# -- the search ----------------------------------------------------------------------------------------------------
TINY = dict(epochs=2, layers=3, channels=4, data_limit=96, batch_size=32, controller_steps=4, archs=3)


def test_monas_resume_is_exact(tmp_path):
    whole = MonasConfig(out=str(tmp_path / "whole"), **TINY)
    a = Monas().run(whole, whole.load_data(), progress=False)
    assert len(a.rewards) == 8 and all(math.isfinite(r["reward"]) for r in a.rewards)

    class Stop(Exception):
        pass

    def stop_after_first_epoch(end):
        raise Stop  # after the epoch's checkpoint, as Ctrl-C would

    cut = MonasConfig(out=str(tmp_path / "cut"), **TINY)
    with pytest.raises(Stop):
        Monas().run(cut, cut.load_data(), progress=False, callbacks=[stop_after_first_epoch])
    b = Monas().run(cut, cut.load_data(), resume=True, progress=False)
    assert [r["reward"] for r in b.rewards] == [r["reward"] for r in a.rewards]
    assert b.genotype == a.genotype
    state_a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["reinforce"]["controller"]
    state_b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["reinforce"]["controller"]
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


@pytest.mark.parametrize("settings,message", [
    (dict(objective="energy"), "objective: expected one of params, flops, mac, latency, got 'energy'"),
    (dict(objective="latency"), "latency_table: objective latency needs a table"),
    (dict(a=2.0), r"a: expected a weight in \[0, 1\], got 2.0"),
    (dict(reward="x"), "reward: expected one of mixed, constrained, mnas, got 'x'"),
    (dict(cost_ref=-1.0), "cost_ref: expected a number > 0, got -1.0"),
    (dict(controller_steps=0), "controller_steps: expected an integer >= 1, got 0"),
])
def test_monas_bad_settings_are_one_line(settings, message):
    with pytest.raises(MonasError, match=message):
        MonasConfig(**settings).validate()


# -- Pareto fronts -------------------------------------------------------------------------------------------------
def test_non_dominated_equals_brute_force_on_random_points():
    from snas_fast.pareto import non_dominated

    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        pts = [(float(c), float(a)) for c, a in torch.randint(0, 6, (15, 2), generator=gen).tolist()]
        brute = []
        for i, (c, a) in enumerate(pts):
            beaten = False
            for j, (c2, a2) in enumerate(pts):
                if j != i and c2 <= c and a2 >= a and (c2, a2) != (c, a):
                    beaten = True
            brute.append(not beaten)
        assert non_dominated(pts) == brute


def test_hypervolume_of_a_hand_computed_case():
    from snas_fast.pareto import hypervolume

    # ref (10, 0): (2, 5) dominates 8 x 5 = 40; (6, 8) adds 4 x 3 = 12; (7, 4) is dominated; (12, 9) is beyond ref
    assert hypervolume([(2, 5), (6, 8), (7, 4), (12, 9)], (10, 0)) == pytest.approx(52.0)
    assert hypervolume([(2, 5)], (2, 5)) == 0.0
    assert hypervolume([], (1, 1)) == 0.0


def test_pareto_command_writes_the_front(tmp_path):
    out = tmp_path / "front"
    assert main(["pareto", "--strategies", "snas,monas,random", "--lambdas", "0,0.02", "--mixes", "1,0.5",
                 "--random-points", "2", "--data-limit", "64", "--search-epochs", "1", "--epochs", "1", "--layers",
                 "3", "--channels", "4", "--search-layers", "3", "--search-channels", "4", "--out", str(out),
                 "--quiet"]) == 0
    import csv

    rows = list(csv.DictReader(open(out / "pareto.csv")))
    assert sorted((r["method"], r["setting"]) for r in rows) == [
        ("monas", "a=0.5"), ("monas", "a=1"), ("random", "0"), ("random", "1"), ("snas", "lambda=0"),
        ("snas", "lambda=0.02")]
    assert all(float(r["cost"]) > 0 for r in rows) and any(r["on_front"] == "True" for r in rows)
    assert (out / "pareto.png").exists() and "hypervolume" in (out / "pareto.md").read_text()
    monas = json.load(open(out / "monas@a=0.5" / "seed0" / "search" / "config.json"))
    assert monas["a"] == 0.5 and monas["layers"] == 3 and monas["objective"] == "mac"


@pytest.mark.parametrize("flags,message", [
    (["--strategies", "snas,rsws"], "strategies: expected a comma-separated subset of snas, monas, random"),
    (["--mixes", "0.5,2"], "mixes: expected comma-separated numbers >= 0 and <= 1, got '0.5,2'"),
    (["--lambdas", "x"], "lambdas: expected comma-separated numbers >= 0, got 'x'"),
    (["--objective", "latency"], "latency_table: objective latency needs a table"),
])
def test_pareto_bad_arguments_are_one_line_and_write_nothing(tmp_path, capsys, flags, message):
    out = tmp_path / "front"
    assert main(["pareto", *flags, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_expected_latency_is_z_dot_lat_and_differentiable_and_snas_searches_on_it(tmp_path):
    from snas_fast.search.snas import SearchConfig, search
    from snas_fast.spaces.darts.latency import expected_latency, latency_penalty, measure

    table = measure(4, 3, 8, in_channels=1, batch=4, repeats=1, warmup=0)
    z_n = torch.softmax(torch.randn(14, 8, dtype=torch.float64), -1).requires_grad_()
    z_r = torch.softmax(torch.randn(2, 14, 8, dtype=torch.float64), -1)
    e = expected_latency(z_n, z_r, table.normal, table.reduce)
    by_hand = sum((z_n * table.normal[i]).sum() for i in range(1)) + sum((z_r[i] * table.reduce[i]).sum()
                                                                          for i in range(2))
    assert torch.allclose(e, by_hand)
    e.backward()
    assert torch.allclose(z_n.grad, table.normal.sum(0))
    uniform = torch.full((14, 8), 1 / 8, dtype=torch.float64)
    assert latency_penalty(uniform, uniform, table.normal, table.reduce).item() == pytest.approx(1.0)
    path = tmp_path / "t.json"
    table.save(str(path))
    config = SearchConfig(epochs=1, layers=3, channels=4, data_limit=64, penalty="latency", latency_table=str(path),
                          out=str(tmp_path / "s"))
    search(config, config.load_data(), progress=False)
    row = json.loads((tmp_path / "s" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.5 < row["penalty"] < 2.0  # E[lat] over its uniform value, near 1 while log_alpha is near uniform


def test_monas_children_trained_from_scratch(tmp_path):
    """--child-train-epochs: each child's accuracy is its own short training (MONAS's protocol), kept on disk."""
    config = MonasConfig(out=str(tmp_path / "m"), **dict(TINY, epochs=1, controller_steps=2, archs=1),
                         child_train_epochs=1)
    result = Monas().run(config, config.load_data(), progress=False)
    trained = sorted(p.name for p in (tmp_path / "m" / "children").iterdir())
    assert trained[:2] == ["e000s000", "e000s001"] and all(
        (tmp_path / "m" / "children" / t / "summary.json").exists() for t in trained)
    assert [r["acc"] for r in result.rewards] == [
        json.load(open(tmp_path / "m" / "children" / t / "summary.json"))["test_acc"] for t in trained[:2]]
