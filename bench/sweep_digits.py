"""Which architecture settings make the digits search search: a sweep of the log_alpha optimiser, its rate and the
run length, each a whole `snas-fast search`, reported by how far softmax(log_alpha) moved and what the child scores.

    python bench/sweep_digits.py --out runs/digits-sweep --jobs 2        (about 15 minutes on 2 idle cores)

Every setting starts from the short recipe (snas_fast.search.snas.RECIPES) and changes what its name says; the
``snas-cifar`` rows are the paper's settings (tau over 150 epochs, SGD 3e-4) on the short recipe's network, with
the same BatchNorm recalibration before evaluation. Each run is a run directory under ``--out``;
a finished one (a metrics line per epoch) is not run again. Each job uses one thread. Writes ``--out``/sweep.md.
Columns: the last epoch's mean entropy of softmax(log_alpha) (nats, uniform log 8 = 2.08) and mean top-1/top-2
margin per cell type (normal/reduce), the edges past a margin of 0.05 (of 28), the edges whose derived op changed
since the start (of 28), and the search-validation accuracy of one network sampled at the last tau and of the
derived child, both with BatchNorm recalibrated.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor

#: name -> overrides of the short recipe
SETTINGS = {
    "snas-cifar, 10 epochs": dict(recipe="snas-cifar", epochs=10, layers=5, channels=8, drop_path=0.0,
                                  bn_recalibration=20),
    "snas-cifar, 20 epochs": dict(recipe="snas-cifar", epochs=20, layers=5, channels=8, drop_path=0.0,
                                  bn_recalibration=20),
    "adam 1e-2, 10 epochs": dict(arch_lr=1e-2, epochs=10),
    "adam 3e-2, 10 epochs": dict(arch_lr=3e-2, epochs=10),
    "adam 1e-1, 10 epochs": dict(arch_lr=1e-1, epochs=10),
    "adam 3e-1, 10 epochs": dict(arch_lr=3e-1, epochs=10),
    "adam 3e-2, 20 epochs": dict(arch_lr=3e-2, epochs=20),
    "adam 1e-1, 20 epochs": dict(arch_lr=1e-1, epochs=20),
    "adam 3e-1, 20 epochs": dict(arch_lr=3e-1, epochs=20),
}


def _folder(name: str) -> str:
    return name.replace(", ", "_").replace(" ", "-")


def run_one(name: str, out: str) -> dict:
    """Runs (or finds finished) the setting ``name``; returns its last metrics row."""
    import torch

    from snas_fast.search import snas as trainer

    torch.set_num_threads(1)
    config = trainer.SearchConfig(out=os.path.join(out, _folder(name)), **SETTINGS[name])
    metrics = os.path.join(config.out, "metrics.jsonl")
    rows = [json.loads(line) for line in open(metrics)] if os.path.exists(metrics) else []
    if len(rows) < config.epochs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", trainer.SearchWarning)  # the table shows it: 0 edges changed
            trainer.search(config, trainer.load_search_data(config), resume=bool(rows), progress=False)
        rows = [json.loads(line) for line in open(metrics)]
    return rows[-1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/digits-sweep", help="folder of the run directories and sweep.md")
    p.add_argument("--jobs", type=int, default=2, help="searches run at once (one thread each)")
    p.add_argument("--only", nargs="*", choices=list(SETTINGS), help="run these settings only")
    args = p.parse_args(argv)
    names = args.only or list(SETTINGS)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = dict(zip(names, pool.map(run_one, names, [args.out] * len(names))))
    lines = ["| setting | entropy (n/r) | margin (n/r) | edges decided | edges changed | sampled net val acc | "
             "child val acc |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['normal_entropy']:.2f} / {r['reduce_entropy']:.2f} | "
                     f"{r['normal_margin']:.3f} / {r['reduce_margin']:.3f} | "
                     f"{r['normal_decided'] + r['reduce_decided']}/28 | {r['changed_edges']}/28 | "
                     f"{r['val_acc']:.3f} | {r['child_val_acc']:.3f} |")
    table = "\n".join(lines)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "sweep.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
