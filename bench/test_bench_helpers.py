"""Tests of the benchmark machinery itself (not timings): the max-batch search, the saved-bytes count, the CSV
rows and the plots. The GPU-only max-batch path runs here on the CPU with the CUDA memory calls faked.

    pytest bench/test_bench_helpers.py -q

(``pytest bench/ --benchmark-only`` skips these: they use no benchmark fixture.)
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import types

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("fit_max", [0, 7, 8, 15, 16, 17, 100, 1000, 1023, 4096, 5000, 100000])
@pytest.mark.parametrize("start", [8, 16, 64])
def test_largest_fitting_brackets_the_threshold(fit_max, start):
    tried = []

    def fits(n):
        tried.append(n)
        return n <= fit_max

    n, first_fail = harness.largest_fitting(fits, start, granularity=8, limit=1 << 15, rel_tol=1 / 32)
    assert n % 8 == 0 and n <= fit_max
    assert all(t % 8 == 0 and 8 <= t <= 1 << 15 for t in tried)
    if fit_max >= 1 << 15:
        assert (n, first_fail) == (1 << 15, None)
        return
    assert first_fail is not None and first_fail > fit_max
    assert first_fail - n <= max(8, n // 32)
    assert len(tried) <= 2 * 13  # doubling plus bisection, never a scan


def test_largest_fitting_limit_and_bad_arguments():
    assert harness.largest_fitting(lambda n: True, 16, granularity=8, limit=100) == (96, None)
    assert harness.largest_fitting(lambda n: False, 16, granularity=8, limit=100) == (0, 8)
    with pytest.raises(ValueError, match="granularity"):
        harness.largest_fitting(lambda n: True, 16, granularity=8, limit=4)


def test_saved_tensors_deduplicates_by_storage_and_excludes_state():
    w = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(256, 64, requires_grad=True)
    with harness.SavedTensors(exclude=[w]) as saved:
        y = x @ w  # saves x and w
        z = (y[:128] * y[128:]).sum()  # two views of y's storage, saved by one mul
    z.backward()
    assert saved.bytes == x.numel() * 4 + y.numel() * 4
    with harness.SavedTensors() as saved_all:
        (x @ w).sum()
    assert saved_all.bytes == (x.numel() + w.numel()) * 4


def test_saved_tensors_sees_the_extension_ops():
    import snas_fast

    x = torch.randn(4, 8, 8, 8, requires_grad=True)
    us = [torch.randn(4, 8, 8, 8, requires_grad=True) for _ in range(4)]
    w = torch.softmax(torch.randn(8), 0).requires_grad_()
    with harness.SavedTensors() as saved:
        snas_fast.mixed_edge(x, us, w, [1, 2, 3, 4, 5, 6, 7], 1)
    # x and the four u_m at least: the C++ autograd's save_for_backward goes through the hooks
    assert saved.bytes >= 5 * x.numel() * 4


def test_rows_write_csv_appends_only_new_rows(tmp_path):
    path = str(tmp_path / "rows.csv")
    rows = harness.Rows("cpu")
    rows.add("fused", "cfg", "step_ms", 1.0, "ms")
    rows.write_csv(path)
    rows.add("eager", "cfg", "step_ms", 2.0, "ms")
    rows.write_csv(path)
    rows.write_csv(None)
    with open(path) as f:
        got = list(csv.DictReader(f))
    assert [r["variant"] for r in got] == ["fused", "eager"]
    assert list(got[0]) == harness.COLUMNS


def test_max_batch_search_with_faked_cuda_memory(monkeypatch):
    """bench_search_step.max_batch on a tiny CPU supernet, with the CUDA calls faked: memory 1 MiB per image plus
    10, and an OutOfMemoryError past 200 images; the budget is 150 MiB."""
    import bench_search_step as bss

    current = {"batch": 0}
    original_set_batch = bss.Step.set_batch

    def set_batch(self, batch):
        current["batch"] = batch
        if batch > 200:
            raise torch.cuda.OutOfMemoryError("fake: out of memory")
        original_set_batch(self, batch)

    calls = {"fraction": []}
    fake = types.SimpleNamespace(
        get_device_properties=lambda i: types.SimpleNamespace(total_memory=1 << 40),
        current_device=lambda: 0,
        empty_cache=lambda: None,
        memory_allocated=lambda: 0,
        set_per_process_memory_fraction=lambda f: calls["fraction"].append(f),
        reset_peak_memory_stats=lambda: None,
        synchronize=lambda: None,
        max_memory_allocated=lambda: (10 + current["batch"]) * 2**20,
        OutOfMemoryError=torch.cuda.OutOfMemoryError,
    )
    steps = []
    original_call = bss.Step.__call__

    def call(self):  # one real step (the first), then only the bookkeeping: the search is what is tested here
        steps.append(self.x.shape[0])
        return original_call(self) if len(steps) == 1 else None

    monkeypatch.setattr(bss.Step, "set_batch", set_batch)
    monkeypatch.setattr(bss.Step, "__call__", call)
    args = types.SimpleNamespace(channels=2, layers=1, size=4, device="cpu", estimator="st", max_batch_start=16,
                                 max_batch_granularity=8, max_batch_limit=1 << 12)
    for variant in ("fused", "hard"):
        n, first_fail, peak = bss.max_batch(variant, args, budget_mb=150, cuda=fake)
        assert n == 136 and first_fail == 144 and peak == 146  # 10 + 136 <= 150 < 10 + 144
    assert calls["fraction"][-1] == 1.0 and calls["fraction"][0] == pytest.approx(150 * 2**20 / (1 << 40))
    n, first_fail, _ = bss.max_batch("eager", args, budget_mb=1000, cuda=fake)  # past 200: the OutOfMemoryError path
    assert 192 <= n <= 200 and first_fail is not None
    assert steps[:2] == [16, 16] and max(steps) <= 200  # two steps per size, none past the faked OOM


def test_cpu_max_batch_search_against_a_resident_memory_budget():
    """bench_search_step.cpu_max_batch with the child's measurement faked: 10 MiB per image plus 40."""
    import types

    import bench_search_step as bss

    args = types.SimpleNamespace(max_batch_start=16, max_batch_granularity=8, max_batch_limit=1 << 12)
    tried = []

    def measure(batch):
        tried.append(batch)
        return 40.0 + 10.0 * batch

    n, first_fail, peak = bss.cpu_max_batch("fused", args, budget_mb=1000, measure=measure)
    assert n == 96 and peak == 1000.0 and first_fail is not None and first_fail > 96
    assert tried[:4] == [16, 32, 64, 128]  # doubling, then bisection
    assert bss.cpu_max_batch("eager", args, budget_mb=100, measure=measure)[:2] == (0, 8)  # not even 8 fits


