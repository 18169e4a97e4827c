"""``snas-fast compare``: strategies side by side on one budget and one retraining recipe (Bag of Tricks for NAS).

Every strategy x seed searches on the search-train / search-validation parts (its own settings: the defaults of its
config, with ``--search-epochs`` for the supernet strategies and ``--archs`` for the sampling ones), then its result
is retrained from scratch with the same recipe and seed (:func:`snas_fast.engine.retrain.train`) and reported on the
test part, which no search sees. Written to ``out``:

    cells/<strategy>-seed<k>.json   one finished strategy x seed (kept: a rerun or --resume skips it)
    <strategy>/seed<k>/search, .../train   the run directories
    leaderboard.csv   strategy, seed, genotype, search seconds, test accuracy, parameters, FLOPs, the own score
    leaderboard.md    mean ± std per strategy, then every row
    accuracy_vs_params.png, accuracy_vs_search_time.png

It stands above the layers (like the CLI): it runs strategies, the engine's retraining and the plots.
"""
from __future__ import annotations

import csv
import json
import math
import os
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Dict, List

from .engine.config import RunConfig, RunError, setting
from .engine.retrain import TrainConfig, load_train_data, train
from .engine.rundir import write_json_atomic
from .search.registry import get_strategy, strategy_names
from .spaces.darts.networks import count_flops

__all__ = ["CompareConfig", "CompareError", "compare"]

FIELDS = ["strategy", "seed", "test_acc", "params", "flops", "search_s", "score", "genotype"]


class CompareError(RunError):
    """A comparison that cannot start (bad setting); one-line message."""


@dataclass
class CompareConfig(RunConfig):
    """The strategies, the seeds, each strategy's budget and the one retraining recipe (``epochs``, ``layers``,
    ``channels``, ``drop_path`` of :class:`~snas_fast.engine.retrain.TrainConfig`)."""

    Error = CompareError

    out: str = setting("runs/compare", "run directory")
    strategies: str = setting("snas,snas-pt,random,rsws,naswot",
                              f"comma-separated strategies ({', '.join(strategy_names())})")
    seeds: int = setting(2, "seeds per strategy (0 .. seeds - 1)")
    search_epochs: int = setting(20, "epochs of the supernet strategies (snas, snas-pt, rsws)")
    archs: int = setting(100, "architectures a sampling strategy scores (naswot; rsws's selection)")
    random_archs: int = setting(8, "candidates random search trains")
    random_epochs: int = setting(3, "training epochs of each random-search candidate")
    epochs: int = setting(10, "retraining epochs of every result")
    layers: int = setting(8, "cells of the retrained network")
    channels: int = setting(16, "channels of the retrained network's first cells")
    drop_path: float = setting(0.2, "retraining drop-path (ramped linearly from 0)")

    def names(self) -> List[str]:
        return [s.strip() for s in str(self.strategies).split(",") if s.strip()]

    def validate(self) -> None:
        super().validate()
        names = self.names()
        unknown = [s for s in names if s not in strategy_names()]
        if not names or unknown:
            raise CompareError(f"strategies: expected a comma-separated list of {', '.join(strategy_names())}, "
                               f"got {self.strategies!r}")
        self.check_ints(("seeds", "search_epochs", "archs", "random_archs", "random_epochs"), 1)

    def search_config(self, strategy, seed: int, out: str):
        """The strategy's own settings for one seed: its defaults, the shared data and device settings, and the
        budget of this comparison."""
        cls = strategy.config_class
        fields = cls.__dataclass_fields__
        settings = dict(dataset=self.dataset, data_dir=self.data_dir, data_limit=self.data_limit, seed=seed, out=out,
                        device=self.device, space=self.space, num_workers=self.num_workers)
        budget = {"snas": dict(epochs=self.search_epochs), "snas-pt": dict(epochs=self.search_epochs),
                  "rsws": dict(epochs=self.search_epochs, archs=self.archs),
                  "naswot": dict(archs=self.archs),
                  "random": dict(archs=self.random_archs, epochs=self.random_epochs)}.get(strategy.name, {})
        settings.update(budget)
        return cls(**{k: v for k, v in settings.items() if k in fields})

    def train_config(self, seed: int, out: str) -> TrainConfig:
        shared = {k: v for k, v in self.to_dict().items() if k in TrainConfig.__dataclass_fields__}
        return TrainConfig(**dict(shared, seed=seed, out=out, genotype="compare"))


