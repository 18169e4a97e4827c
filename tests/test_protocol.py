"""Any strategy on any space: the search-space protocol on every built-in space, a tabular space and a strategy
written here (in a test file, touching no package file) running through the command line, and the strategy x space
matrix: every pair the protocol allows runs on tiny data, every other is refused in one line before anything runs."""
from __future__ import annotations

import json
import math

import pytest
import torch

from snas_fast import data as datasets
from snas_fast.cli import main
from snas_fast.compare import matrix
from snas_fast.search.base import CandidateSearch
from snas_fast.search.random import RandomConfig
from snas_fast.search.registry import get_strategy, register_strategy, strategy_names
from snas_fast.spaces import Decision, SearchSpace, get_space, register_space, space_names

BUILT_IN = ("darts", "darts1d", "gnn", "morph")


# ----------------------------------------------------------------------------------------------------------------
# A tabular space, written here: three decisions of four options; the "table" is a known function of them
# ----------------------------------------------------------------------------------------------------------------
class TableSpace(SearchSpace):
    """Architectures are tuples of ``n`` option indices (4 options each); ``valid`` peaks at ``target`` (default all
    3s: a smooth bowl), ``test`` is it minus a constant (the report's metric differs from the search's)."""

    name = "table"
    data_kind = None

    def __init__(self, n: int = 3, target=None):
        self.n, self.target = n, tuple(target or (3,) * n)

    def decisions(self):
        return tuple(Decision(f"d{i}", ("a", "b", "c", "d")) for i in range(self.n))

    def from_choices(self, choices):
        return tuple(int(c) for c in choices)

    def to_choices(self, arch):
        return tuple(arch)

    def to_dict(self, arch):
        return {"space": self.name, "choices": list(arch)}

    def from_dict(self, d):
        return tuple(self.check_tag(d)["choices"])

    def query(self, arch, metric="valid"):
        value = 1.0 - sum((c - t) ** 2 for c, t in zip(arch, self.target)) / (9.0 * self.n)
        return value if metric == "valid" else value - 0.01


register_space("table", TableSpace)


class FirstChoices(CandidateSearch):
    """A strategy written here: option 0 of every decision, then option 1, ... (a sweep, no randomness)."""

    name = "sweep"
    config_class = RandomConfig
    needs = ("evaluate", "decisions")

    def propose(self, config, space, history, generator):
        k = len(history)
        return space.from_choices([min(k, d.size - 1) for d in space.decisions()])


register_strategy("sweep", FirstChoices)