def test_plot_draws_search_step_and_max_batch(tmp_path):
    path = tmp_path / "rows.csv"
    rows = harness.Rows("cpu")
    for b in (8, 16):
        cfg = f"search_step/C8_L5_16px/b{b}"
        for i, v in enumerate(("fused", "fused_sum", "eager", "hard")):
            rows.add(v, cfg, "step_ms", 10.0 * (i + 1) * b, "ms")
            rows.add(v, cfg, "step_ms_p20", 9.0 * (i + 1) * b, "ms")
            rows.add(v, cfg, "step_ms_p80", 11.0 * (i + 1) * b, "ms")
            rows.add(v, cfg, "peak_mem_mb", 5.0 * (i + 1), "MiB")
            rows.add(v, cfg, "saved_mb", 4.0 * (i + 1), "MiB")
        rows.add("fused/eager", cfg, "step_ratio", 0.33, "x")
    for v, n in (("fused", 128), ("eager", 64), ("hard", 1024)):
        rows.add(v, "search_step/C16_L8_32px/budget8192MiB", "max_batch", n, "images")
    for net, ratio in (("xautodl-TinyNetworkDarts", 0.6), ("nni-darts-DARTS", 0.95)):
        for metric in ("step_ratio", "saved_ratio"):
            rows.add("fused/unfused", f"fuse/{net}_C16_32px/b16", metric, ratio, "x")
    rows.add("fused", "mixed_edge/s1_b64_c16_32x32/float32/K8_M4", "fwd_bwd_ms", 1.0, "ms")
    rows.add("eager", "mixed_edge/s1_b64_c16_32x32/float32/K8_M4", "fwd_bwd_ms", 2.0, "ms")
    rows.write_csv(str(path))
    out = tmp_path / "plots"
    proc = subprocess.run([sys.executable, os.path.join(HERE, "plot.py"), str(path), "--out", str(out)],
                          capture_output=True, text=True, check=True)
    names = sorted(os.path.basename(p) for p in proc.stdout.split())
    assert names == ["fuse.png", "mixed_edge_fwd_bwd_ms.png", "search_step.png", "search_step_max_batch.png"]
    assert all(os.path.getsize(out / n) > 1000 for n in names)


def test_floor_step_runs_every_candidate_but_not_the_mix(monkeypatch):
    """bench_search_step's floor: within its step the edges call free_mix instead of mixed_edge (and only there:
    the library's name is put back), every weight gets a gradient (each candidate's convolutions run backward), the
    output is u_0's data; log_alpha gets its gradient from the penalty alone."""
    import bench_search_step as bss
    from snas_fast.spaces.darts import supernet

    real = supernet.mixed_edge
    calls = {"real": 0, "free": 0}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(supernet, "mixed_edge", counting("real", real))
    monkeypatch.setattr(bss, "free_mix", counting("free", bss.free_mix))
    for variant in ("floor", "floor_cl"):
        step = bss.Step(variant, 4, 3, 8, 2, "cpu")
        assert step.model.mixed == "fused"
        assert torch.isfinite(step())
        assert calls["real"] == 0 and calls["free"] == 14 * 3
        assert all(p.grad is not None for p in step.model.weight_parameters())
        calls["free"] = 0
    bss.Step("fused", 4, 3, 8, 2, "cpu")()
    assert calls == {"real": 14 * 3, "free": 0}  # the other variants run the real op


