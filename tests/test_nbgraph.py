"""NAS-Bench-Graph as a tabular space: the package's tables read without running anything from them, the table key
of every raw architecture, the protocol, the benchmark's anytime protocol (a strategy never sees a test value) and
its published cross-check (random search over 100 distinct architectures on Cora: about 79.9 % test accuracy)."""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
import pickletools
import statistics
import warnings
from types import SimpleNamespace

import pytest
import torch

from snas_fast.cli import main
from snas_fast.data.tables import TableError, load_float_table
from snas_fast.spaces import get_space

nbg = pytest.importorskip("nas_bench_graph")
from nas_bench_graph import architecture  # noqa: E402  (the package itself: the reference)
from snas_fast.spaces.nbgraph.space import DATASETS, NbArch, table_key, table_path  # noqa: E402

RAW_LINKS = [(0, a, b, c) for a in range(2) for b in range(3) for c in range(4)]  # link[i] <= i: 24 lists


def space_of(dataset="cora"):
    return get_space("nbgraph").configure(SimpleNamespace(dataset=dataset))


# ----------------------------------------------------------------------------------------------------------------
# The tables: read by a loader that runs nothing
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["cora", "proteins"])
def test_the_restricted_loader_reads_what_pickle_reads(dataset):
    path = table_path(dataset)
    table = load_float_table(path)
    with open(path, "rb") as f:
        reference = pickle.load(f)  # the package's own way (trusted here: the reference of the test)
    assert table.keys() == reference.keys() and len(table) == (2021 if dataset == "proteins" else 26206)
    assert all(table[k] == {f: float(v) for f, v in reference[k].items()} for k in reference)
    assert all(type(v) is float for row in table.values() for v in row.values())


class _Payload:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_crafted_table_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.bench"
    path.write_bytes(pickle.dumps({0: {"valid_perf": 0.5, "x": _Payload(f"touch {marker}")}}, protocol=3))
    with pytest.raises(TableError, match=r"evil.bench: .*names (posix|os)\.system, which a table may not") as error:
        load_float_table(str(path))
    assert "\n" not in str(error.value) and not marker.exists()
    for bad, why in [(pickle.dumps([1.0, 2.0]), "expected a dict from integer keys"),
                     (b"not a pickle", "not a table of floats"),
                     (pickle.dumps({0: {"a": "text"}}), "expected a dict from integer keys")]:
        path.write_bytes(bad)
        with pytest.raises(TableError, match=why):
            load_float_table(str(path))
    with pytest.raises(TableError, match="no such table file"):
        load_float_table(str(tmp_path / "missing.bench"))


def test_the_tables_name_only_numpys_float64_globals():
    with open(table_path("cora"), "rb") as f:
        data = f.read()
    globals_ = {arg for op, arg, _ in pickletools.genops(io.BytesIO(data)) if op.name == "GLOBAL"}
    assert globals_ == {"numpy.core.multiarray scalar", "numpy dtype"}


# ----------------------------------------------------------------------------------------------------------------
# The key of every raw architecture
# ----------------------------------------------------------------------------------------------------------------
def test_every_raw_architecture_has_its_row_and_the_keys_are_the_table():
    names = architecture.gnn_list
    keys = set()
    count = 0
    for link in RAW_LINKS:
        for a in names:
            for b in names:
                for c in names:
                    for d in names:
                        if a == b == c == d == "skip":
                            continue
                        key = table_key(link, (a, b, c, d))
                        assert key == architecture.Arch(list(link), [a, b, c, d]).valid_hash()
                        keys.add(key)
                        count += 1
    assert count == 157440
    assert keys == set(load_float_table(table_path("cora")))  # 26,206 rows, each reached
    assert len(keys) == 26206


def test_isomorphic_architectures_share_a_row_and_a_row_decodes_to_itself():
    space = space_of()
    # node 2 and node 3 both read the input: swapping them is the same network
    assert space.key(NbArch((0, 0, 1, 1), ("gcn", "gat", "sage", "fc"))) == \
        space.key(NbArch((0, 0, 2, 2), ("gat", "gcn", "sage", "fc")))
    rows = space.tabulated()
    assert len(rows) == 26206 and len({space.key(a) for a in rows}) == 26206
    assert [space.key(a) for a in rows] == sorted(load_float_table(table_path("cora")))
    proteins = space_of("proteins")
    assert len(proteins.tabulated()) == 2021 and all(set(a.ops) <= set(proteins.ops) for a in proteins.tabulated())


