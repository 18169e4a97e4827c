"""``snas-fast compare``: strategies side by side on one space, one budget and one retraining recipe (Bag of Tricks
for NAS), on any registered space (``--space``): every strategy written once against the space protocol, so the code
under every row is the same.

Every strategy x seed searches on the search-train / search-validation parts (its own settings: the defaults of its
config, with ``--search-epochs`` for the supernet strategies, ``--archs`` for rsws's and NASWOT's sampling,
``--random-archs`` x ``--random-epochs`` for the strategies that train what they propose (random, evolution, bo)
and ``--morph-budget`` minutes for the network-morphism ones; ``--search-batch-size`` and ``--search-layers``
for all where given; the space's own settings, ``--nodes``, ``--form``, ..., for all), then its result is retrained
from scratch with the same recipe and seed (:func:`snas_fast.engine.retrain.train`; a morphism search's result is
its best network, trained again from a fresh initialisation) and reported on the test part, which no search sees.
A strategy the space cannot take is refused in one line before anything runs (:meth:`Strategy.refusal
<snas_fast.search.base.Strategy.refusal>`). Written to ``out``:

    cells/<strategy>-seed<k>.json   one finished strategy x seed (kept: --resume skips it)
    <strategy>/seed<k>/search, .../train   the run directories
    leaderboard.csv   strategy, seed, genotype, search seconds, test accuracy, parameters, FLOPs, the own score,
                      the ground-truth percentile
    leaderboard.md    mean ± std per strategy, the ablations against their strategy, then every row
    accuracy_vs_params.png, accuracy_vs_search_time.png

A strategy may be named with a variant, ``<strategy>+<variant>`` (its ``variants``: SNAS's are the Bag of Tricks,
:data:`snas_fast.search.snas.TRICKS`): that strategy with one change of its settings, an ablation row.
``snas-pt`` of a seed whose ``snas`` is also compared selects from that search's supernet (the same settings and
seed train the same weights) instead of training it again; its search seconds include that search's.

``--baselines`` adds the space's hand-designed networks (``snas-fast train --baseline``; on ``darts1d`` MNIST-1D's
published references) as rows trained at every seed with no search, ``--baseline-epochs`` long. ``--groundtruth``
(a CSV of ``snas-fast groundtruth`` on the same dataset) places every row's test accuracy among the ground truth's
random architectures, as a percentile, and adds their distribution as a row.

Under ``torchrun`` the ranks take the cells from one queue (:func:`queue`, :func:`claim`: a rank that finishes one
takes the next that no rank has taken), so they finish within one cell of each other; each rank runs whole cells
alone (:func:`snas_fast.engine.distributed.alone`), writes their run directories and ``cells/*.json``, and rank 0
gathers the rows and writes the leaderboard. The ranks share ``out``'s file system (one machine, as
``torchrun --standalone``).

It stands above the layers (like the CLI): it runs strategies, the engine's retraining and the plots.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .engine import distributed
from .engine.config import RunError, SpaceSettings, TrainingConfig, setting
from .engine.retrain import TrainConfig, load_train_data, retrain_defaults, train
from .engine.rundir import write_json_atomic
from .search.registry import get_strategy, strategy_names
from .search.snas import TRICKS
from .spaces.darts.networks import count_flops

__all__ = ["CompareConfig", "CompareError", "claim", "compare", "matrix", "plan", "queue", "retrain_row",
           "retrain_table", "run_cell", "run_units"]

FIELDS = ["strategy", "seed", "test_acc", "params", "flops", "search_s", "score", "genotype", "percentile"]
#: the label prefix of a baseline's rows (``--baselines``): trained, not searched
BASELINE = "baseline:"

#: seconds of one cell (search and retraining) at the defaults on the digits, 2 cores (README, "Comparing
#: strategies"): only the order in which the ranks take the cells (:func:`queue`) depends on it
WORK = {"snas": 285.0, "darts": 285.0, "snas-pt": 560.0, "random": 60.0, "rsws": 76.0, "naswot": 60.0,
        "evolution": 60.0, "bo": 70.0, "monas": 300.0, "morph-bo": 200.0, "morph-random": 200.0, "morph-bfs": 200.0}

#: The settings of the space a comparison hands every strategy (its own; not the network size, which is the
#: retraining's here and each strategy's search size there).
_CARRIED = tuple(f.name for f in dataclasses.fields(SpaceSettings) if f.name not in ("layers", "channels"))


class CompareError(RunError):
    """A comparison that cannot start (bad setting); one-line message."""


@dataclass
class CompareConfig(TrainingConfig):
    """The strategies, the seeds, each strategy's budget and the one retraining recipe (``epochs``, ``layers``,
    ``channels``, ``drop_path``, ... of :class:`~snas_fast.engine.retrain.TrainConfig`; None: the recipe's for the
    space's data)."""

    Error = CompareError
    roles = ("child", "search", "supernet")
    data_parallel = False  # whole cells per rank

    out: str = setting("runs/compare", "run directory")
    strategies: str = setting("snas,snas-pt,random,rsws,naswot",
                              f"comma-separated strategies ({', '.join(strategy_names())}); <strategy>+<variant> "
                              f"is one with a change of settings (snas's: {', '.join(TRICKS)})")
    seeds: int = setting(2, "seeds per strategy (0 .. seeds - 1)")
    search_epochs: int = setting(20, "epochs of the supernet strategies (snas, snas-pt, rsws, monas)")
    archs: int = setting(100, "architectures a sampling strategy scores without training them (naswot; rsws's "
                              "selection)")
    random_archs: int = setting(8, "candidates each strategy that trains its proposals (random, evolution, bo) trains")
    random_epochs: int = setting(3, "training epochs of each such candidate")
    search_batch_size: Optional[int] = setting(None, "batch size of every strategy's search (default: each "
                                                     "strategy's own; --batch-size is the retraining's)", kind=int)
    search_layers: Optional[int] = setting(None, "layers (cells) of every strategy's search networks (default: each "
                                                 "strategy's own; --layers is the retraining's)", kind=int)
    morph_budget: float = setting(2.0, "minutes of search of each network-morphism strategy (morph-bo, "
                                       "morph-random, morph-bfs)")
    epochs: Optional[int] = setting(None, "retraining epochs of every result (default: the retraining recipe's)",
                                    kind=int)
    drop_path: Optional[float] = setting(None, "retraining drop-path (ramped linearly from 0; default: the "
                                               "retraining recipe's)", kind=float)
    baselines: str = setting("", "comma-separated baselines of the space (snas-fast train --baseline) trained beside "
                                 "the strategies at every seed, each a row with no search (darts1d: MNIST-1D's "
                                 "references convbase, mlp, gru, logistic)")
    baseline_epochs: Optional[int] = setting(None, "training epochs of the baselines (default: the retraining "
                                                   "recipe's; MNIST-1D's references were published at 150)", kind=int)
    groundtruth: Optional[str] = setting(None, "a ground-truth CSV on the same dataset (snas-fast groundtruth, of any "
                                               "space): every row's test accuracy is placed in its distribution, as "
                                               "a percentile", kind=str)

    def default_sources(self):
        return [retrain_defaults(self)] + super().default_sources()

    def baseline_names(self) -> List[str]:
        return [s.strip() for s in str(self.baselines).split(",") if s.strip()]

    def names(self) -> List[str]:
        return [s.strip() for s in str(self.strategies).split(",") if s.strip()]

    def validate(self) -> None:
        super().validate()
        names = self.names()
        if not names:
            raise CompareError(f"strategies: expected a comma-separated list of {', '.join(strategy_names())}, "
                               f"got {self.strategies!r}")
        for name in names:
            base, _, variant = name.partition("+")
            if base not in strategy_names():
                raise CompareError(f"strategies: expected a comma-separated list of {', '.join(strategy_names())} "
                                   f"(each may be <strategy>+<variant>), got {name!r} in {self.strategies!r}")
            strategy = get_strategy(base)
            known = strategy.variants
            if variant and variant not in known:
                raise CompareError(f"strategies: {base}'s variants are {', '.join(known) or 'none'}, got "
                                   f"{variant!r} in {name!r}")
            why = strategy.refusal(self.space_object())
            if why:
                raise CompareError(f"strategies: {why}")
        if len(set(names)) < len(names):
            raise CompareError(f"strategies: expected each at most once, got {self.strategies!r}")
        own = self.space_object().baselines
        for name in self.baseline_names():
            if name not in own:
                raise CompareError(f"baselines: space {self.space} has "
                                   f"{'the baselines ' + ', '.join(own) if own else 'none'}, got {name!r}")
        if self.baseline_epochs is not None:
            self.check_ints(("baseline_epochs",), 1)
        self.check_ints([n for n in ("search_batch_size", "search_layers") if getattr(self, n) is not None], 1)
        if self.groundtruth is not None:
            self.truth()
        self.check_ints(("seeds", "search_epochs", "archs", "random_archs", "random_epochs"), 1)
        if isinstance(self.morph_budget, bool) or not (isinstance(self.morph_budget, (int, float))
                                                       and self.morph_budget > 0):
            raise CompareError(f"morph_budget: expected minutes > 0, got {self.morph_budget!r}")

    def search_config(self, strategy, seed: int, out: str, overrides: Optional[dict] = None):
        """The strategy's own settings for one seed: its defaults, the shared data and device settings, the budget
        of this comparison, then ``overrides``."""
        cls = strategy.config_class
        fields = cls.__dataclass_fields__
        # overwrite: a cell not finished (no cells/*.json) starts again from scratch
        settings = dict(dataset=self.dataset, data_dir=self.data_dir, data_limit=self.data_limit, seed=seed, out=out,
                        device=self.device, space=self.space, num_workers=self.num_workers, overwrite=True,
                        strategy=strategy.name, **{name: getattr(self, name) for name in _CARRIED})
        queries = dict(archs=self.random_archs, epochs=self.random_epochs)
        budget = {"snas": dict(epochs=self.search_epochs), "snas-pt": dict(epochs=self.search_epochs),
                  "darts": dict(epochs=self.search_epochs),
                  "rsws": dict(epochs=self.search_epochs, archs=self.archs),
                  "naswot": dict(archs=self.archs), "monas": dict(epochs=self.search_epochs),
                  "random": queries, "evolution": queries, "bo": queries,
                  **{name: dict(budget=self.morph_budget) for name in ("morph-bo", "morph-random", "morph-bfs")},
                  }.get(strategy.name, {})
        settings.update(budget)
        for name, own in (("search_batch_size", "batch_size"), ("search_layers", "layers")):
            if getattr(self, name) is not None:
                settings[own] = getattr(self, name)
        settings.update(overrides or {})
        return cls(**{k: v for k, v in settings.items() if k in fields})

    def train_config(self, seed: int, out: str) -> TrainConfig:
        return self.carried_to(TrainConfig, seed=seed, out=out, genotype="compare", overwrite=True)

    def truth(self) -> List[float]:
        """The test accuracy of every architecture of ``groundtruth`` (the mean over its seeds); CompareError, one
        line, for a file that is not a ground truth, or one on another dataset."""
        from .groundtruth import arch_means, read_groundtruth

        try:
            header, rows = read_groundtruth(str(self.groundtruth))
        except RunError as error:
            raise CompareError(str(error)) from None
        if header.get("dataset", self.dataset) != self.dataset:  # any space's: the test part is what is compared
            raise CompareError(f"groundtruth: {self.groundtruth} is a sample on {header['dataset']}, the "
                               f"comparison's dataset is {self.dataset}")
        return [m["test_acc"] for m in arch_means(rows)]