def test_free_mix_aliases_u0_and_hands_the_gradient_to_every_u():
    import bench_search_step as bss

    us = [torch.randn(2, 3, 4, 4, requires_grad=True) for _ in range(3)]
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = bss.free_mix(x, us, torch.ones(8), [1, 2, -1, 3, 4, 5], 2)
    assert out.data_ptr() == us[0].data_ptr() and out.shape == us[0].shape
    grad = torch.randn_like(out)
    gx, *gus = torch.autograd.grad(2 * out, [x] + us, grad, allow_unused=True)
    assert gx is None and all(torch.equal(g, 2 * grad) for g in gus)
    empty = bss.free_mix(x.contiguous(memory_format=torch.channels_last), [], torch.ones(8), [1, 2, -1], 2)
    assert empty.shape == (2, 3, 4, 4) and empty.is_contiguous(memory_format=torch.channels_last)
    assert not empty.any()
    with pytest.raises(ValueError, match="groups=4"):
        bss.free_mix(x, us, torch.ones(8), [1, 2, -1, 3, 4, 5], 2, groups=4)


def test_bench_fuse_equal_tells_a_fused_copy_from_a_changed_one():
    """bench_fuse.equal: a fused DARTS transcription is equal to its own network; a copy with one weight moved is
    not; peers.available names what does not import."""
    import argparse

    import bench_fuse
    import peers
    import snas_fast

    args = argparse.Namespace(network="darts", channels=4, layers=3, size=8, batch=4, device="cpu")
    own, fused = bench_fuse.build("unfused", args), bench_fuse.build("fused", args)
    assert snas_fast.fuse_summary(fused.net) and bench_fuse.equal(own, fused)
    with torch.no_grad():
        next(fused.net.parameters()).add_(1e-3)
    assert not bench_fuse.equal(own, fused)
    assert peers.available("darts") == "" and set(peers.PEERS) >= {"xautodl-TinyNetworkDarts", "nni-darts-DARTS"}


def test_gnn_edges_draws_only_the_edge_operations_and_refuses_a_missing_search(tmp_path, capsys):
    import gnn_edges
    from snas_fast.spaces.gnn import EDGE_OPS, GraphGenotype

    g = GraphGenotype(2, ((("max",) * 5, ("gru",) * 5), (("mean",) * 5, ("film",) * 5)))
    a, b, c = gnn_edges.random_edges(g, 0), gnn_edges.random_edges(g, 0), gnn_edges.random_edges(g, 1)
    assert a == b and a != c  # one stream per draw
    assert [n for n, _ in a.cells] == [n for n, _ in g.cells]  # node operations kept
    drawn = [op for _, e in [*a.cells, *c.cells, *gnn_edges.random_edges(g, 2).cells] for op in e]
    assert set(drawn) <= set(EDGE_OPS) and len(set(drawn)) >= 4  # the five edge operations, none included
    with pytest.raises(SystemExit):
        gnn_edges.main(["--search", str(tmp_path / "nothing")])
    assert "search: expected a search run directory with a genotype.json" in capsys.readouterr().err


def test_gnn_ablation_runs_a_variant_in_its_own_process_and_prints_one_json_line():
    import json

    runs = {}
    for variant in ("base", "res"):  # res replaces a method of the class: only in its own process
        out = subprocess.run([sys.executable, os.path.join(HERE, "gnn_ablation.py"), "--variant", variant,
                              "--graphs", "4", "--epochs", "1"], capture_output=True, text=True, check=True)
        runs[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    for row in runs.values():
        assert set(row) >= {"variant", "params", "train", "val", "test", "epoch_s"} and 0 <= row["test"] <= 1
    assert runs["base"]["params"] == runs["res"]["params"] == 32246  # the derived genotype at width 16
    assert runs["base"]["test"] != runs["res"]["test"]  # the change reached the network


def test_gnn_edges_pairs_each_seed_with_its_own_draws():
    import gnn_edges

    line = gnn_edges.paired([0.75, 0.6], [0.7, 0.9, 0.5, 0.5], draws=2)  # seed 0's draws average 0.8, seed 1's 0.5
    assert "draws: +0.0250 (per seed -0.0500, +0.1000); one-sided t-test over the seeds' gaps: p = 0.398" in line
    assert line.endswith("1/4")  # only 0.9 >= 0.75 (seed 0); seed 1's 0.5s are below 0.6
