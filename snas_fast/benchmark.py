"""Query-based strategies measured against a benchmark table's ground truth (``snas-fast benchmark``).

On a tabular space (NAS-Bench-Graph: ``--space nbgraph --dataset cora``) every strategy runs ``budget`` queries per
seed through its own ``run`` (:class:`~snas_fast.search.base.CandidateSearch`: it sees the table's validation metric
and the costs, never the test metric). After each query the benchmark records the strategy's best-so-far by
validation and that architecture's **test** value (the anytime curve), and the number of distinct architectures
queried (:meth:`SearchSpace.key <snas_fast.spaces.SearchSpace.key>`: isomorphic ones are one). The oracles are the
test value of the best-by-validation architecture of the whole table and the table's best test value.

Files in ``out``:

    runs/<strategy>/seed<k>.json   one finished run (kept: an interrupted benchmark resumes where it stopped)
    anytime.csv    strategy, seed, query, best_valid, test, distinct
    anytime.png    mean ± std of the test value against queries (log scale), the oracles as lines
    summary.md     at each mark (20, 100, budget): mean ± std, the paired difference to random search with its
                   Wilcoxon signed-rank p-value, the gap to the oracle; multi-objective rows' hypervolumes
    pareto_<objective>.png   a multi-objective run's fronts (seed 0) against random search's and the table's

A strategy named ``<strategy>+<objective>`` (``monas+latency``, ``monas+params``) is multi-objective: MONAS's mixed
reward on that cost. Its report is the hypervolume of the front of its queries (chosen by validation, counted by
test value and cost) against random search's at the same budget, and the table's own front.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import statistics
import warnings
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Sequence, Tuple

from ._progress import bar
from .engine.config import DataConfig, RunError, setting
from .engine.rundir import write_json_atomic
from .pareto import hypervolume, non_dominated

__all__ = ["BenchmarkConfig", "BenchmarkError", "anytime", "benchmark", "oracles", "overview"]

#: settings of each strategy in the benchmark over its defaults, chosen on Cora by the best validation value after
#: 100 queries (20 seeds; README, "NAS-Bench-Graph"): MONAS's controller learning rate (tried 5e-3, 2e-2, 5e-2,
#: 1e-1), evolution's population and sample (50/10, 25/10, 20/5, 10/3), BO's UCB beta (2.576, 1.0)
TUNED = {"monas": dict(controller_lr=2e-2), "evolution": dict(population=25, sample=10), "bo": dict(beta=1.0)}
#: ... and searching for accuracy alone: MONAS's reward is accuracy (a = 1) unless it is named with an objective
SINGLE_OBJECTIVE = {"monas": dict(a=1.0)}


class BenchmarkError(RunError):
    """A benchmark that cannot start (bad setting); one-line message."""


@dataclass
class BenchmarkConfig(DataConfig):
    """The table (``space``, ``dataset``), the strategies, the budget in queries, the seeds."""

    Error = BenchmarkError
    roles = ("search",)
    data_parallel = False
    hidden: ClassVar[Tuple[str, ...]] = ("seed", "device", "dist_timeout", "batch_size")  # seeds: 0 .. seeds - 1

    space: str = setting("nbgraph", "a tabular search space (its table's validation metric is what a strategy sees)")
    out: str = setting("runs/benchmark", "run directory")
    strategies: str = setting("random,evolution,monas,bo", "comma-separated query-based strategies; "
                                                           "<strategy>+<objective> (monas+latency, monas+params): "
                                                           "multi-objective, MONAS's mixed reward on that cost")
    budget: int = setting(500, "queries per run", minimum=1)
    seeds: int = setting(30, "runs per strategy (seeds 0 .. seeds - 1)", minimum=1)
    marks: str = setting("20,100", "queries at which summary.md compares (the budget is always one)")
    procs: int = setting(1, "runs at once, each in a process of one thread", minimum=1)

    def names(self) -> List[str]:
        return [s.strip() for s in str(self.strategies).split(",") if s.strip()]

    def mark_list(self) -> List[int]:
        try:
            marks = {int(m) for m in str(self.marks).split(",") if m.strip()}
        except ValueError:
            raise BenchmarkError(f"marks: expected comma-separated integers, got {self.marks!r}") from None
        return sorted(m for m in marks | {self.budget} if 1 <= m <= self.budget)

    def validate(self) -> None:
        from .search.registry import get_strategy, strategy_names

        super().validate()
        space = self.space_object()
        if space.lacks("query") is not None:
            raise BenchmarkError(f"space: expected a tabular space (a benchmark table), got {self.space!r}, which "
                                 f"{space.lacks('query')}")
        names = self.names()
        if not names:
            raise BenchmarkError(f"strategies: expected a comma-separated list, got {self.strategies!r}")
        for name in names:
            base, _, objective = name.partition("+")
            if base not in strategy_names():
                raise BenchmarkError(f"strategies: expected a comma-separated list of {', '.join(strategy_names())}, "
                                     f"got {name!r}")
            why = get_strategy(base).refusal(space)
            if why:
                raise BenchmarkError(f"strategies: {why}")
            if objective and base != "monas":
                raise BenchmarkError(f"strategies: only monas takes an objective (monas+latency), got {name!r}")
            if objective:
                bound = self.bound_space()
                costs = bound.costs(bound.tabulated()[0])
                if objective not in costs:
                    raise BenchmarkError(f"strategies: space {self.space} counts {', '.join(costs)}, got the "
                                         f"objective {objective!r} in {name!r}")
        if len(set(names)) < len(names):
            raise BenchmarkError(f"strategies: expected each at most once, got {self.strategies!r}")
        self.mark_list()

    def strategy_config(self, name: str, seed: int, out: str):
        """The settings of one run of ``name`` (``<strategy>[+<objective>]``): its defaults, the table, the seed,
        ``budget`` queries."""
        from .search.registry import get_strategy

        base, _, objective = name.partition("+")
        strategy = get_strategy(base)
        settings = dict(space=self.space, dataset=self.dataset, seed=seed, out=out, archs=self.budget,
                        overwrite=True, **TUNED.get(base, {}), **({} if objective else SINGLE_OBJECTIVE.get(base, {})))
        if objective:
            settings["objective"] = objective
        return strategy, strategy.config_class(**settings)


def oracles(space) -> Dict[str, float]:
    """The best there is in a tabular ``space``'s table: ``test_of_best_valid`` (the test value of the architecture of
    highest validation value: a search that queried everything reports it) and ``best_test``."""
    rows = [(space.query(a, "valid"), space.query(a, "test")) for a in space.tabulated()]
    return dict(test_of_best_valid=max(rows, key=lambda r: r[0])[1], best_test=max(t for _, t in rows))


def anytime(space, archs: Sequence, valid: Sequence[float]) -> List[dict]:
    """Per query ``q`` (1-based): ``best_valid`` so far, the ``test`` value of the architecture that holds it (the
    first to reach it), and ``distinct`` architectures queried so far."""
    rows, best, best_test, keys = [], -math.inf, math.nan, set()
    for q, (arch, v) in enumerate(zip(archs, valid), 1):
        keys.add(space.key(arch))
        if v > best:
            best, best_test = v, space.query(arch, "test")
        rows.append(dict(query=q, best_valid=best, test=best_test, distinct=len(keys)))
    return rows


def _one_run(job: Tuple[dict, str, int, str]) -> dict:
    """One strategy's run on one seed: its queries, in order, with their costs (written to ``path``)."""
    config_dict, name, seed, path = job
    config = BenchmarkConfig.from_dict(config_dict)
    strategy, run_config = config.strategy_config(name, seed, os.path.join(os.path.dirname(path), f"seed{seed}"))
    space = run_config.bound_space()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = strategy.run(run_config, None, progress=False)
    record = dict(strategy=name, seed=seed, seconds=result.seconds,
                  queries=[dict(arch=space.to_dict(a), valid=v, costs=space.costs(a))
                           for a, v in zip(result.genotypes, result.scores)])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json_atomic(record, path)
    return record


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _runs(config: BenchmarkConfig, progress: bool) -> List[dict]:
    jobs = [(config.to_dict(), name, seed, os.path.join(config.out, "runs", name, f"seed{seed}.json"))
            for name in config.names() for seed in range(config.seeds)]
    done, todo = {}, []
    for job in jobs:
        try:
            with open(job[3]) as f:
                record = json.load(f)
            if len(record["queries"]) == config.budget:
                done[job[3]] = record
                continue
        except (OSError, ValueError, KeyError, TypeError):
            pass
        todo.append(job)
    if config.procs > 1 and len(todo) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(config.procs, initializer=_one_thread) as pool:
            for record, job in zip(bar(pool.imap(_one_run, todo), "benchmark", progress, total=len(todo)), todo):
                done[job[3]] = record
    else:
        for job in bar(todo, "benchmark", progress):
            done[job[3]] = _one_run(job)
    return [done[job[3]] for job in jobs]


