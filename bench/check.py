"""The benchmark guard (issue 31, ``make bench-check``): reruns the op and search-step benchmarks on the configs of
the guard table in bench/RESULTS.md and fails when a ratio is worse than recorded there by more than the noise band
measured in the same run. A benchmark, not a timed test: CI does not run it.

    python bench/check.py                      # run the benchmarks, then check (about 2 minutes on 2 cores)
    python bench/check.py --out rows.csv       # the same, keeping the benchmarks' rows
    python bench/check.py --csv rows.csv       # check rows already measured (no benchmark run)

The recorded figures live in one place: the table under ``## Guard figures (make bench-check)`` in
bench/RESULTS.md, with the columns ``| benchmark | config | ratio | recorded | note |``; a row such as

    | bench_mixed_op | mixed/edge_c16_32x32/float32/K8 | fused/eager fwd_bwd_ratio | 0.44 | ... |

guards the median of the per-repetition paired ratios that benchmark writes for that config (CSV variant
``fused/eager``, metric ``fwd_bwd_ratio``). ``benchmark``: ``bench_mixed_op`` (a pair of its ``PAIRS``:
``fused/eager``, ``fused/compiled``, and ``fused_cl/fused`` for ``mixed_edge``; metrics ``fwd_ratio``,
``fwd_bwd_ratio``; a config of its :func:`bench_mixed_op.config_name`) or ``bench_search_step`` (a pair of its
``RATIOS``, metric ``step_ratio``, a config ``search_step/C{C}_L{layers}_{size}px/b{batch}``). The table is read
strictly: a malformed row is an error naming its line.

Every guarded ratio is a time over a time where lower is better (the fused op over eager, the fused step over its
floor): a check fails when ``measured > recorded + band``, ``band`` = the distance between the 20th and the 80th
percentile of the same run's paired ratios (the ``_p20`` and ``_p80`` rows the benchmarks write), at least
``--min-band`` (0.03). (Half that distance was tried first: the median of a run moves between runs by about the
whole of it on this shared machine, and an unchanged op failed.) A ratio that got better passes (lower its
recorded figure in the table, so that the guard holds the new level).

The runs: one ``bench_mixed_op.py`` with the ops, shapes and dtypes of the table (their cross product), without
peak memory and without ``torch.compile`` unless a ``fused/compiled`` ratio is guarded; one ``bench_search_step.py``
per network (C, cells, size) with the table's batch sizes and the variants its pairs name (eager always runs),
without memory or compilation. Exit status: 0 every ratio within its band, 1 a ratio worse, 2 an error (the table,
a benchmark that failed, a row missing).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_mixed_op  # noqa: E402
import bench_search_step  # noqa: E402

RESULTS = os.path.join(HERE, "RESULTS.md")
SECTION = "## Guard figures (make bench-check)"
HEADER = ("benchmark", "config", "ratio", "recorded", "note")
BENCHMARKS = ("bench_mixed_op", "bench_search_step")
OP_PAIRS = tuple(f"{a}/{b}" for a, b in bench_mixed_op.PAIRS)
OP_METRICS = tuple(f"{phase}_ratio" for phase, _ in bench_mixed_op.PHASES)
STEP_PAIRS = tuple(f"{a}/{b}" for a, b in bench_search_step.RATIOS)
MIN_BAND = 0.03


class GuardError(ValueError):
    """A malformed guard table, a benchmark that failed or a row it did not write."""


@dataclass(frozen=True)
class Guard:
    """One row of the guard table: ``pair``'s ``metric`` in ``config`` of ``benchmark``, recorded at ``recorded``."""

    benchmark: str
    config: str
    pair: str
    metric: str
    recorded: float
    note: str = ""
    line: int = 0

    @property
    def ratio(self) -> str:
        return f"{self.pair} {self.metric}"


@dataclass(frozen=True)
class Check:
    """A guard against the run: the median of the paired ratios, their p20 and p80, the band and the verdict."""

    guard: Guard
    measured: float
    p20: float
    p80: float
    band: float

    @property
    def limit(self) -> float:
        return self.guard.recorded + self.band

    @property
    def ok(self) -> bool:
        return self.measured <= self.limit


