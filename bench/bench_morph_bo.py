"""The morphism search's proposers on a synthetic objective, no training: ``f(x) = -edit_distance(x, target)``,
``target`` four morphisms from Auto-Keras's first network (``f`` = -3.17 there). For each strategy and seed, the
proposals of :func:`snas_fast.search.morph.propose` are scored by ``f`` alone; the table gives the mean best ``f``
after 10, 20 and 30 evaluations, the evaluations needed to reach ``--reach`` (per seed; '-' = not within the
budget), and the mean seconds per proposal. ``bo`` is run with several bounds on its chains of morphisms
(``max_chain``; None = Auto-Keras's unbounded acquisition search).

    python bench/bench_morph_bo.py [--seeds 6] [--evals 30] [--reach -1.0]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from snas_fast.engine.seeds import make_generator
from snas_fast.search.bayes import Observation
from snas_fast.search.morph import propose
from snas_fast.spaces.morph import Morphism, Spec, edit_distance

VARIANTS = [("bo", 1), ("bo", 2), ("bo", 3), ("bo", None), ("random", None), ("bfs", None)]


def target_spec() -> Spec:
    spec = Spec.initial(1, 10, width=16, image_size=8)
    for m in (Morphism("deeper", 3, kernel=3), Morphism("wider", 5, add=16),
              Morphism("add_skip", 5, source=1, pools=2), Morphism("deeper", 7)):
        spec = spec.apply(m)
    return spec


def trajectory(strategy: str, chain, seed: int, evals: int, target: Spec):
    first = Spec.initial(1, 10, width=16, image_size=8)
    observations = [Observation(1, first, -edit_distance(first, target))]
    best, start = [observations[0].metric], time.perf_counter()
    for step in range(1, evals):
        p = propose(strategy, observations, make_generator(seed, step), 8, max_width=64, seed=seed, max_chain=chain)
        if p is None:
            break
        observations.append(Observation(step + 1, p.spec, -edit_distance(p.spec, target)))
        best.append(max(best[-1], observations[-1].metric))
    best += [best[-1]] * (evals - len(best))
    return best, (time.perf_counter() - start) / max(evals - 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--evals", type=int, default=30)
    parser.add_argument("--reach", type=float, default=-1.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    target = target_spec()
    marks = [m for m in (10, 20, 30) if m <= args.evals]
    print(f"| strategy | {' | '.join(f'best f after {m}' for m in marks)} | evaluations to reach {args.reach} "
          f"(per seed) | s per proposal |")
    print("|---|" + "---:|" * len(marks) + "---|---:|")
    for strategy, chain in VARIANTS:
        runs = [trajectory(strategy, chain, seed, args.evals, target) for seed in range(args.seeds)]
        reached = [next((i + 1 for i, b in enumerate(best) if b >= args.reach), None) for best, _ in runs]
        name = strategy + (f" (max_chain {chain})" if strategy == "bo" else "")
        cells = " | ".join(f"{statistics.mean(best[m - 1] for best, _ in runs):.2f}" for m in marks)
        print(f"| {name} | {cells} | {', '.join(str(r) if r else '-' for r in reached)} | "
              f"{statistics.mean(s for _, s in runs):.3f} |", flush=True)


if __name__ == "__main__":
    main()