def test_a_space_and_a_strategy_written_in_a_test_file_run_through_the_cli(tmp_path, capsys):
    assert "table" in space_names() and "sweep" in strategy_names()
    out = tmp_path / "evo"
    assert main(["search", "--space", "table", "--strategy", "evolution", "--archs", "12", "--out", str(out),
                 "--quiet"]) == 0
    scores = json.load(open(out / "scores.json"))
    assert len(scores) == 12 and all(s["genotype"]["space"] == "table" for s in scores)
    best = json.load(open(out / "genotype.json"))
    assert best["score"] == max(s["val_acc"] for s in scores) and best["source"] == "evolution"
    cmp = tmp_path / "cmp"
    assert main(["compare", "--space", "table", "--strategies", "sweep,random,bo", "--seeds", "1", "--random-archs",
                 "6", "--out", str(cmp), "--quiet"]) == 0
    rows = {r["strategy"]: r for r in csv_rows(cmp / "leaderboard.csv")}
    assert set(rows) == {"sweep", "random", "bo"}
    # the sweep's 6 candidates: (0,0,0) .. (3,3,3) then (3,3,3) again; its best is the table's optimum
    assert json.loads(rows["sweep"]["genotype"]) == {"space": "table", "choices": [3, 3, 3]}
    assert float(rows["sweep"]["test_acc"]) == pytest.approx(0.99)  # the table's test metric, not its valid one
    capsys.readouterr()
    assert main(["search", "--space", "table", "--strategy", "snas", "--out", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "snas-fast: error: space: snas needs data to train on: space table is tabular (no data to train on)"
    assert not (tmp_path / "no").exists()


def test_evolution_and_bo_beat_random_search_where_the_landscape_has_structure(tmp_path):
    """Six decisions of four options (4,096 architectures), a bowl around a hidden target drawn per seed; 30
    evaluations each. Deterministic: the seeds fix the targets and the searches."""
    best = {name: [] for name in ("random", "evolution", "bo")}
    for seed in range(5):
        target = torch.randint(4, (6,), generator=torch.Generator().manual_seed(100 + seed)).tolist()
        register_space(f"bowl{seed}", lambda target=target: TableSpace(6, target))
        for name in best:
            strategy = get_strategy(name)
            config = strategy.config_class(space=f"bowl{seed}", archs=30, seed=seed, out=str(tmp_path / name),
                                           overwrite=True)
            best[name].append(max(strategy.run(config, None, progress=False).scores))
    mean = {name: sum(v) / len(v) for name, v in best.items()}
    assert mean["evolution"] > mean["random"] and mean["bo"] > mean["random"], mean


def csv_rows(path):
    import csv

    with open(path) as f:
        yield from csv.DictReader(f)


# ----------------------------------------------------------------------------------------------------------------
# The protocol on every built-in space
# ----------------------------------------------------------------------------------------------------------------
def bound(name: str, **settings):
    from types import SimpleNamespace

    info = {"darts": datasets.load("digits", limit=8)[2], "darts1d": datasets.load("mnist1d", limit=8)[2],
            "gnn": datasets.load("karate")[2], "morph": datasets.load("digits", limit=8)[2]}[name]
    return get_space(name).configure(SimpleNamespace(**settings), info)


@pytest.mark.parametrize("name,settings", [("darts", {}), ("darts", dict(form="edge_all")), ("darts1d", {}),
                                           ("gnn", dict(nodes=3)), ("morph", dict(width=8))])
def test_the_protocol_holds_on_every_built_in_space(name, settings):
    space = bound(name, **settings)
    g = torch.Generator().manual_seed(0)
    archs = [space.sample(g) for _ in range(6)]
    for arch in archs:
        d = space.to_dict(arch)
        assert d["space"] == name and space.from_dict(json.loads(json.dumps(d))) == arch
        assert space.distance(arch, arch) == 0
        child = space.mutate(arch, g)
        assert child != arch  # a mutation changes the architecture
        assert space.costs(arch)["params"] > 0
        if space.decisions():
            choices = space.to_choices(arch)
            assert len(choices) == len(space.decisions()) and space.from_choices(choices) == arch
            assert sum(a != b for a, b in zip(choices, space.to_choices(child))) == 1  # one decision changed
            assert all(0 <= c < d.size for c, d in zip(choices, space.decisions()))
            assert space.encode(arch).shape == space.encode(archs[0]).shape  # fixed length
    other = next(s for s in BUILT_IN if s != name)
    foreign = bound(other).sample(torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=rf"expected a {name} .*got .*{other}") as error:
        space.from_dict(bound(other).to_dict(foreign))
    assert "\n" not in str(error.value)
    model = space.child(archs[0])
    assert sum(p.numel() for p in model.parameters()) > 0


def test_darts_encoding_counts_edges_and_the_sample_is_unchanged():
    from snas_fast.spaces.darts.genotypes import random_genotype

    space = bound("darts")
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = space.sample(g1)
    assert a == random_genotype(g2, space=get_space("darts"))  # the random baseline's draws, as before
    swapped = a.__class__(normal=(a.normal[1], a.normal[0]) + a.normal[2:], normal_concat=a.normal_concat,
                          reduce=a.reduce, reduce_concat=a.reduce_concat)
    assert space.encode(swapped).tolist() == space.encode(a).tolist()  # a node's two inputs in either order
    assert space.encode(a).shape == (2 * 14 * 8,)


def test_the_data_layer_knows_kinds_and_refuses_the_wrong_one(tmp_path, capsys):
    assert datasets.dataset_names("graphs") == ("digits-graph", "sbm-cluster", "sbm-edges", "sbm-keyed", "karate")
    assert datasets.kind_of("cifar10") == "images" and datasets.default_dataset("graphs") == "digits-graph"
    batch = datasets.batch_of(datasets.load("digits-graph", limit=4)[0], [0, 2])
    assert batch.num_graphs == 2
    with pytest.raises(ValueError, match="dataset: expected one of"):
        datasets.kind_of("mnist")
    assert main(["search", "--space", "darts", "--dataset", "karate", "--out", str(tmp_path / "x")]) == 2
    assert "dataset: expected one of digits, cifar10, mnist1d, got 'karate' (space darts)" in capsys.readouterr().err


def test_a_registered_dataset_is_a_dataset_of_its_kind(tmp_path, monkeypatch):
    from snas_fast.data.images import load_part

    monkeypatch.setattr(datasets, "DATASETS", dict(datasets.DATASETS))
    datasets.register_dataset("digits-again", "images", lambda name, *rest: load_part("digits", *rest))
    assert datasets.dataset_names("images")[-1] == "digits-again"
    RandomConfig(dataset="digits-again", out=str(tmp_path)).validate()
    with pytest.raises(RandomConfig.Error, match="dataset: expected one of digits-graph, sbm-cluster, sbm-edges, "
                                                 "sbm-keyed, karate, got 'digits-again'"):
        RandomConfig(space="gnn", dataset="digits-again", out=str(tmp_path)).validate()
    first, second, info = datasets.load("digits-again", limit=4)
    assert len(first) == 4 and info.num_classes == 10


# ----------------------------------------------------------------------------------------------------------------
# The matrix: every pair the protocol allows runs, the others are refused in one line
# ----------------------------------------------------------------------------------------------------------------
TINY = dict(epochs=1, search_epochs=1, archs=3, population=2, sample=1, initial=1, candidates=4, minibatches=1,
            top=1, controller_steps=1, batch_size=8, bn_recalibration=1, budget=0.02, models=2, pt_interval=0,
            seed=0, overwrite=True)
SPACE_TINY = {"darts": dict(dataset="digits", data_limit=16, batch_size=16, layers=3, channels=4),
              "darts1d": dict(dataset="mnist1d", data_limit=16, batch_size=16, layers=3, channels=4),
              "gnn": dict(dataset="karate", layers=1, channels=4, nodes=1),
              "morph": dict(dataset="digits", data_limit=16, batch_size=16, width=4, depth=1),
              "table": {}, "nbgraph": dict(dataset="citeseer")}
PAIRS = [(strategy, space) for strategy in ("snas", "darts", "snas-pt", "random", "rsws", "naswot", "monas",
                                            "evolution", "bo", "morph-bo", "morph-random", "morph-bfs")
         for space in BUILT_IN + ("table", "nbgraph")]


# snas-pt on darts trains a supernet, then takes every edge's perturbation (24 s): make test-all only.
_SLOW_PAIRS = {("snas-pt", "darts")}


@pytest.mark.parametrize("strategy_name,space_name", [
    pytest.param(a, b, id=f"{a}-{b}", marks=[pytest.mark.slow] if (a, b) in _SLOW_PAIRS else []) for a, b in PAIRS])
def test_every_strategy_runs_on_every_space_the_protocol_allows(tmp_path, strategy_name, space_name):
    import warnings

    strategy = get_strategy(strategy_name)
    space = get_space(space_name)
    cls = strategy.config_class
    fields = cls.__dataclass_fields__
    settings = {k: v for k, v in dict(TINY, **SPACE_TINY[space_name], space=space_name,
                                      out=str(tmp_path / "run")).items() if k in fields}
    if strategy_name == "snas-pt" and space_name not in ("table", "nbgraph"):
        settings["epochs"] = 1
    config = cls(**settings)
    why = strategy.refusal(space)
    if why is not None:
        assert "\n" not in why and why.startswith(f"{strategy_name} needs ") and f"space {space_name} " in why
        with pytest.raises(config.Error, match="space: " + why.replace("(", r"\(").replace(")", r"\)")):
            strategy.load_data(config)
        assert not (tmp_path / "run").exists()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = strategy.run(config, strategy.load_data(config), progress=False)
    bound_space = config.bound_space()
    arch = getattr(result, "genotype")
    assert bound_space.from_dict(json.loads(json.dumps(bound_space.to_dict(arch)))) == arch
    score = float(getattr(result, "score", math.nan))
    assert not math.isnan(score) or strategy_name.startswith("morph")


def test_the_readme_shows_the_matrix_of_the_registries():
    import pathlib

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    assert matrix(BUILT_IN + ("nbgraph",), [n for n in strategy_names() if n != "sweep"]) in readme


def test_a_candidate_search_resumes_without_retraining_and_proposes_what_it_would_have(tmp_path, monkeypatch, capsys):
    from snas_fast.search import evaluators

    tiny = ["--strategy", "evolution", "--dataset", "digits", "--data-limit", "16", "--batch-size", "16", "--layers",
            "3", "--channels", "4", "--epochs", "1", "--archs", "4", "--population", "2", "--sample", "1", "--quiet"]
    straight = tmp_path / "straight"
    assert main(["search", *tiny, "--out", str(straight)]) == 0
    original = evaluators.TrainedEvaluator.trained_score
    trained = []

    def stop_at_the_third(self, arch, name, callbacks=()):
        if name == "candidate_002":
            raise KeyboardInterrupt
        trained.append(name)
        return original(self, arch, name, callbacks)

    monkeypatch.setattr(evaluators.TrainedEvaluator, "trained_score", stop_at_the_third)
    interrupted = tmp_path / "interrupted"
    assert main(["search", *tiny, "--out", str(interrupted)]) == 130
    assert "the trained networks are saved: resume with" in capsys.readouterr().err
    assert trained == ["candidate_000", "candidate_001"]

    def no_retraining(config, *args, **kw):
        assert config.out.endswith(("candidate_002", "candidate_003")), config.out
        return real_train(config, *args, **kw)

    from snas_fast.engine import retrain

    real_train = retrain.train
    monkeypatch.setattr(evaluators.TrainedEvaluator, "trained_score", original)
    monkeypatch.setattr(retrain, "train", no_retraining)
    assert main(["search", "--resume", str(interrupted), "--quiet"]) == 0  # the strategy from its config.json
    assert json.load(open(interrupted / "scores.json")) == json.load(open(straight / "scores.json"))
    assert json.load(open(interrupted / "config.json"))["strategy"] == "evolution"


@pytest.mark.parametrize("strategy_name", [n for n, _ in PAIRS[::4]])
def test_every_strategy_lists_the_flags_of_every_space(strategy_name, capsys):
    for space in BUILT_IN:
        with pytest.raises(SystemExit) as exit_:
            main(["search", "--strategy", strategy_name, "--space", space, "--help"])
        assert exit_.value.code == 0, (strategy_name, space)
        shown = capsys.readouterr().out
        assert ("--nodes" in shown) == (space == "gnn") and ("--max-params" in shown) == (space == "morph")
        assert ("--pool-bn" in shown) == (space.startswith("darts") and get_strategy(strategy_name).missing(get_space(space))
                                          is None and "supernet" in get_strategy(strategy_name).needs)