def _own_score(result) -> float:
    for name in ("score", "child_val_acc"):
        if hasattr(result, name):
            return float(getattr(result, name))
    return math.nan


def _cell(config: CompareConfig, name: str, seed: int, progress: bool) -> dict:
    strategy = get_strategy(name)
    base = os.path.join(config.out, name, f"seed{seed}")
    search_config = config.search_config(strategy, seed, os.path.join(base, "search"))
    data = strategy.load_data(search_config)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a strategy's warnings are in its run directory and in the leaderboard
        result = strategy.run(search_config, data, progress=False)
    search_s = time.perf_counter() - start
    train_config = config.train_config(seed, os.path.join(base, "train"))
    trained = train(train_config, load_train_data(train_config), genotype=result.genotype, progress=False)
    image = data[2].image_size
    return dict(strategy=name, seed=seed, test_acc=trained.test_acc, params=trained.params,
                flops=count_flops(trained.model.eval(), image), search_s=search_s, score=_own_score(result),
                genotype=result.genotype.to_json())


def _mean_std(values: List[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}" if values else "-"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def write_leaderboard(rows: List[dict], out: str) -> None:
    """``leaderboard.csv``, ``leaderboard.md`` and the two scatter plots of ``rows``."""
    from .viz import plots

    with open(os.path.join(out, "leaderboard.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    by: Dict[str, List[dict]] = {}
    for row in rows:
        by.setdefault(row["strategy"], []).append(row)
    lines = ["| strategy | seeds | test accuracy | params | search seconds |", "|---|---:|---:|---:|---:|"]
    ranked = sorted(by.items(), key=lambda kv: -statistics.mean(r["test_acc"] for r in kv[1]))
    for name, rs in ranked:
        lines.append(f"| {name} | {len(rs)} | {_mean_std([r['test_acc'] for r in rs])} | "
                     f"{statistics.mean(r['params'] for r in rs):,.0f} | "
                     f"{statistics.mean(r['search_s'] for r in rs):.1f} |")
    lines += ["", "| strategy | seed | test accuracy | params | FLOPs | search seconds | own score |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['strategy']} | {r['seed']} | {r['test_acc']:.4f} | {r['params']:,} | {r['flops']:,} | "
                     f"{r['search_s']:.1f} | {r['score']:.4g} |")
    with open(os.path.join(out, "leaderboard.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plots.plot_scatter({k: [(r["params"], r["test_acc"]) for r in v] for k, v in by.items()},
                       os.path.join(out, "accuracy_vs_params.png"), "parameters (retrained network)",
                       "test accuracy")
    plots.plot_scatter({k: [(r["search_s"], r["test_acc"]) for r in v] for k, v in by.items()},
                       os.path.join(out, "accuracy_vs_search_time.png"), "search seconds", "test accuracy",
                       logx=True)


def compare(config: CompareConfig, resume: bool = False, progress: bool = True) -> List[dict]:
    """Runs every strategy x seed, then writes the leaderboard; returns its rows. With ``resume``, a finished
    strategy x seed (its ``cells/*.json``) is read back, not redone; without it, a directory that already holds a
    comparison is refused (one line), so two configurations never mix."""
    config.validate()
    cells = os.path.join(config.out, "cells")
    if not resume and os.path.isdir(cells) and os.listdir(cells):
        raise CompareError(f"--out {config.out}: holds a comparison already; continue it with --resume "
                           f"{config.out} or choose another --out")
    os.makedirs(cells, exist_ok=True)
    write_json_atomic(config.to_dict(), os.path.join(config.out, "config.json"))
    rows = []
    for name in config.names():
        for seed in range(config.seeds):
            path = os.path.join(cells, f"{name}-seed{seed}.json")
            if os.path.exists(path):
                with open(path) as f:
                    rows.append(json.load(f))
                continue
            row = _cell(config, name, seed, progress)
            write_json_atomic(row, path)
            rows.append(row)
            if progress:
                print(f"{name} seed {seed}: test acc {row['test_acc']:.4f}, {row['params']:,} params, search "
                      f"{row['search_s']:.0f} s", flush=True)
    write_leaderboard(rows, config.out)
    return rows
