"""The searched cell against random cells, retrained with one recipe and reported on the digits' test part.

    python bench/compare_digits.py --search runs/digits --random 3 --out runs/digits-compare   (make compare)

Retrains, each from scratch with the `snas-fast train` defaults (the same recipe, seed and epochs for all):
the search's derived cell (SNAS's edge_all form), its top-2 form (DARTS's rule on the same softmax(log_alpha)),
and ``--random`` cells drawn uniformly from the top-2 space (:func:`snas_fast.spaces.darts.genotypes.random_genotype`, the
random baseline of DARTS and of Li & Talwalkar). Every number is test accuracy on the test part no search saw
(:func:`snas_fast.engine.data.digits_split_indices`). Each retraining is its own run directory under ``--out``; one that
has finished (its summary.json) is not run again, so an interrupted comparison picks up where it stopped; one that
trained another cell (a new search) or other settings is replaced.
Writes ``--out``/comparison.json and comparison.md (the table printed at the end).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys

import torch

from snas_fast.spaces.darts import genotypes
from snas_fast.engine.retrain import TrainConfig, load_train_data, resolve_genotype, train
from snas_fast.viz.callbacks import train_plots


def candidates(search_dir: str, n_random: int, seed: int):
    """``[(name, genotype, where it comes from)]``: the search's cell in both forms, then ``n_random`` random cells."""
    found, source = resolve_genotype(search_dir)
    with open(os.path.join(search_dir, "genotype.json")) as f:
        saved = json.load(f)
    top2 = genotypes.derive(torch.tensor(saved["normal_alpha"]), torch.tensor(saved["reduce_alpha"]), "top2",
                            probs=True)
    out = [("searched (edge_all)", found, source), ("searched (top2)", top2, "top-2 rule of " + source)]
    generator = torch.Generator().manual_seed(seed)
    out += [(f"random {i}", genotypes.random_genotype(generator), f"random_genotype, seed {seed}, draw {i}")
            for i in range(n_random)]
    return out


def _same_run(run: str, genotype, args) -> bool:
    """Whether the run directory ``run`` trains ``genotype`` with this comparison's settings."""
    try:
        with open(os.path.join(run, "genotype.json")) as f:
            trained = genotypes.Genotype.from_dict(json.load(f)["genotype"])
        with open(os.path.join(run, "config.json")) as f:
            config = json.load(f)
    except (OSError, KeyError, ValueError):
        return False
    settings = ("epochs", "seed", "layers", "channels", "data_limit")
    return trained == genotype and all(config[k] == getattr(args, k) for k in settings)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--search", default="runs/digits", help="a search run directory (its genotype.json)")
    p.add_argument("--random", type=int, default=3, help="random cells to retrain")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="retraining epochs")
    p.add_argument("--seed", type=int, default=0, help="seed of the retrainings and of the random draws")
    p.add_argument("--out", default="runs/digits-compare", help="folder of the run directories and the table")
    p.add_argument("--layers", type=int, default=TrainConfig.layers, help="cells of the retrained network")
    p.add_argument("--channels", type=int, default=TrainConfig.channels, help="C of the retrained network")
    p.add_argument("--data-limit", type=int, default=None, help="keep the first N examples of each part (smoke runs)")
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

    rows = []
    data = None
    for name, genotype, source in candidates(args.search, args.random, args.seed):
        run = os.path.join(args.out, name.replace(" ", "_").replace("(", "").replace(")", ""))
        summary_path = os.path.join(run, "summary.json")
        if os.path.isdir(run) and not _same_run(run, genotype, args):  # another search's cell, or other settings
            shutil.rmtree(run)
        if not os.path.exists(summary_path):
            # the cell as a file, so that the run directory resumes (`snas-fast train --resume`) on its own
            os.makedirs(args.out, exist_ok=True)
            cell_file = os.path.abspath(f"{run}.genotype.json")
            with open(cell_file, "w") as f:
                json.dump(dict(genotype=genotype.to_dict(), source=source), f, indent=1)
            config = TrainConfig(genotype=cell_file, dataset="digits", epochs=args.epochs, seed=args.seed, out=run,
                                 layers=args.layers, channels=args.channels, data_limit=args.data_limit)
            data = data or load_train_data(config)
            resume = os.path.exists(os.path.join(run, "checkpoint.pt"))
            print(f"{name}: retraining into {run}", flush=True)
            train(config, data, genotype=genotype, resume=resume, progress=not args.quiet, callbacks=[train_plots])
        with open(summary_path) as f:
            summary = json.load(f)
        rows.append(dict(name=name, test_acc=summary["test_acc"], params=summary["params"], source=source,
                         genotype=genotype.to_dict()))

    random_accs = [r["test_acc"] for r in rows if r["name"].startswith("random")]
    report = dict(search=args.search, epochs=args.epochs, seed=args.seed, layers=args.layers, channels=args.channels,
                  data_limit=args.data_limit, rows=rows,
                  random_mean=statistics.mean(random_accs), random_std=statistics.stdev(random_accs))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "comparison.json"), "w") as f:
        json.dump(report, f, indent=1)
    lines = ["| cell | parameters | test accuracy |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['params']:,} | {r['test_acc']:.4f} |" for r in rows]
    lines.append(f"| random, mean ± std of {len(random_accs)} | | {report['random_mean']:.4f} ± "
                 f"{report['random_std']:.4f} |")
    table = "\n".join(lines)
    with open(os.path.join(args.out, "comparison.md"), "w") as f:
        f.write(f"Digits test part, {args.epochs} retraining epochs, seed {args.seed}, search {args.search}\n\n"
                f"{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