def _cells(line: str) -> List[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _guard(cells: List[str], where: str, lineno: int) -> Guard:
    """A table row's guard, its fields checked against what the benchmark writes."""
    if len(cells) != len(HEADER):
        raise GuardError(f"{where}: expected {len(HEADER)} cells ({' | '.join(HEADER)}), got {len(cells)}")
    benchmark, config, ratio, recorded, note = cells
    if benchmark not in BENCHMARKS:
        raise GuardError(f"{where}: benchmark: expected one of {', '.join(BENCHMARKS)}, got {benchmark!r}")
    words = ratio.split()
    if len(words) != 2:
        raise GuardError(f"{where}: ratio: expected 'a/b metric' (e.g. 'fused/eager fwd_bwd_ratio'), got {ratio!r}")
    pair, metric = words
    if benchmark == "bench_mixed_op":
        pairs, metrics, known = OP_PAIRS, OP_METRICS, bench_mixed_op.parse_config(config) is not None
        form = "op/shape/dtype/K8 (bench_mixed_op.config_name)"
    else:
        pairs, metrics, known = STEP_PAIRS, ("step_ratio",), bench_search_step.parse_config(config) is not None
        form = "search_step/C{C}_L{layers}_{size}px/b{batch}"
    if not known:
        raise GuardError(f"{where}: config: expected a config of {benchmark}, {form}, got {config!r}")
    if pair not in pairs:
        raise GuardError(f"{where}: ratio: expected a pair among {', '.join(pairs)} for {benchmark}, got {pair!r}")
    if metric not in metrics:
        raise GuardError(f"{where}: ratio: expected a metric among {', '.join(metrics)} for {benchmark}, "
                         f"got {metric!r}")
    try:
        value = float(recorded)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise GuardError(f"{where}: recorded: expected a positive number, got {recorded!r}")
    return Guard(benchmark, config, pair, metric, value, note, lineno)


def parse_guards(text: str, path: str = RESULTS) -> List[Guard]:
    """The guards of the table under :data:`SECTION` in ``text`` (a RESULTS.md). GuardError, naming the line, when
    the section or its table is missing or a row is malformed or repeated."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == SECTION]
    if len(starts) != 1:
        raise GuardError(f"{path}: expected one section {SECTION!r}, found {len(starts)}")
    end = next((i for i in range(starts[0] + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    table = [i for i in range(starts[0] + 1, end) if lines[i].lstrip().startswith("|")]
    if not table:
        raise GuardError(f"{path}:{starts[0] + 1}: the section {SECTION!r} has no table")
    if any(b != a + 1 for a, b in zip(table, table[1:])):
        gap = next(b for a, b in zip(table, table[1:]) if b != a + 1)
        raise GuardError(f"{path}:{gap + 1}: expected one table in {SECTION!r}: a second one starts here")
    head, body = table[0], table[2:]
    if tuple(_cells(lines[head])) != HEADER:
        raise GuardError(f"{path}:{head + 1}: expected the header | {' | '.join(HEADER)} |, got {lines[head]!r}")
    rule = _cells(lines[table[1]]) if len(table) > 1 else []
    if len(rule) != len(HEADER) or not all(c and set(c) <= set(":-") for c in rule):
        raise GuardError(f"{path}:{head + 2}: expected the header's separator row (|---|...) below the header")
    guards, seen = [], {}
    for i in body:
        where = f"{path}:{i + 1}"
        g = _guard(_cells(lines[i]), where, i + 1)
        key = (g.benchmark, g.config, g.pair, g.metric)
        if key in seen:
            raise GuardError(f"{where}: {g.config} {g.ratio} is already guarded on line {seen[key]}")
        seen[key] = i + 1
        guards.append(g)
    if not guards:
        raise GuardError(f"{path}:{head + 1}: the guard table has no rows")
    return guards


def read_guards(path: str = RESULTS) -> List[Guard]:
    with open(path) as f:
        return parse_guards(f.read(), path)


def _ordered(items, order) -> List[str]:
    return [x for x in order if x in items]


def commands(guards: Sequence[Guard], csv_path: str, op_reps: int = 40, step_reps: int = 10,
             threads: int = 2) -> List[List[str]]:
    """The benchmark runs that measure ``guards``, their rows appended to ``csv_path`` (see the module docstring)."""
    common = ["--threads", str(threads), "--no-memory", "--csv", csv_path]
    cmds = []
    ops = [g for g in guards if g.benchmark == "bench_mixed_op"]
    if ops:
        parsed = [bench_mixed_op.parse_config(g.config) for g in ops]
        names = {op for op, _, _ in parsed}
        cmd = [sys.executable, os.path.join(HERE, "bench_mixed_op.py"), "--ops",
               ",".join(_ordered(names, bench_mixed_op.OPS)), "--dtypes",
               ",".join(_ordered({d for _, _, d in parsed}, bench_mixed_op.DTYPES)), "--reps", str(op_reps)]
        shapes = {s for op, s, _ in parsed if op != "mixed_edge"}
        edge_shapes = {s for op, s, _ in parsed if op == "mixed_edge"}
        if shapes:
            cmd += ["--shapes", ",".join(_ordered(shapes, bench_mixed_op.ALL_SHAPES))]
        if edge_shapes:
            cmd += ["--edge-shapes", ",".join(_ordered(edge_shapes, bench_mixed_op.ALL_EDGE_SHAPES))]
        if not any(g.pair.endswith("/compiled") for g in ops):
            cmd.append("--no-compile")
        cmds.append(cmd + common)
    networks: Dict[Tuple[int, int, int], List[Guard]] = {}
    for g in guards:
        if g.benchmark == "bench_search_step":
            C, layers, size, _ = bench_search_step.parse_config(g.config)
            networks.setdefault((C, layers, size), []).append(g)
    for (C, layers, size), group in networks.items():
        batches = sorted({bench_search_step.parse_config(g.config)[3] for g in group})
        variants = _ordered({v for g in group for v in g.pair.split("/")}, bench_search_step.VARIANTS)
        cmd = [sys.executable, os.path.join(HERE, "bench_search_step.py"), "--channels", str(C), "--layers",
               str(layers), "--size", str(size), "--batches", ",".join(map(str, batches)), "--variants",
               ",".join(variants), "--reps", str(step_reps)]
        if "compiled" not in variants:
            cmd.append("--no-compile")
        cmds.append(cmd + common)
    return cmds


def read_rows(path: str) -> Dict[Tuple[str, str, str], float]:
    """``{(variant, config, metric): value}`` of a benchmark CSV (the last row wins)."""
    with open(path, newline="") as f:
        return {(r["variant"], r["config"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}


def decide(guards: Sequence[Guard], rows: Dict[Tuple[str, str, str], float], min_band: float = MIN_BAND
           ) -> List[Check]:
    """Each guard against the rows of one run: GuardError when a row it needs is missing."""
    checks = []
    for g in guards:
        got = [rows.get((g.pair, g.config, g.metric + suffix)) for suffix in ("", "_p20", "_p80")]
        if any(v is None for v in got):
            missing = [g.metric + s for s, v in zip(("", "_p20", "_p80"), got) if v is None]
            raise GuardError(f"{g.benchmark} wrote no row {g.pair} {g.config} {', '.join(missing)} "
                             f"(RESULTS.md line {g.line})")
        measured, p20, p80 = got
        checks.append(Check(g, measured, p20, p80, max(min_band, p80 - p20)))
    return checks


def report(checks: Sequence[Check]) -> str:
    """The Markdown table of every check."""
    out = ["| benchmark | config | ratio | recorded | measured | p20-p80 | band | limit | |",
           "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for c in checks:
        g = c.guard
        out.append(f"| {g.benchmark} | {g.config} | {g.ratio} | {g.recorded:.3f} | {c.measured:.3f} | "
                   f"{c.p20:.3f}-{c.p80:.3f} | {c.band:.3f} | {c.limit:.3f} | {'ok' if c.ok else '**WORSE**'} |")
    return "\n".join(out)


def failures(checks: Sequence[Check]) -> List[str]:
    """One line per ratio worse than recorded by more than its band."""
    return [f"FAIL {c.guard.config} {c.guard.ratio}: recorded {c.guard.recorded:.3f}, measured {c.measured:.3f}, "
            f"band {c.band:.3f} (measured > recorded + band = {c.limit:.3f})" for c in checks if not c.ok]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=RESULTS, help="the Markdown file holding the guard table")
    parser.add_argument("--csv", help="check the rows of this benchmark CSV instead of running the benchmarks")
    parser.add_argument("--out", help="append the benchmarks' rows to this CSV (default: a temporary file)")
    parser.add_argument("--op-reps", type=int, default=40, help="repetitions of bench_mixed_op.py (default 40)")
    parser.add_argument("--step-reps", type=int, default=10,
                        help="repetitions of bench_search_step.py (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of the benchmarks (default 2)")
    parser.add_argument("--min-band", type=float, default=MIN_BAND,
                        help=f"the smallest noise band, absolute (default {MIN_BAND})")
    parser.add_argument("--dry-run", action="store_true", help="print the benchmark commands and stop")
    args = parser.parse_args(argv)
    for flag, value in (("--op-reps", args.op_reps), ("--step-reps", args.step_reps), ("--threads", args.threads)):
        if value < 1:
            parser.error(f"{flag}: expected a positive count, got {value}")
    if not (args.min_band >= 0):
        parser.error(f"--min-band: expected a number >= 0, got {args.min_band}")
    if args.csv and not os.path.exists(args.csv):
        parser.error(f"--csv: no such file {args.csv!r}")
    if args.csv and args.out:
        parser.error("--out: nothing is run with --csv, so there are no rows to keep")
    t0 = time.perf_counter()
    try:
        guards = read_guards(args.results)
        with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
            path = args.csv or args.out or os.path.join(tmp, "rows.csv")
            if not args.csv:
                for cmd in commands(guards, path, args.op_reps, args.step_reps, args.threads):
                    print("$ python " + " ".join(os.path.relpath(c) if c.startswith(HERE) else c for c in cmd[1:]),
                          flush=True)
                    if not args.dry_run and subprocess.run(cmd, check=False).returncode != 0:
                        raise GuardError(f"{os.path.basename(cmd[1])} failed (its output is above)")
                if args.dry_run:
                    return 0
            checks = decide(guards, read_rows(path), args.min_band)
    except GuardError as error:
        print(f"check.py: error: {error}", file=sys.stderr)
        return 2
    print(f"\n## bench-check: {len(checks)} ratios against {os.path.relpath(args.results)} (lower is better; a "
          f"ratio fails above recorded + band)\n")
    print(report(checks))
    bad = failures(checks)
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if bad:
        print("\n".join(bad))
        return 1
    print(f"every ratio within its band ({len(checks)} checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
