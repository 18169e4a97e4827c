"""The searched cell against random cells, retrained with one recipe and reported on the test part.

    python bench/compare_cells.py --search runs/mnist1d --random 3 --out runs/mnist1d-cells   (make compare-cells)

Retrains, each from scratch with the `snas-fast train` defaults of the search's space and dataset (its
``config.json``; a search directory without one is taken as DARTS on the digits) and the same seed and epochs for
all: the search's derived cell (SNAS's edge_all form), its top-2 form (DARTS's rule on the same softmax(log_alpha)),
and ``--random`` cells drawn from the space's prior (:meth:`SearchSpace.sample
<snas_fast.spaces.SearchSpace.sample>`: uniformly over the top-2 cells, the random baseline of DARTS and of Li &
Talwalkar). Every number is test accuracy on the test part no search saw. With ``--groundtruth`` (a CSV of
``snas-fast groundtruth`` of the same space), each cell's percentile among its random architectures too. Each
retraining is its own run directory under ``--out``; one that has finished (its summary.json) is not run again, so
an interrupted comparison picks up where it stopped; one that trained another cell (a new search) or other settings
is replaced. Writes ``--out``/comparison.json and comparison.md (the table printed at the end).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys

import torch

from snas_fast.engine.retrain import TrainConfig, load_train_data, resolve_genotype, train
from snas_fast.groundtruth import arch_means, percentile, read_groundtruth
from snas_fast.spaces import get_space
from snas_fast.spaces.darts import genotypes
from snas_fast.viz.callbacks import train_plots

#: the settings a finished retraining must share with this comparison to be kept
SETTINGS = ("space", "dataset", "epochs", "seed", "layers", "channels", "data_limit")


def search_setting(search_dir: str) -> tuple:
    """``(space, dataset)`` of the search in ``search_dir`` (its config.json; DARTS on the digits without one)."""
    try:
        with open(os.path.join(search_dir, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return "darts", "digits"
    return config.get("space", "darts"), config.get("dataset", "digits")


def candidates(search_dir: str, n_random: int, seed: int, space):
    """``[(name, genotype, where it comes from)]``: the search's cell in both forms, then ``n_random`` cells of
    ``space``'s prior."""
    found, source = resolve_genotype(search_dir, space)
    with open(os.path.join(search_dir, "genotype.json")) as f:
        saved = json.load(f)
    top2 = genotypes.derive(torch.tensor(saved["normal_alpha"]), torch.tensor(saved["reduce_alpha"]), "top2",
                            probs=True, space=space)
    out = [("searched (edge_all)", found, source), ("searched (top2)", top2, "top-2 rule of " + source)]
    generator = torch.Generator().manual_seed(seed)
    out += [(f"random {i}", space.sample(generator), f"{space.name}'s prior, seed {seed}, draw {i}")
            for i in range(n_random)]
    return out


