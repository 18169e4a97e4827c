"""Tests of bench/check.py, the benchmark guard (``make bench-check``): the guard table's parsing, the benchmark
commands it derives and its decisions on a fake CSV. No benchmark runs here.

    pytest bench/test_check.py -q
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import check  # noqa: E402
import harness  # noqa: E402

TABLE = """# Benchmark results

Some text.

## Guard figures (make bench-check)

Prose before the table.

| benchmark | config | ratio | recorded | note |
|---|---|---|---:|---|
| bench_mixed_op | mixed/edge_c16_32x32/float32/K8 | fused/eager fwd_bwd_ratio | 0.44 | provisional |
| bench_mixed_op | mixed_edge/s1_b64_c16_32x32/float32/K8_M4 | fused/eager fwd_bwd_ratio | 0.30 | |
| bench_search_step | search_step/C16_L8_32px/b16 | fused_cl/floor_cl step_ratio | 1.20 | |
| bench_search_step | search_step/C16_L8_32px/b16 | fused_cl/eager step_ratio | 0.60 | |

## CPU, an older section

| benchmark | config | ratio | recorded | note |
|---|---|---|---:|---|
| not | read | at | all | here |
"""


def test_parse_guards_reads_the_section_table_only():
    guards = check.parse_guards(TABLE, "R.md")
    assert [(g.benchmark, g.config, g.pair, g.metric, g.recorded) for g in guards] == [
        ("bench_mixed_op", "mixed/edge_c16_32x32/float32/K8", "fused/eager", "fwd_bwd_ratio", 0.44),
        ("bench_mixed_op", "mixed_edge/s1_b64_c16_32x32/float32/K8_M4", "fused/eager", "fwd_bwd_ratio", 0.30),
        ("bench_search_step", "search_step/C16_L8_32px/b16", "fused_cl/floor_cl", "step_ratio", 1.20),
        ("bench_search_step", "search_step/C16_L8_32px/b16", "fused_cl/eager", "step_ratio", 0.60)]
    assert guards[0].line == 11 and guards[0].note == "provisional"


@pytest.mark.parametrize("old, new, match", [
    ("| bench_mixed_op | mixed/edge_c16_32x32/float32/K8 | fused/eager fwd_bwd_ratio | 0.44 |",
     "| bench_mixed_op | mixed/edge_c16_32x32/float32/K8 | fused/eager fwd_bwd_ratio | fast |",
     r"R\.md:11: recorded: expected a positive number, got 'fast'"),
    ("| bench_mixed_op | mixed/edge_c16_32x32/float32/K8 | fused/eager fwd_bwd_ratio | 0.44 |",
     "| bench_mixed_op | mixed/edge_c99_32x32/float32/K8 | fused/eager fwd_bwd_ratio | 0.44 |",
     r"R\.md:11: config: expected a config of bench_mixed_op"),
    ("| bench_mixed_op | mixed/edge_c16_32x32/float32/K8 | fused/eager fwd_bwd_ratio | 0.44 |",
     "| bench_mixed_op | mixed/edge_c16_32x32/float32/K8 | fused/eager step_ratio | 0.44 |",
     r"R\.md:11: ratio: expected a metric among fwd_ratio, fwd_bwd_ratio"),
    ("| bench_mixed_op | mixed/edge_c16_32x32/float32/K8 | fused/eager fwd_bwd_ratio | 0.44 |",
     "| bench_mixed_op | mixed/edge_c16_32x32/float32/K8 | fused/eager | 0.44 |",
     r"R\.md:11: ratio: expected 'a/b metric'"),
    ("| bench_mixed_op | mixed/edge_c16_32x32/float32/K8 | fused/eager fwd_bwd_ratio | 0.44 |",
     "| bench_op | mixed/edge_c16_32x32/float32/K8 | fused/eager fwd_bwd_ratio | 0.44 |",
     r"R\.md:11: benchmark: expected one of bench_mixed_op, bench_search_step, got 'bench_op'"),
    ("fused_cl/floor_cl step_ratio | 1.20 | |", "floor_cl/fused_cl step_ratio | 1.20 | |",
     r"R\.md:13: ratio: expected a pair among .* got 'floor_cl/fused_cl'"),
    ("search_step/C16_L8_32px/b16 | fused_cl/eager step_ratio | 0.60 | |",
     "search_step/C16_L8_32px/b16 | fused_cl/floor_cl step_ratio | 0.60 | |",
     r"R\.md:14: .* is already guarded on line 13"),
    ("| 0.30 | |", "| 0.30 |", r"R\.md:12: expected 5 cells"),
    ("|---|---|---|---:|---|\n| bench_mixed_op", "| bench_mixed_op", r"R\.md:10: expected the header's separator"),
    ("| benchmark | config | ratio | recorded | note |\n|---|---|---|---:|---|\n| bench_mixed_op",
     "| benchmark | config | ratio | note |\n|---|---|---|---|\n| bench_mixed_op", r"R\.md:9: expected the header"),
    ("Prose before the table.", "| a |\n\nProse", r"R\.md:11: expected one table"),
    ("## Guard figures (make bench-check)", "## Guards", r"expected one section"),
])
def test_parse_guards_names_the_malformed_line(old, new, match):
    assert TABLE.count(old) == 1
    with pytest.raises(check.GuardError, match=match):
        check.parse_guards(TABLE.replace(old, new), "R.md")


def test_parse_guards_refuses_two_tables_and_an_empty_one():
    two = TABLE.replace("## CPU, an older section\n", "")
    with pytest.raises(check.GuardError, match=r"R\.md:17: expected one table"):
        check.parse_guards(two, "R.md")
    empty = TABLE.split("| bench_mixed_op")[0] + "\n## next\n"
    with pytest.raises(check.GuardError, match="the guard table has no rows"):
        check.parse_guards(empty, "R.md")


def test_the_results_file_holds_a_valid_guard_table():
    guards = check.read_guards()
    assert {g.benchmark for g in guards} == set(check.BENCHMARKS)


def test_commands_run_the_guarded_configs_only():
    cmds = check.commands(check.parse_guards(TABLE, "R.md"), "rows.csv", op_reps=7, step_reps=3, threads=1)
    assert len(cmds) == 2
    op, step = (c[1:] for c in cmds)
    assert os.path.basename(op[0]) == "bench_mixed_op.py"
    assert op[op.index("--ops") + 1] == "mixed,mixed_edge"
    assert op[op.index("--shapes") + 1] == "edge_c16_32x32"
    assert op[op.index("--edge-shapes") + 1] == "s1_b64_c16_32x32"
    assert op[op.index("--reps") + 1] == "7" and "--no-compile" in op and "--no-memory" in op
    assert op[op.index("--csv") + 1] == "rows.csv"
    assert os.path.basename(step[0]) == "bench_search_step.py"
    flags = {k: step[step.index(k) + 1] for k in step if k.startswith("--")}
    assert {k: flags[k] for k in ("--channels", "--layers", "--size", "--batches", "--reps", "--threads")} == {
        "--channels": "16", "--layers": "8", "--size": "32", "--batches": "16", "--reps": "3", "--threads": "1"}
    assert step[step.index("--variants") + 1] == "eager,fused_cl,floor_cl"
    assert "--no-compile" in step and "--no-memory" in step


def fake_csv(path, values):
    """A benchmark CSV with, per (pair, config, metric), the median, p20 and p80 rows."""
    rows = harness.Rows("cpu")
    for (pair, config, metric), (med, p20, p80) in values.items():
        rows.add(pair, config, metric, med, "x")
        rows.add(pair, config, f"{metric}_p20", p20, "x")
        rows.add(pair, config, f"{metric}_p80", p80, "x")
    rows.add("fused", "mixed/edge_c16_32x32/float32/K8", "fwd_bwd_ms", 5.0, "ms")  # other rows are ignored
    rows.write_csv(str(path))


MIXED, EDGE, STEP = ("mixed/edge_c16_32x32/float32/K8", "mixed_edge/s1_b64_c16_32x32/float32/K8_M4",
                     "search_step/C16_L8_32px/b16")


def test_decide_fails_only_above_recorded_plus_band(tmp_path):
    path = tmp_path / "rows.csv"
    fake_csv(path, {
        ("fused/eager", MIXED, "fwd_bwd_ratio"): (0.47, 0.40, 0.60),  # band 0.20: 0.47 <= 0.64, ok
        ("fused/eager", EDGE, "fwd_bwd_ratio"): (0.34, 0.33, 0.35),  # band 0.02 -> 0.03: 0.34 > 0.33, worse
        ("fused_cl/floor_cl", STEP, "step_ratio"): (1.0, 0.9, 1.1),  # better than recorded: ok
        ("fused_cl/eager", STEP, "step_ratio"): (0.62, 0.61, 0.63),  # 0.62 <= 0.60 + 0.03: ok
    })
    checks = check.decide(check.parse_guards(TABLE, "R.md"), check.read_rows(str(path)))
    assert [c.ok for c in checks] == [True, False, True, True]
    assert [round(c.band, 6) for c in checks] == [0.20, 0.03, 0.20, 0.03]
    lines = check.failures(checks)
    assert lines == [f"FAIL {EDGE} fused/eager fwd_bwd_ratio: recorded 0.300, measured 0.340, band 0.030 "
                     "(measured > recorded + band = 0.330)"]
    assert "**WORSE**" in check.report(checks) and check.report(checks).count("| ok |") == 3


def test_decide_names_a_missing_row(tmp_path):
    path = tmp_path / "rows.csv"
    fake_csv(path, {("fused/eager", MIXED, "fwd_bwd_ratio"): (0.4, 0.4, 0.4)})
    with pytest.raises(check.GuardError, match=r"wrote no row fused/eager mixed_edge/.* fwd_bwd_ratio, "
                                                r"fwd_bwd_ratio_p20, fwd_bwd_ratio_p80 \(RESULTS.md line 12\)"):
        check.decide(check.parse_guards(TABLE, "R.md"), check.read_rows(str(path)))


def test_main_on_a_csv_exits_1_on_a_worse_ratio_and_0_otherwise(tmp_path, capsys):
    results = tmp_path / "R.md"
    results.write_text(TABLE)
    good = {("fused/eager", MIXED, "fwd_bwd_ratio"): (0.44, 0.43, 0.45),
            ("fused/eager", EDGE, "fwd_bwd_ratio"): (0.30, 0.29, 0.31),
            ("fused_cl/floor_cl", STEP, "step_ratio"): (1.2, 1.1, 1.3),
            ("fused_cl/eager", STEP, "step_ratio"): (0.6, 0.5, 0.7)}
    fake_csv(tmp_path / "good.csv", good)
    assert check.main(["--results", str(results), "--csv", str(tmp_path / "good.csv")]) == 0
    assert "every ratio within its band (4 checked)" in capsys.readouterr().out
    fake_csv(tmp_path / "bad.csv", {**good, ("fused_cl/floor_cl", STEP, "step_ratio"): (1.5, 1.45, 1.55)})
    assert check.main(["--results", str(results), "--csv", str(tmp_path / "bad.csv")]) == 1
    assert f"FAIL {STEP} fused_cl/floor_cl step_ratio: recorded 1.200, measured 1.500" in capsys.readouterr().out
    results.write_text(TABLE.replace("| 0.44 |", "| -1 |"))
    assert check.main(["--results", str(results), "--csv", str(tmp_path / "good.csv")]) == 2
    assert "R.md:11: recorded: expected a positive number, got '-1'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--step-reps", "0"], "--step-reps: expected a positive count, got 0"),
    (["--min-band", "-0.1"], "--min-band: expected a number >= 0, got -0.1"),
    (["--csv", "/nonexistent.csv"], "--csv: no such file '/nonexistent.csv'"),
])
def test_main_flag_errors_name_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        check.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
