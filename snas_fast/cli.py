"""``snas-fast`` (and ``python -m snas_fast``): the command line.

    snas-fast search --dataset digits --epochs 10 --out runs/digits
    snas-fast search --resume runs/digits
    snas-fast train --genotype runs/digits --dataset digits --epochs 10 --out runs/digits-train
    torchrun --standalone --nproc_per_node 2 -m snas_fast search ...   (data-parallel, see snas_fast.distributed)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from typing import List, Optional

from . import convergence
from .search_space import PRIMITIVES
from .trainer import SearchConfig, SearchError, SearchWarning


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


#: Flags of the multi-process runs (torchrun), shared by `search` and `train`: flag -> (field, type, help).
_DIST_FLAGS = {
    "gumbel-sample": ("gumbel_sample", str, "torchrun: shared (every rank draws the same architecture sample) or "
                                            "per-rank (each rank its own)"),
    "sync-bn": ("sync_bn", _bool, "torchrun: BatchNorm statistics of the global batch (else per process)"),
    "dist-timeout": ("dist_timeout", float, "torchrun: seconds a collective waits for a silent rank before "
                                            "the job fails"),
}


def _search_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("search", help="run an SNAS search", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = SearchConfig()
    p.add_argument("--config", help="JSON file of settings (the flags given here override it)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its own config.json")
    flags = {  # flag name -> (config field, type, help)
        "recipe": ("recipe", str, "short (moves the architecture within a short run; the defaults shown here are "
                                  "its values) or snas-cifar (SNAS's CIFAR-10 search exactly: "
                                  "snas_fast.trainer.RECIPES); flags given override it"),
        "dataset": ("dataset", str, "digits (embedded) or cifar10 (python-format folder, --data-dir)"),
        "data-dir": ("data_dir", str, "folder holding cifar-10-batches-py"),
        "data-limit": ("data_limit", int, "keep the first N examples of each split"),
        "epochs": ("epochs", int, "search epochs"),
        "batch-size": ("batch_size", int, "batch size"),
        "layers": ("layers", int, "cells in the supernet"),
        "channels": ("channels", int, "channels of the first cells (C)"),
        "seed": ("seed", int, "random seed"),
        "out": ("out", str, "run directory"),
        "mixed": ("mixed", str, "fused (deep-fused edges), fused_sum (fused weighted sum only) or eager (DARTS's sum)"),
        "pool-bn": ("pool_bn", _bool, "BatchNorm after the pool candidates (DARTS)"),
        "sampling": ("sampling", str, "one Gumbel sample per step, cell or example; hard = per step, hard"),
        "hard": ("hard", _bool, "one-hot samples: only the sampled candidate of each edge runs"),
        "estimator": ("estimator", str, "log_alpha gradient of hard samples: st (GDAS) or dsnas"),
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
        "tau-epochs": ("tau_epochs", int, "length of the linear schedule in epochs (None: the run's epochs)"),
        "tau-rate": ("tau_rate", float, "exponential schedule: factor per epoch"),
        "lambda": ("resource_lambda", float, "weight of the resource penalty"),
        "penalty": ("penalty", str, "resource penalty form: log or linear"),
        "drop-path": ("drop_path", float, "drop-path probability on edges (ramped over the epochs)"),
        "bn-recalibration": ("bn_recalibration", int, "training batches that recalibrate BatchNorm before each "
                                                       "evaluation (supernet and child)"),
        "num-workers": ("num_workers", int, "data loader workers"),
        "device": ("device", str, "cpu or cuda"),
        **_DIST_FLAGS,
    }
    for flag, (name, kind, text) in flags.items():
        p.add_argument(f"--{flag}", dest=name, type=kind, default=None,
                       help=f"{text} (default: {getattr(defaults, name)})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _train_parser(sub) -> argparse.ArgumentParser:
    from .retrain import TrainConfig

    p = sub.add_parser("train", help="retrain a genotype from scratch and report its test accuracy",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = TrainConfig()
    p.add_argument("--config", help="JSON file of settings (the flags given here override it)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its own config.json")
    p.add_argument("--genotype", dest="genotype", default=None,
                   help="a published genotype (DARTS_V2, SNAS_mild_edge_all, ...), a genotype JSON file, or a "
                        "search run directory (its genotype.json)")
    flags = {  # flag name -> (config field, type, help)
        "dataset": ("dataset", str, "digits (embedded) or cifar10 (python-format folder, --data-dir)"),
        "data-dir": ("data_dir", str, "folder holding cifar-10-batches-py"),
        "data-limit": ("data_limit", int, "keep the first N examples of each split"),
        "epochs": ("epochs", int, "training epochs"),
        "batch-size": ("batch_size", int, "batch size (per process under torchrun)"),
        "layers": ("layers", int, "cells in the network (20 in the papers' CIFAR-10 setting)"),
        "channels": ("channels", int, "channels of the first cells, C (36 in the papers' CIFAR-10 setting)"),
        "seed": ("seed", int, "random seed"),
        "out": ("out", str, "run directory"),
        "auxiliary-weight": ("auxiliary_weight", float, "weight of the auxiliary head's loss (0: no head)"),
        "cutout": ("cutout", int, "side of the cutout square, 0 for none (default: half the image side)"),
        "augment": ("augment", _bool, "random crop, and horizontal flip on CIFAR-10"),
        "drop-path": ("drop_path", float, "final drop-path probability (ramped linearly from 0)"),
        "lr": ("lr", float, "initial SGD learning rate (cosine schedule)"),
        "lr-min": ("lr_min", float, "final learning rate"),
        "momentum": ("momentum", float, "SGD momentum"),
        "weight-decay": ("weight_decay", float, "weight decay"),
        "grad-clip": ("grad_clip", float, "gradient norm clip"),
        "num-workers": ("num_workers", int, "data loader workers"),
        "device": ("device", str, "cpu or cuda"),
        **{k: v for k, v in _DIST_FLAGS.items() if k != "gumbel-sample"},
    }
    for flag, (name, kind, text) in flags.items():
        p.add_argument(f"--{flag}", dest=name, type=kind, default=None,
                       help=f"{text} (default: {getattr(defaults, name)})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _config_from(args, cls, error):
    """The run's settings: a run directory's config.json (``--resume``), else ``--config`` and the flags."""
    settings = {}
    if args.resume:
        path = os.path.join(args.resume, "config.json")
        if not os.path.exists(path):
            raise error(f"--resume {args.resume}: no config.json there (not a run directory)")
        with open(path) as f:
            settings = json.load(f)
        settings["out"] = args.resume
        if cls is SearchConfig:
            settings.setdefault("recipe", "custom")  # a run from before recipes: its config.json holds every setting
        return cls.from_dict(settings)
    if args.config:
        try:
            with open(args.config) as f:
                settings = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise error(f"--config {args.config}: cannot read a JSON object ({err})") from None
    for field in dataclasses.fields(cls):
        value = getattr(args, field.name, None)
        if value is not None:
            settings[field.name] = value
    return cls.from_dict(settings)


def _fail(message) -> int:
    """Prints ``message`` on one line (with the rank when several processes run) and returns the exit status."""
    world = os.environ.get("WORLD_SIZE", "1")
    rank = f" (rank {os.environ.get('RANK', '?')})" if world.isdigit() and int(world) > 1 else ""
    print(f"snas-fast: error{rank}: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def _search(args) -> int:
    from . import distributed
    from .data import DatasetError
    from .trainer import load_search_data, search

    config = None
    try:
        config = _config_from(args, SearchConfig, SearchError)
        config.validate()
        ctx = distributed.setup(config.device, config.dist_timeout)  # joins torchrun's process group, if any
        data = load_search_data(config)  # before anything is written: a bad path leaves no run directory
        with warnings.catch_warnings():  # the loop's SearchWarning is printed below, as one line
            warnings.simplefilter("ignore", SearchWarning)
            result = search(config, data, resume=bool(args.resume), progress=not args.quiet)
    except (DatasetError, SearchError, distributed.DistributedError) as error:
        return _fail(error)
    except KeyboardInterrupt:
        print(f"\nsnas-fast: interrupted; the last finished epoch is saved: resume with "
              f"`snas-fast search --resume {config.out if config else 'RUN_DIR'}`", file=sys.stderr)
        return 130
    finally:
        distributed.teardown()
    if ctx.is_main:
        print(f"\nsearch done: {config.out}")
        print(f"  supernet val acc {result.val_acc:.4f}, derived child val acc {result.child_val_acc:.4f} "
              f"(search-validation split)")
        print(f"  architecture: {convergence.summary(result.arch, len(PRIMITIVES))}")
        print(f"  genotype: {result.genotype.to_json()}")
        if result.warning:
            print(f"snas-fast: warning: {result.warning}", file=sys.stderr)
    return 0


def _train(args) -> int:
    from . import distributed
    from .data import DatasetError
    from .retrain import TrainConfig, TrainError, load_train_data, resolve_genotype, train

    config = None
    try:
        config = _config_from(args, TrainConfig, TrainError)
        genotype = None
        if not args.resume:
            if args.genotype is None and not (args.config and "genotype" in _read_json(args.config)):
                raise TrainError("--genotype: required: a published genotype, a genotype JSON file or a search "
                                 "run directory")
            genotype, _ = resolve_genotype(config.genotype)
        config.validate()
        ctx = distributed.setup(config.device, config.dist_timeout)  # joins torchrun's process group, if any
        data = load_train_data(config)  # before anything is written: a bad path leaves no run directory
        result = train(config, data, genotype=genotype, resume=bool(args.resume), progress=not args.quiet)
    except (DatasetError, TrainError, distributed.DistributedError) as error:
        return _fail(error)
    except KeyboardInterrupt:
        print(f"\nsnas-fast: interrupted; the last finished epoch is saved: resume with "
              f"`snas-fast train --resume {config.out if config else 'RUN_DIR'}`", file=sys.stderr)
        return 130
    finally:
        distributed.teardown()
    if ctx.is_main:
        print(f"\ntraining done: {config.out}")
        print(f"  test acc {result.test_acc:.4f}, test loss {result.test_loss:.4f}")
        print(f"  params {result.params} ({result.params / 1e6:.3f} M, auxiliary head excluded)")
    return 0


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="snas-fast", description="Stochastic Neural Architecture Search, fused.")
    sub = parser.add_subparsers(dest="command", required=True)
    _search_parser(sub)
    _train_parser(sub)
    args = parser.parse_args(argv)
    return _train(args) if args.command == "train" else _search(args)


if __name__ == "__main__":
    sys.exit(main())