def _wilcoxon(differences: Sequence[float]) -> float:
    """The two-sided Wilcoxon signed-rank p-value of paired ``differences`` (1.0 when all are zero)."""
    from scipy import stats

    if all(d == 0 for d in differences):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(differences).pvalue)


def _mean_std(values: Sequence[float], digits: int = 4) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def _front_volume(points: Sequence[Tuple[float, float, float]], ref: Tuple[float, float]) -> float:
    """The hypervolume (:func:`~snas_fast.pareto.hypervolume`) of the front chosen by validation among ``points``
    ``(cost, valid, test)``, counted by ``(cost, test)``."""
    on = non_dominated([(c, v) for c, v, _ in points])
    return hypervolume([(c, t) for (c, _, t), keep in zip(points, on) if keep], ref)


def benchmark(config: BenchmarkConfig, resume: bool = False, progress: bool = True) -> dict:
    """Runs every strategy ``seeds`` times (``resume``: the finished runs in ``out`` are kept), writes ``anytime.csv``,
    ``anytime.png``, ``summary.md`` (and ``pareto_<objective>.png`` for multi-objective strategies); returns
    ``{"curves": {strategy: [[test per query] per seed]}, "oracles": ..., "volumes": ...}``."""
    from .viz import plots

    config.validate()
    space = config.bound_space()
    if os.path.exists(os.path.join(config.out, "config.json")) and not resume:
        if not config.overwrite:
            raise BenchmarkError(f"out: {config.out} holds a benchmark already; continue it with --resume "
                                 f"{config.out}, or give --overwrite true to start again there")
        shutil.rmtree(os.path.join(config.out, "runs"), ignore_errors=True)
    os.makedirs(config.out, exist_ok=True)
    write_json_atomic(config.to_dict(), os.path.join(config.out, "config.json"))
    records = _runs(config, progress)
    best = oracles(space)
    curves: Dict[str, List[List[float]]] = {}
    valids: Dict[str, List[List[float]]] = {}
    with open(os.path.join(config.out, "anytime.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["strategy", "seed", "query", "best_valid", "test", "distinct"])
        writer.writeheader()
        for record in records:
            archs = [space.from_dict(q["arch"]) for q in record["queries"]]
            rows = anytime(space, archs, [q["valid"] for q in record["queries"]])
            record["distinct"] = rows[-1]["distinct"]
            curves.setdefault(record["strategy"], []).append([r["test"] for r in rows])
            valids.setdefault(record["strategy"], []).append([r["best_valid"] for r in rows])
            for r in rows:
                writer.writerow(dict(strategy=record["strategy"], seed=record["seed"], **r))
    single = {name: c for name, c in curves.items() if "+" not in name}
    plots.plot_anytime(single, os.path.join(config.out, "anytime.png"), best, f"{space.metric} (test)",
                       f"{config.space} {config.dataset}: best-by-validation so far, mean ± std of "
                       f"{config.seeds} seeds")
    volumes = _volumes(config, space, records)
    _summary(config, space, records, curves, valids, best, volumes)
    return dict(curves=curves, oracles=best, volumes=volumes)


def _volumes(config: BenchmarkConfig, space, records: List[dict]) -> Dict[str, dict]:
    """Per multi-objective strategy: its hypervolumes per seed, random search's at the same budget, the table's."""
    from .viz import plots

    out = {}
    table = None
    for name in config.names():
        if "+" not in name:
            continue
        objective = name.partition("+")[2]
        if table is None:
            table = [(space.costs(a), space.query(a, "valid"), space.query(a, "test")) for a in space.tabulated()]
        points = [(c[objective], v, t) for c, v, t in table]
        ref = (max(c for c, _, _ in points), min(t for _, _, t in points))

        def of(record):
            return [(q["costs"][objective], q["valid"], space.query(space.from_dict(q["arch"]), "test"))
                    for q in record["queries"]]

        mine = [_front_volume(of(r), ref) for r in records if r["strategy"] == name]
        randoms = [_front_volume(of(r), ref) for r in records if r["strategy"] == "random"]
        true = hypervolume([(c, t) for c, _, t in points], ref)
        out[name] = dict(objective=objective, volumes=mine, random=randoms, table=true, ref=ref)
        first = {label: of(r) for label in (name, "random") for r in records
                 if r["strategy"] == label and r["seed"] == 0}
        shown = {label: [(c, t, on) for (c, _, t), on in zip(p, non_dominated([(c, v) for c, v, _ in p]))]
                 for label, p in first.items()}
        front = non_dominated([(c, t) for c, _, t in points])
        shown["table"] = [(c, t, True) for (c, _, t), on in zip(points, front) if on]
        plots.plot_pareto(shown, os.path.join(config.out, f"pareto_{objective}.png"), objective,
                          f"{space.metric} (test)", f"{config.space} {config.dataset}, seed 0: fronts chosen by "
                                                     f"validation, {config.budget} queries")
    return out


def _summary(config, space, records, curves, valids, best, volumes) -> None:
    marks = config.mark_list()
    single = [name for name in config.names() if "+" not in name]
    lines = [f"# {config.space} {config.dataset}: {config.budget} queries, {config.seeds} seeds", "",
             f"Test {space.metric} of each strategy's best architecture by validation so far (mean ± std over seeds). "
             f"Oracles: the test value of the table's best architecture by validation "
             f"{best['test_of_best_valid']:.4f}; the best test value {best['best_test']:.4f}. Δ: the mean paired "
             f"difference to random search (same seed), p: its two-sided Wilcoxon signed-rank p-value; gap: the "
             f"oracle (by validation) minus the mean. The validation columns: the same for the best validation value "
             f"so far (what the strategies optimise).", "",
             "| strategy | queries | test | Δ vs random | p | gap | best valid | Δ valid | p valid | "
             "distinct archs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in single:
        for m in marks:
            values = [c[m - 1] for c in curves[name]]
            valid = [c[m - 1] for c in valids[name]]
            cells = ["-", "-"]
            valid_cells = ["-", "-"]
            if name != "random" and "random" in curves:
                diff = [a - b for a, b in zip(values, (c[m - 1] for c in curves["random"]))]
                cells = [f"{statistics.mean(diff):+.4f}", f"{_wilcoxon(diff):.3g}"]
                diff = [a - b for a, b in zip(valid, (c[m - 1] for c in valids["random"]))]
                valid_cells = [f"{statistics.mean(diff):+.4f}", f"{_wilcoxon(diff):.3g}"]
            distinct = statistics.mean(r["distinct"] for r in records if r["strategy"] == name) if m == config.budget \
                else None
            lines.append(f"| {name} | {m} | {_mean_std(values)} | {' | '.join(cells)} | "
                         f"{best['test_of_best_valid'] - statistics.mean(values):+.4f} | "
                         f"{statistics.mean(valid):.4f} | {' | '.join(valid_cells)} | "
                         f"{'' if distinct is None else f'{distinct:.1f}'} |")
    if volumes:
        lines += ["", "Multi-objective: the hypervolume of each run's front (chosen by validation, counted by test "
                      "value and cost; reference point: the table's largest cost and lowest test value), in % of the "
                      "table's own front, against random search's queries at the same budget.", "",
                  "| strategy | objective | hypervolume (%) | random's (%) | Δ (points) | p | table's |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for name, v in volumes.items():
            mine, randoms = ([100 * x / v["table"] for x in v[k]] for k in ("volumes", "random"))
            diff = [a - b for a, b in zip(mine, randoms)]
            lines.append(f"| {name} | {v['objective']} | {_mean_std(mine, 2)} | "
                         f"{_mean_std(randoms, 2) if randoms else '-'} | "
                         f"{f'{statistics.mean(diff):+.2f}' if diff else '-'} | "
                         f"{f'{_wilcoxon(diff):.3g}' if diff else '-'} | {v['table']:.4g} |")
    seconds = {name: statistics.mean(r["seconds"] for r in records if r["strategy"] == name) for name in config.names()}
    lines += ["", "Seconds per run (the strategy's own time): " +
              ", ".join(f"{name} {s:.2f}" for name, s in seconds.items()), ""]
    with open(os.path.join(config.out, "summary.md"), "w") as f:
        f.write("\n".join(lines))



def overview(folders: Sequence[str], marks: Sequence[int] = (20, 100, 500), column: str = "test") -> str:
    """One Markdown table per mark over several benchmarks' ``anytime.csv`` (one folder per table, e.g.
    ``runs/nbgraph/*``): per dataset each strategy's mean ``column`` (``test``: the test value of the best by
    validation so far; ``best_valid``: that validation value), with its mean paired difference to random search and
    the Wilcoxon p-value; a strategy ahead of random with p < 0.05 is in bold."""
    results = []
    for folder in folders:
        with open(os.path.join(folder, "config.json")) as f:
            config = json.load(f)
        curves: Dict[str, Dict[int, List[float]]] = {}
        with open(os.path.join(folder, "anytime.csv")) as f:
            for row in csv.DictReader(f):
                if "+" not in row["strategy"]:
                    curves.setdefault(row["strategy"], {}).setdefault(int(row["seed"]), []).append(float(row[column]))
        results.append((config, {name: [c for _, c in sorted(seeds.items())] for name, seeds in curves.items()}))
    names = [n for n in results[0][1] if n != "random"]
    out = []
    for m in marks:
        what = "test value of the best by validation" if column == "test" else "best validation value"
        lines = [f"After {m} queries: mean {what} over seeds; Δ (p): paired difference to random search and its "
                 f"Wilcoxon signed-rank p-value.", "",
                 f"| dataset | seeds | random | {' | '.join(names)} |", "|---|---:|---:|" + "---:|" * len(names)]
        for config, curves in results:
            if m > config["budget"]:
                continue
            base = [c[m - 1] for c in curves["random"]]
            cells = []
            for name in names:
                values = [c[m - 1] for c in curves[name]]
                diff = [a - b for a, b in zip(values, base)]
                p = _wilcoxon(diff)
                text = f"{statistics.mean(values):.4f} ({statistics.mean(diff):+.4f}, {p:.2g})"
                cells.append(f"**{text}**" if p < 0.05 and statistics.mean(diff) > 0 else text)
            lines.append(f"| {config['dataset']} | {len(base)} | {statistics.mean(base):.4f} | {' | '.join(cells)} |")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"