def matrix(spaces: Optional[Sequence[str]] = None, strategies: Optional[Sequence[str]] = None) -> str:
    """The strategy x space matrix as a Markdown table, from the registries (``spaces``, ``strategies``: default
    every registered one): a cell says ``runs``, or what the strategy needs that the space lacks
    (:meth:`Strategy.missing <snas_fast.search.base.Strategy.missing>`). The README shows it."""
    from .search.base import NEEDS
    from .spaces import get_space, space_names

    spaces = list(spaces or space_names())
    lines = ["| strategy | " + " | ".join(f"`{s}`" for s in spaces) + " |", "|---|" + "---|" * len(spaces)]
    objects = [get_space(s) for s in spaces]
    for name in strategies or strategy_names():
        strategy = get_strategy(name)
        cells = []
        for space in objects:
            missing = strategy.missing(space)
            cells.append("runs" if missing is None else f"needs {NEEDS[missing[0]]}")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _own_score(result) -> float:
    for name in ("score", "child_val_acc"):
        if hasattr(result, name):
            return float(getattr(result, name))
    return math.nan


def run_cell(config: CompareConfig, label: str, seed: int, overrides: Optional[dict] = None,
             supernet_row: Optional[dict] = None) -> dict:
    """Searches with the strategy of ``label`` (``<strategy>[+<variant>]`` or ``<strategy>@<setting>``: the part
    before ``+`` or ``@``) for one seed, with ``overrides`` of its settings (None: the variant's), and retrains the
    result; the leaderboard row. Its run directories are ``out/<label>/seed<k>/{search,train}``. ``supernet_row``:
    the finished ``snas`` row of this seed, whose supernet ``snas-pt`` selects from."""
    base_name, _, variant = label.replace("@", "+").partition("+")
    strategy = get_strategy(base_name)
    if overrides is None:
        overrides = strategy.variants.get(variant, {})
    base = os.path.join(config.out, label, f"seed{seed}")
    search_config = config.search_config(strategy, seed, os.path.join(base, "search"), overrides)
    shared_s = 0.0
    if supernet_row is not None:
        search_config.supernet = os.path.join(config.out, "snas", f"seed{seed}", "search")
        shared_s = supernet_row["search_s"]
    data = strategy.load_data(search_config)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a strategy's warnings are in its run directory and in the leaderboard
        result = strategy.run(search_config, data, progress=False)
    search_s = time.perf_counter() - start + shared_s
    return dict(retrain_row(config, seed, result.genotype, os.path.join(base, "train")), strategy=label,
                search_s=search_s, score=_own_score(result))


