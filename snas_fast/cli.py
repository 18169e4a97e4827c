"""``snas-fast`` (and ``python -m snas_fast``): the command line.

    snas-fast search --dataset digits --epochs 10 --out runs/digits
    snas-fast search --resume runs/digits
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import List, Optional

from .trainer import SearchConfig, SearchError


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _search_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("search", help="run an SNAS search", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = SearchConfig()
    p.add_argument("--config", help="JSON file of settings (the flags given here override it)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its own config.json")
    flags = {  # flag name -> (config field, type, help)
        "dataset": ("dataset", str, "digits (embedded) or cifar10 (python-format folder, --data-dir)"),
        "data-dir": ("data_dir", str, "folder holding cifar-10-batches-py"),
        "data-limit": ("data_limit", int, "keep the first N examples of each split"),
        "epochs": ("epochs", int, "search epochs"),
        "batch-size": ("batch_size", int, "batch size"),
        "layers": ("layers", int, "cells in the supernet"),
        "channels": ("channels", int, "channels of the first cells (C)"),
        "seed": ("seed", int, "random seed"),
        "out": ("out", str, "run directory"),
        "mixed": ("mixed", str, "fused (the fused kernels) or eager (DARTS's sum)"),
        "pool-bn": ("pool_bn", _bool, "BatchNorm after the pool candidates (DARTS)"),
        "sampling": ("sampling", str, "one Gumbel sample per step, cell or example"),
        "hard": ("hard", _bool, "straight-through one-hot samples"),
        "bilevel": ("bilevel", _bool, "DARTS first-order bi-level updates instead of SNAS's single level"),
        "lr": ("lr", float, "weights: initial SGD learning rate (cosine schedule)"),
        "lr-min": ("lr_min", float, "weights: final learning rate"),
        "momentum": ("momentum", float, "weights: SGD momentum"),
        "weight-decay": ("weight_decay", float, "weights: weight decay"),
        "grad-clip": ("grad_clip", float, "weights: gradient norm clip"),
        "arch-optimizer": ("arch_optimizer", str, "log_alpha optimizer: sgd or adam"),
        "arch-lr": ("arch_lr", float, "log_alpha learning rate"),
        "arch-weight-decay": ("arch_weight_decay", float, "log_alpha weight decay"),
        "warmup-epochs": ("warmup_epochs", int, "epochs with log_alpha frozen"),
        "tau-schedule": ("tau_schedule", str, "linear or exponential"),
        "tau0": ("tau0", float, "initial temperature"),
        "tau-min": ("tau_min", float, "final temperature"),
        "tau-epochs": ("tau_epochs", int, "length of the linear schedule in epochs"),
        "tau-rate": ("tau_rate", float, "exponential schedule: factor per epoch"),
        "lambda": ("resource_lambda", float, "weight of the resource penalty"),
        "penalty": ("penalty", str, "resource penalty form: log or linear"),
        "drop-path": ("drop_path", float, "drop-path probability on edges (ramped over the epochs)"),
        "bn-recalibration": ("bn_recalibration", int, "batches to recalibrate BatchNorm for the child"),
        "num-workers": ("num_workers", int, "data loader workers"),
        "device": ("device", str, "cpu or cuda"),
    }
    for flag, (name, kind, text) in flags.items():
        p.add_argument(f"--{flag}", dest=name, type=kind, default=None,
                       help=f"{text} (default: {getattr(defaults, name)})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _config_from(args) -> SearchConfig:
    settings = {}
    if args.resume:
        path = os.path.join(args.resume, "config.json")
        if not os.path.exists(path):
            raise SearchError(f"--resume {args.resume}: no config.json there (not a run directory)")
        with open(path) as f:
            settings = json.load(f)
        settings["out"] = args.resume
        return SearchConfig.from_dict(settings)
    if args.config:
        try:
            with open(args.config) as f:
                settings = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            raise SearchError(f"--config {args.config}: cannot read a JSON object ({error})") from None
    for field in dataclasses.fields(SearchConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            settings[field.name] = value
    return SearchConfig.from_dict(settings)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="snas-fast", description="Stochastic Neural Architecture Search, fused.")
    sub = parser.add_subparsers(dest="command", required=True)
    _search_parser(sub)
    args = parser.parse_args(argv)
    from .data import DatasetError
    from .trainer import load_search_data, search

    try:
        config = _config_from(args)
        config.validate()
        data = load_search_data(config)  # before anything is written: a bad path leaves no run directory
        result = search(config, data, resume=bool(args.resume), progress=not args.quiet)
    except (DatasetError, SearchError) as error:
        print(f"snas-fast: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nsnas-fast: interrupted; the last finished epoch is saved: resume with "
              f"`snas-fast search --resume {config.out}`", file=sys.stderr)
        return 130
    print(f"\nsearch done: {config.out}")
    print(f"  supernet val acc {result.val_acc:.4f}, derived child val acc {result.child_val_acc:.4f}")
    print(f"  genotype: {result.genotype.to_json()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