def _same_run(run: str, genotype, config: TrainConfig, space) -> bool:
    """Whether the run directory ``run`` trains ``genotype`` with the settings of ``config``."""
    try:
        with open(os.path.join(run, "genotype.json")) as f:
            trained = space.from_dict(json.load(f)["genotype"])
        with open(os.path.join(run, "config.json")) as f:
            saved = json.load(f)
    except (OSError, KeyError, ValueError):
        return False
    return trained == genotype and all(saved.get(k) == getattr(config, k) for k in SETTINGS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--search", default="runs/mnist1d", help="a search run directory (its genotype.json)")
    p.add_argument("--random", type=int, default=3, help="random cells to retrain")
    p.add_argument("--epochs", type=int, default=None, help="retraining epochs (default: the space's recipe's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the retrainings and of the random draws")
    p.add_argument("--out", default="runs/mnist1d-cells", help="folder of the run directories and the table")
    p.add_argument("--layers", type=int, default=None, help="cells of the retrained network (default: the space's)")
    p.add_argument("--channels", type=int, default=None, help="C of the retrained network (default: the space's)")
    p.add_argument("--data-limit", type=int, default=None, help="keep the first N examples of each part (smoke runs)")
    p.add_argument("--groundtruth", default=None, help="a ground-truth CSV of the space: each cell's percentile in it")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.random < 2:
        p.error(f"--random: expected at least 2 random cells (for a standard deviation), got {args.random}")
    if not os.path.isfile(os.path.join(args.search, "genotype.json")):
        p.error(f"--search {args.search}: no genotype.json there (run `make search` first)")
    with open(os.path.join(args.search, "genotype.json")) as f:
        if "initial_genotype" not in json.load(f):  # written since the digits have a test part no search sees
            p.error(f"--search {args.search}: a search made before the digits had a held-out test part (it may have "
                    "validated on today's test images): run `make search` again")

    truth = None
    if args.groundtruth:
        try:
            truth = [m["test_acc"] for m in arch_means(read_groundtruth(args.groundtruth)[1])]
        except Exception as error:  # a one-line GroundTruthError
            p.error(f"--groundtruth: {error}")

    space_name, dataset = search_setting(args.search)
    base = TrainConfig(space=space_name, dataset=dataset, genotype="compare-cells", epochs=args.epochs,
                       seed=args.seed, out=args.out, layers=args.layers, channels=args.channels,
                       data_limit=args.data_limit)
    space = base.bound_space(load_train_data(base)[2])
    rows = []
    data = None
    for name, genotype, source in candidates(args.search, args.random, args.seed, space):
        run = os.path.join(args.out, name.replace(" ", "_").replace("(", "").replace(")", ""))
        summary_path = os.path.join(run, "summary.json")
        config = dataclasses.replace(base, out=run)
        if os.path.isdir(run) and not _same_run(run, genotype, config, space):  # another cell, or other settings
            shutil.rmtree(run)
        if not os.path.exists(summary_path):
            # the cell as a file, so that the run directory resumes (`snas-fast train --resume`) on its own
            os.makedirs(args.out, exist_ok=True)
            cell_file = os.path.abspath(f"{run}.genotype.json")
            with open(cell_file, "w") as f:
                json.dump(dict(genotype=space.to_dict(genotype), source=source), f, indent=1)
            config = dataclasses.replace(config, genotype=cell_file)
            data = data or load_train_data(config)
            resume = os.path.exists(os.path.join(run, "checkpoint.pt"))
            print(f"{name}: retraining into {run}", flush=True)
            train(config, data, genotype=genotype, resume=resume, progress=not args.quiet, callbacks=[train_plots])
        with open(summary_path) as f:
            summary = json.load(f)
        rows.append(dict(name=name, test_acc=summary["test_acc"], params=summary["params"], source=source,
                         genotype=space.to_dict(genotype),
                         percentile=percentile(summary["test_acc"], truth) if truth else None))

    random_accs = [r["test_acc"] for r in rows if r["name"].startswith("random")]
    report = dict(search=args.search, space=space_name, dataset=dataset, epochs=base.epochs, seed=args.seed,
                  layers=base.layers, channels=base.channels, data_limit=args.data_limit, rows=rows,
                  random_mean=statistics.mean(random_accs), random_std=statistics.stdev(random_accs),
                  groundtruth=args.groundtruth)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "comparison.json"), "w") as f:
        json.dump(report, f, indent=1)
    extra = (" ground-truth percentile |", "---:|") if truth else ("", "")
    lines = ["| cell | parameters | test accuracy |" + extra[0], "|---|---|---|" + extra[1]]
    lines += [f"| {r['name']} | {r['params']:,} | {r['test_acc']:.4f} |"
              + (f" {r['percentile']:.0f} |" if truth else "") for r in rows]
    lines.append(f"| random, mean ± std of {len(random_accs)} | | {report['random_mean']:.4f} ± "
                 f"{report['random_std']:.4f} |" + (" |" if truth else ""))
    table = "\n".join(lines)
    with open(os.path.join(args.out, "comparison.md"), "w") as f:
        f.write(f"{dataset} test part, space {space_name}, {base.layers} cells of C = {base.channels}, {base.epochs} "
                f"retraining epochs, seed {args.seed}, search {args.search}\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