def retrain_row(config: CompareConfig, seed: int, genotype, out: str) -> dict:
    """``genotype`` retrained from scratch with the comparison's recipe and seed in ``out``, reported on the test
    part: the row's seed, test accuracy, parameters, FLOPs and genotype. On a tabular space the table's test metric
    is the retraining's (its authors trained every architecture: :meth:`SearchSpace.query
    <snas_fast.spaces.SearchSpace.query>` with ``"test"``)."""
    space = config.bound_space()
    if space.lacks("query") is None:
        return dict(seed=seed, test_acc=float(space.query(genotype, "test")),
                    params=space.costs(genotype).get("params", math.nan), flops=math.nan,
                    genotype=json.dumps(space.to_dict(genotype)))
    train_config = config.train_config(seed, out)
    data = load_train_data(train_config)
    trained = train(train_config, data, genotype=genotype, progress=False)
    info = data[2]
    flops = count_flops(trained.model.eval(), info.image_shape) if info.kind == "images" else math.nan
    return dict(seed=seed, test_acc=trained.test_acc, params=trained.params, flops=flops,
                genotype=json.dumps(space.to_dict(genotype)))


def baseline_row(config: CompareConfig, seed: int, name: str, out: str) -> dict:
    """The space's baseline ``name`` trained from scratch with the comparison's recipe (``baseline_epochs`` epochs)
    and seed in ``out``, reported on the test part: a leaderboard row with no search."""
    train_config = config.train_config(seed, out)
    train_config = dataclasses.replace(train_config, baseline=name,
                                       epochs=config.baseline_epochs or train_config.epochs)
    trained = train(train_config, load_train_data(train_config), progress=False)
    return dict(seed=seed, test_acc=trained.test_acc, params=trained.params, flops=math.nan, search_s=0.0,
                score=math.nan, genotype=json.dumps({"baseline": name, "epochs": train_config.epochs}),
                strategy=BASELINE + name)