# ----------------------------------------------------------------------------------------------------------------
# The protocol
# ----------------------------------------------------------------------------------------------------------------
def test_the_protocol_holds_on_nbgraph():
    space = space_of("citeseer")
    g = torch.Generator().manual_seed(0)
    assert [d.size for d in space.decisions()] == [9, 9, 9, 9, 9]
    for _ in range(50):
        arch = space.sample(g)
        assert not all(op == "skip" for op in arch.ops)
        assert space.from_dict(json.loads(json.dumps(space.to_dict(arch)))) == arch
        assert space.from_choices(space.to_choices(arch)) == arch
        child = space.mutate(arch, g)
        assert sum(a != b for a, b in zip(space.to_choices(arch), space.to_choices(child))) == 1
        assert 0 < space.query(arch, "valid") <= 1 and 0 < space.query(arch, "test") <= 1
        costs = space.costs(arch)
        assert costs["params"] > 0 and costs["latency"] > 0
    assert space.encode(arch).shape == (45,)
    assert [d.size for d in space_of("proteins").decisions()] == [9, 5, 5, 5, 5]
    with pytest.raises(ValueError, match="four skip operations are excluded"):
        space.from_choices([0, 8, 8, 8, 8])
    with pytest.raises(ValueError, match="is not in the citeseer table .four skip operations are excluded"):
        space.query(NbArch((0, 0, 0, 0), ("skip",) * 4))
    with pytest.raises(ValueError, match="ops: expected 4 of gcn, sage, arma, fc, skip"):
        space_of("proteins").query(NbArch((0, 1, 2, 3), ("gat", "gcn", "gcn", "gcn")))
    with pytest.raises(ValueError, match="metric: expected one of valid, test"):
        space.query(arch, "perf")
    with pytest.raises(ValueError, match="expected a nbgraph architecture, got one of space 'darts'"):
        space.from_dict({"space": "darts", "link": [0, 0, 0, 0]})


def test_the_dataset_flag_names_the_table(tmp_path, capsys):
    assert main(["search", "--space", "nbgraph", "--strategy", "random", "--dataset", "mnist", "--out",
                 str(tmp_path / "x")]) == 2
    assert f"dataset: expected one of {', '.join(DATASETS)}, got 'mnist' (space nbgraph)" in capsys.readouterr().err
    assert main(["search", "--space", "nbgraph", "--strategy", "evolution", "--dataset", "pubmed", "--archs", "30",
                 "--out", str(tmp_path / "evo"), "--quiet"]) == 0
    scores = json.load(open(tmp_path / "evo" / "scores.json"))
    space = space_of("pubmed")
    assert len(scores) == 30 and all(s["val_acc"] == space.query(space.from_dict(s["genotype"])) for s in scores)


