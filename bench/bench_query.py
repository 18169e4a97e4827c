"""The query-based strategies (random, evolution, bo) on synthetic landscapes over the real spaces' decisions, no
training: do the optimisers exploit structure where there is some? Each landscape is a tabular space
(:class:`SyntheticTable`) whose architectures are those of a built-in space (its decisions, sampling, mutation and
encoding) and whose "validation accuracy" is an NK-style function of the decisions, fixed by a seed: a term per
decision plus ``pairs`` random pairwise interactions, scaled into [0, 1] by the best and worst of 20,000 random draws
(so 1.0 is about the best a long random search finds). Every strategy runs through its own ``run`` (the
:class:`~snas_fast.search.base.CandidateSearch` skeleton and :class:`~snas_fast.search.evaluators.TabularEvaluator`),
``--evals`` evaluations, ``--seeds`` seeds (landscape and search seeded alike); the table gives the mean (± std) best
score after 25, 50 and all evaluations, and per strategy the seeds on which it beats random search at the end.

This is evidence that the optimisers are correct and sample-efficient on landscapes with structure, not that they
find better networks: that needs a benchmark whose accuracies are measured (NAS-Bench-Graph, MNIST-1D).

    python bench/bench_query.py [--seeds 10] [--evals 100] [--spaces darts,gnn]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings
from types import SimpleNamespace

import torch

from snas_fast.search.registry import get_strategy
from snas_fast.spaces import SearchSpace, get_space, register_space

STRATEGIES = ("random", "evolution", "bo")


class SyntheticTable(SearchSpace):
    """``base``'s architectures with a synthetic table: ``query(arch) = (f(choices) - low) / (high - low)``."""

    data_kind = None

    def __init__(self, base: SearchSpace, seed: int, pairs: int = 40):
        self.base, self.name = base, f"synthetic-{base.name}"
        g = torch.Generator().manual_seed(seed)
        sizes = [d.size for d in base.decisions()]
        self.unary = [torch.randn(n, generator=g) for n in sizes]
        idx = torch.randint(len(sizes), (pairs, 2), generator=g).tolist()
        self.pairs = [(i, j, torch.randn(sizes[i], sizes[j], generator=g)) for i, j in idx if i != j]
        draws = [self._f(base.to_choices(base.sample(g))) for _ in range(20000)]
        self.low, self.high = min(draws), max(draws)

    def _f(self, c) -> float:
        return float(sum(u[k] for u, k in zip(self.unary, c)) + sum(w[c[i], c[j]] for i, j, w in self.pairs))

    def decisions(self):
        return self.base.decisions()

    def from_choices(self, choices):
        return self.base.from_choices(choices)

    def to_choices(self, arch):
        return self.base.to_choices(arch)

    def sample(self, generator=None, zero=False):
        return self.base.sample(generator)

    def encode(self, arch):
        return self.base.encode(arch)

    def to_dict(self, arch):
        return dict(self.base.to_dict(arch), space=self.name)

    def from_dict(self, d):
        return self.base.from_dict(dict(d, space=self.base.name))

    def query(self, arch, metric="valid"):
        return (self._f(self.to_choices(arch)) - self.low) / (self.high - self.low)


def run(strategy_name: str, space_name: str, seed: int, evals: int, out: str):
    strategy = get_strategy(strategy_name)
    config = strategy.config_class(space=space_name, archs=evals, seed=seed, out=out, overwrite=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return strategy.run(config, None, progress=False).scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--evals", type=int, default=100)
    parser.add_argument("--spaces", default="darts,gnn")
    args = parser.parse_args()
    torch.set_num_threads(1)
    marks = sorted({m for m in (25, 50, args.evals) if m <= args.evals})
    print(f"{args.seeds} seeds, {args.evals} evaluations each; best score (1.0: the best of 20,000 random draws)\n")
    print(f"| landscape | strategy | {' | '.join(f'after {m}' for m in marks)} | seeds beating random at the end |")
    print("|---|---|" + "---:|" * len(marks) + "---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for base_name in args.spaces.split(","):
            base = get_space(base_name).configure(SimpleNamespace())
            best = {}
            for seed in range(args.seeds):
                table = SyntheticTable(base, seed)
                register_space(table.name, lambda table=table: table)
                for name in STRATEGIES:
                    scores = run(name, table.name, seed, args.evals, f"{tmp}/{name}")
                    running = [max(scores[: k + 1]) for k in range(len(scores))]
                    best.setdefault(name, []).append(running)
            for name in STRATEGIES:
                cells = []
                for m in marks:
                    values = [r[m - 1] for r in best[name]]
                    cells.append(f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}")
                wins = sum(a[-1] > b[-1] for a, b in zip(best[name], best["random"]))
                print(f"| {base_name} decisions | {name} | {' | '.join(cells)} | "
                      f"{'-' if name == 'random' else f'{wins}/{args.seeds}'} |")


if __name__ == "__main__":
    main()