Unit = List[Tuple[str, int]]


def plan(names: Sequence[str], seeds: int, baselines: Sequence[str] = ()) -> List[Unit]:
    """The cells of a comparison in the order they run, grouped in units that one process runs in turn: ``snas``
    and ``snas-pt`` of one seed form one unit (snas-pt selects from snas's supernet); every other cell is a unit
    of its own. The strategies first, then the variants (ablations), then the ``baselines``
    (:data:`BASELINE` ``+ name``)."""
    paired = "snas" in names and "snas-pt" in names
    units: List[Unit] = []
    for phase in (False, True):
        for name in names:
            if ("+" in name) != phase or (paired and name == "snas-pt"):
                continue
            for seed in range(seeds):
                units.append([(name, seed), ("snas-pt", seed)] if paired and name == "snas" else [(name, seed)])
    return units + [[(BASELINE + name, seed)] for name in baselines for seed in range(seeds)]


def queue(units: Sequence[Unit]) -> List[int]:
    """The order in which the ranks take the units (indices into ``units``): the strategies, then the variants, so
    that the strategies' cells finish first, each longest first (:data:`WORK`); then the baselines, which only
    train. So the last units to start are short ones and no rank waits long for another at the end."""
    def work(unit: Unit) -> float:
        return sum(WORK.get(name.replace("@", "+").partition("+")[0], 100.0) for name, _ in unit)

    def key(i: int):
        label = units[i][0][0]
        return label.startswith(BASELINE), "+" in label, -work(units[i]), i

    return sorted(range(len(units)), key=key)