# ----------------------------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------------------------
def test_the_benchmark_reports_test_values_that_no_strategy_saw(tmp_path, monkeypatch, capsys):
    from snas_fast.search.base import CandidateSearch
    from snas_fast.spaces.nbgraph.space import NbGraphSpace

    searching, seen = [False], []
    run, query = CandidateSearch.run, NbGraphSpace.query

    def watched_run(self, *args, **kwargs):
        searching[0] = True
        try:
            return run(self, *args, **kwargs)
        finally:
            searching[0] = False

    def watched_query(self, arch, metric="valid"):
        seen.append((searching[0], metric))
        return query(self, arch, metric)

    monkeypatch.setattr(CandidateSearch, "run", watched_run)
    monkeypatch.setattr(NbGraphSpace, "query", watched_query)
    out = tmp_path / "bench"
    assert main(["benchmark", "--space", "nbgraph", "--dataset", "cora", "--strategies",
                 "random,evolution,monas,bo,monas+latency", "--budget", "25", "--seeds", "3", "--marks", "5,20",
                 "--out", str(out), "--quiet"]) == 0
    assert (True, "test") not in seen and (True, "valid") in seen and (False, "test") in seen
    printed = capsys.readouterr().out
    assert "| evolution | 20 |" in printed and "| monas+latency | latency |" in printed
    rows = list(csv.DictReader(open(out / "anytime.csv")))
    assert len(rows) == 5 * 3 * 25
    space = space_of("cora")
    for (strategy, seed) in [("random", 0), ("bo", 2)]:
        record = json.load(open(out / "runs" / strategy / f"seed{seed}.json"))
        mine = [r for r in rows if r["strategy"] == strategy and r["seed"] == str(seed)]
        valid = [q["valid"] for q in record["queries"]]
        for q in (1, 10, 25):  # the test value of the first architecture with the best validation value so far
            best = max(range(q), key=lambda i: (valid[i], -i))
            assert float(mine[q - 1]["test"]) == space.query(space.from_dict(record["queries"][best]["arch"]), "test")
            assert float(mine[q - 1]["best_valid"]) == valid[best]
    for strategy in ("random", "evolution"):  # neither spends a query on an architecture it has seen
        assert int([r for r in rows if r["strategy"] == strategy][-1]["distinct"]) == 25
    from snas_fast.benchmark import overview

    table = overview([str(out)], marks=(5, 20))
    assert "After 20 queries" in table and "| cora | 3 |" in table and "| random | evolution | monas | bo |" in table
    assert (out / "anytime.png").stat().st_size > 0 and (out / "pareto_latency.png").stat().st_size > 0
    summary = (out / "summary.md").read_text()
    assert "0.8263" in summary  # the oracle: the test value of the best architecture by validation
    # a finished benchmark is refused without --resume or --overwrite; --resume recomputes nothing
    assert main(["benchmark", "--space", "nbgraph", "--out", str(out), "--quiet"]) == 2
    assert "holds a benchmark already" in capsys.readouterr().err
    monkeypatch.setattr("snas_fast.benchmark._one_run", lambda job: pytest.fail("a finished run ran again"))
    assert main(["benchmark", "--resume", str(out), "--quiet"]) == 0
    assert (out / "summary.md").read_text() == summary


@pytest.mark.parametrize("argv,message", [
    (["--space", "darts"], "space: expected a tabular space (a benchmark table), got 'darts', which is not tabular"),
    (["--strategies", "snas"], "strategies: snas needs data to train on: space nbgraph is tabular"),
    (["--strategies", "random,nope"], "strategies: expected a comma-separated list of"),
    (["--strategies", "bo+latency"], "strategies: only monas takes an objective"),
    (["--strategies", "monas+flops"], "strategies: space nbgraph counts params, latency, got the objective 'flops'"),
    (["--budget", "0"], "budget: expected an integer >= 1, got 0"),
    (["--seeds", "0"], "seeds: expected an integer >= 1, got 0"),
    (["--marks", "5,x"], "marks: expected comma-separated integers"),
    (["--dataset", "digits"], "dataset: expected one of cora, citeseer"),
])
def test_bad_benchmark_settings_are_refused_in_one_line(tmp_path, capsys, argv, message):
    assert main(["benchmark", "--space", "nbgraph", "--out", str(tmp_path / "b")] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists()


def test_random_search_reproduces_the_published_cross_check_on_cora(tmp_path):
    """Random search keeping the best validation value of 100 distinct architectures reports about 79.9 ± 1.2 %
    test accuracy on Cora (mean ± std over many repeats)."""
    from snas_fast.search.registry import get_strategy

    space, strategy, tests = space_of("cora"), get_strategy("random"), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(60):
            config = strategy.config_class(space="nbgraph", dataset="cora", archs=100, seed=seed, overwrite=True,
                                           out=str(tmp_path / "random"))
            result = strategy.run(config, None, progress=False)
            assert len({space.key(a) for a in result.genotypes}) == 100
            tests.append(space.query(result.genotype, "test"))
    assert abs(statistics.mean(tests) - 0.799) < 0.006 and 0.004 < statistics.stdev(tests) < 0.02