def claim(claims: str, index: int) -> bool:
    """True for the one caller that claims unit ``index`` in the directory ``claims`` (its file created with
    ``O_EXCL``, which one file system makes atomic), False for every later one."""
    try:
        os.close(os.open(os.path.join(claims, f"unit{index}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _mean_std(values: List[float], signed: bool = False) -> str:
    """``mean ± std`` (the sample standard deviation), the value alone for one, ``-`` for none."""
    form = "+.4f" if signed else ".4f"
    if len(values) < 2:
        return format(values[0], form) if values else "-"
    return f"{format(statistics.mean(values), form)} ± {statistics.stdev(values):.4f}"


def _paired_delta(rows: List[dict], base: List[dict], key: str) -> str:
    """Mean ± std over the seeds both have of ``rows[key] - base[key]``."""
    theirs = {r["seed"]: r[key] for r in base}
    deltas = [r[key] - theirs[r["seed"]] for r in rows if r["seed"] in theirs]
    return _mean_std(deltas, signed=True)


def _ablation_lines(by: Dict[str, List[dict]]) -> List[str]:
    """The variants' table: each against its strategy, differences paired by seed."""
    variants = [name for name in by if "+" in name]
    if not variants:
        return []
    lines = ["", "Ablations: the strategy with one change of its settings, against the strategy itself (differences "
                 "per seed, then mean ± std).", "",
             "| variant | change | test accuracy | Δ test accuracy | own score | Δ own score |",
             "|---|---|---:|---:|---:|---:|"]
    for name in variants:
        base, _, variant = name.partition("+")
        change = ", ".join(f"{k}={v}" for k, v in get_strategy(base).variants[variant].items())
        rows, base_rows = by[name], by.get(base, [])
        lines.append(f"| {name} | {change} | {_mean_std([r['test_acc'] for r in rows])} | "
                     f"{_paired_delta(rows, base_rows, 'test_acc')} | {_mean_std([r['score'] for r in rows])} | "
                     f"{_paired_delta(rows, base_rows, 'score')} |")
    return lines


def write_leaderboard(rows: List[dict], out: str, truth: Optional[Sequence[float]] = None) -> None:
    """``leaderboard.csv``, ``leaderboard.md`` and the two scatter plots of ``rows``; with ``truth`` (a ground
    truth's test accuracies, one per architecture) every row's percentile in it, and the ground truth's own row
    (random architectures trained by the same recipe)."""
    from .groundtruth import percentile
    from .viz import plots

    for row in rows:
        row["percentile"] = percentile(row["test_acc"], truth) if truth else math.nan
    with open(os.path.join(out, "leaderboard.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    by: Dict[str, List[dict]] = {}
    for row in rows:
        by.setdefault(row["strategy"], []).append(row)
    extra = " ground-truth percentile |" if truth else ""
    lines = ([f"Ground truth: {len(truth)} random architectures trained by the same recipe (their mean over seeds); "
              f"a row's percentile is the share of them it beats (ties half), averaged over its seeds.", ""]
             if truth else [])
    lines += ["| strategy | seeds | test accuracy | params | search seconds |" + extra,
              "|---|---:|---:|---:|---:|" + ("---:|" if truth else "")]
    ranked = sorted(by.items(), key=lambda kv: -statistics.mean(r["test_acc"] for r in kv[1]))
    if truth:
        ranked.append(("random architectures (ground truth)", None))
        ranked.sort(key=lambda kv: -(statistics.mean(truth) if kv[1] is None else
                                     statistics.mean(r["test_acc"] for r in kv[1])))
    for name, rs in ranked:
        if rs is None:
            lines.append(f"| {name} | {len(truth)} architectures | {_mean_std(list(truth))} | - | - | "
                         f"{statistics.median(percentile(t, truth) for t in truth):.0f} (median) |")
            continue
        cells = f" {statistics.mean(r['percentile'] for r in rs):.0f} |" if truth else ""
        lines.append(f"| {name} | {len(rs)} | {_mean_std([r['test_acc'] for r in rs])} | "
                     f"{statistics.mean(r['params'] for r in rs):,.0f} | "
                     f"{statistics.mean(r['search_s'] for r in rs):.1f} |" + cells)
    lines += _ablation_lines(by)
    lines += ["", "| strategy | seed | test accuracy | params | FLOPs | search seconds | own score |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        flops = "-" if isinstance(r["flops"], float) and math.isnan(r["flops"]) else f"{r['flops']:,}"
        lines.append(f"| {r['strategy']} | {r['seed']} | {r['test_acc']:.4f} | {r['params']:,} | {flops} | "
                     f"{r['search_s']:.1f} | {r['score']:.4g} |")
    with open(os.path.join(out, "leaderboard.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plots.plot_scatter({k: [(r["params"], r["test_acc"]) for r in v] for k, v in by.items()},
                       os.path.join(out, "accuracy_vs_params.png"), "parameters (retrained network)",
                       "test accuracy")
    plots.plot_scatter({k: [(r["search_s"], r["test_acc"]) for r in v] for k, v in by.items()},
                       os.path.join(out, "accuracy_vs_search_time.png"), "search seconds", "test accuracy",
                       logx=True)


def _check_out(config: CompareConfig, resume: bool):
    """The problem with ``config.out`` (one line) or None; on success, ``config.json`` written there."""
    cells = os.path.join(config.out, "cells")
    if not resume and os.path.isdir(cells) and os.listdir(cells):
        return (f"--out {config.out}: holds a comparison already; continue it with --resume {config.out} or choose "
                f"another --out")
    os.makedirs(cells, exist_ok=True)
    write_json_atomic(config.to_dict(), os.path.join(config.out, "config.json"))
    return None


def run_units(config: CompareConfig, units: Sequence[Unit], run: Callable[[str, int, Optional[dict]], dict],
              resume: bool, progress: bool) -> List[dict]:
    """The rows of every cell of ``units`` (``run(label, seed, previous row of its unit)`` makes one), in unit
    order, on every rank. A finished cell (``out/cells/<label>-seed<k>.json``) is read back, not redone; without
    ``resume`` a directory that already holds cells is refused (one line), so two configurations never mix. In a
    process group the ranks take the units in :func:`queue`'s order, each the next one no rank has claimed
    (:func:`claim`, in ``out/claims``, emptied by rank 0 before any rank claims and removed at the end), run them
    alone, and the rows are gathered."""
    ctx = distributed.context(config.device)
    claims = os.path.join(config.out, "claims")
    problem = None
    if ctx.is_main:
        problem = _check_out(config, resume)
        if problem is None:  # an interrupted run's claims: their units are not finished
            shutil.rmtree(claims, ignore_errors=True)
            os.makedirs(claims)
    problem = distributed.broadcast_object(problem)
    if problem:
        raise config.Error(problem)
    start, mine = time.perf_counter(), {}
    for i in queue(units):
        if not claim(claims, i):
            continue
        previous = None
        for j, (label, seed) in enumerate(units[i]):
            path = os.path.join(config.out, "cells", f"{label}-seed{seed}.json")
            if os.path.exists(path):
                with open(path) as f:
                    row = json.load(f)
            else:
                with distributed.alone():
                    row = run(label, seed, previous)
                write_json_atomic(row, path)
                if progress:
                    where = f" (rank {ctx.rank})" if ctx.distributed else ""
                    search = f", search {row['search_s']:.0f} s" if "search_s" in row else ""
                    print(f"{label} seed {seed}{where}: test acc {row['test_acc']:.4f}, {row['params']:,} params"
                          f"{search}; {time.perf_counter() - start:.0f} s in", flush=True)
            mine[(i, j)] = row
            previous = row
    gathered = {key: row for rank_rows in distributed.gather_objects(mine) for key, row in rank_rows.items()}
    if ctx.is_main:
        shutil.rmtree(claims, ignore_errors=True)
    return [gathered[key] for key in sorted(gathered)]


def compare(config: CompareConfig, resume: bool = False, progress: bool = True) -> List[dict]:
    """Runs every strategy x seed (:func:`run_units`), then writes the leaderboard; returns its rows (on every
    rank). Rank 0 writes the leaderboard."""
    config.validate()

    def run(label: str, seed: int, previous: Optional[dict]) -> dict:
        if label.startswith(BASELINE):
            name = label[len(BASELINE):]
            return baseline_row(config, seed, name, os.path.join(config.out, name, f"seed{seed}", "train"))
        return run_cell(config, label, seed, supernet_row=previous if label == "snas-pt" else None)

    truth = config.truth() if config.groundtruth else None
    baselines = config.baseline_names()
    rows = run_units(config, plan(config.names(), config.seeds, baselines), run, resume, progress)
    order = {name: i for i, name in enumerate(config.names() + [BASELINE + b for b in baselines])}
    rows.sort(key=lambda r: (order[r["strategy"]], r["seed"]))
    if distributed.context(config.device).is_main:
        write_leaderboard(rows, config.out, truth)
    return rows


def retrain_table(run_dirs: Sequence[str]) -> str:
    """A Markdown table of retraining runs (their ``summary.json``): model, parameters, width, epochs, test
    accuracy (``python -m snas_fast.compare table RUN_DIR ...``)."""
    lines = ["| model | parameters | width | epochs | test accuracy |", "|---|---:|---:|---:|---:|"]
    for d in run_dirs:
        with open(os.path.join(d, "summary.json")) as f:
            s = json.load(f)
        lines.append(f"| {s['model']} | {s['params']:,} | {s['width']} | {s['epochs']} | {s['test_acc']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m snas_fast.compare table RUN_DIR ...
    import sys

    if len(sys.argv) < 3 or sys.argv[1] != "table":
        sys.exit("usage: python -m snas_fast.compare table RUN_DIR [RUN_DIR ...]")
    print(retrain_table(sys.argv[2:]))
