"""``snas-fast`` (and ``python -m snas_fast``): the command line.

    snas-fast search --dataset digits --epochs 10 --out runs/digits
    snas-fast search --resume runs/digits
    snas-fast train --genotype runs/digits --dataset digits --epochs 10 --out runs/digits-train
    torchrun --standalone --nproc_per_node 2 -m snas_fast search ...   (data-parallel: snas_fast.engine.distributed)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from typing import List, Optional

from . import _openmp

_openmp.configure()  # before anything loads torch (and libgomp with it)

from .engine.config import flag_fields  # noqa: E402
from .search.snas import SearchConfig, SearchWarning  # noqa: E402


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_flags(p: argparse.ArgumentParser, cls) -> None:
    """One flag per field of the config class ``cls`` that has one (:func:`snas_fast.engine.config.setting`):
    ``--{flag}``, parsed by the field's kind, defaulting to None (the config's default, shown once in the help, with
    the allowed values); a bool flag alone means true (``--hard``), or takes true/false."""
    defaults = cls()
    for flag, f in flag_fields(cls):
        kind = f.metadata["kind"] or type(f.default)
        choices = f.metadata.get("choices")
        extra = dict(nargs="?", const=True, metavar="true|false") if kind is bool else {}
        if choices:
            extra["metavar"] = "{" + ",".join(choices) + "}"
        p.add_argument(f"--{flag}", dest=f.name, type=_bool if kind is bool else kind, default=None,
                       help=f"{f.metadata['help']} (default: {getattr(defaults, f.name)})", **extra)


class _Parser(argparse.ArgumentParser):
    """Errors on one line, naming the (sub)command whose flags were wrong."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _parser(sub, name: str, help: str, cls) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, allow_abbrev=False)
    p.add_argument("--config", help="JSON file of settings (the flags given here override it)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its own config.json")
    _add_flags(p, cls)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if "threads" not in {f.name for f in dataclasses.fields(cls)}:  # latency-table's threads are a setting
        p.add_argument("--threads", dest="torch_threads", type=int, metavar="N",
                       help="CPU threads of torch's operators (default: torch's, one per core, or OMP_NUM_THREADS); "
                            "1 is often fastest on a busy machine")
    return p


def _config_from(args, cls, error):
    """The run's settings: a run directory's config.json (``--resume``), else ``--config`` and the flags."""
    settings = {}
    if args.resume:
        path = os.path.join(args.resume, "config.json")
        if not os.path.exists(path):
            raise error(f"--resume {args.resume}: no config.json there (not a run directory)")
        given = [f"--{flag}" for flag, f in flag_fields(cls) if getattr(args, f.name, None) is not None]
        if given or args.config:
            raise error(f"--resume {args.resume}: a resumed run keeps the settings of its config.json; drop "
                        f"{', '.join(given) or '--config'} (or start a new run with them)")
        try:
            with open(path) as f:
                settings = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise error(f"--resume {args.resume}: cannot read config.json ({err})") from None
        if not isinstance(settings, dict):
            raise error(f"--resume {args.resume}: config.json is not a JSON object")
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
        if not isinstance(settings, dict):
            raise error(f"--config {args.config}: expected a JSON object of settings, got {type(settings).__name__}")
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


def _what_is_saved(config, command: str) -> str:
    """What an interrupted run left to resume from, truthfully."""
    if config is None:
        return "nothing had started"
    out = config.out
    cells = os.path.join(out, "cells")
    if os.path.exists(os.path.join(out, "checkpoint.pt")):
        return f"the last finished epoch is saved: resume with `snas-fast {command} --resume {out}`"
    if os.path.isdir(cells) and os.listdir(cells):
        return f"the finished cells are saved: resume with `snas-fast {command} --resume {out}`"
    if os.path.exists(os.path.join(out, "history.csv")):
        return f"the trained networks are saved: resume with `snas-fast {command} --resume {out}`"
    return "it stopped before anything was saved (no finished epoch): start it again"


def _run(args, cls, load_data, run, report, prepare=None) -> int:
    """One command: its settings (``cls``), checked; the process group; the data (before anything is written: a bad
    path leaves no run directory); ``run(config, data, resume, progress, **prepare(args, config))``; then, on the
    main process, ``report(config, result)``. Errors are one line; Ctrl-C says how to resume."""
    from .engine import distributed
    from .engine.data import DatasetError

    config = None
    threads = getattr(args, "torch_threads", None)
    if threads is not None and threads < 1:
        return _fail(f"threads: expected an integer >= 1, got {threads}")
    try:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        config = _config_from(args, cls, cls.Error)
        config.validate()
        extra = prepare(args, config) if prepare is not None else {}
        ctx = distributed.setup(config.device, config.dist_timeout)  # joins torchrun's process group, if any
        data = load_data(config)
        result = run(config, data, bool(args.resume), not args.quiet, **extra)
    except (DatasetError, cls.Error, distributed.DistributedError) as error:
        return _fail(error)
    except OSError as error:  # a path the checks could not foresee (a vanished directory, a full disk, ...)
        return _fail(f"{error.filename or 'out'}: {error.strerror or error}")
    except KeyboardInterrupt:
        print(f"\nsnas-fast: interrupted; {_what_is_saved(config, args.command)}", file=sys.stderr)
        return 130
    finally:
        distributed.teardown()
    if ctx.is_main:
        report(config, result)
    return 0


def _search(args) -> int:
    from .search.convergence import summary
    from .search.snas import Snas
    from .viz.callbacks import search_plots

    strategy = Snas()

    def run(config, data, resume, progress):
        with warnings.catch_warnings():  # the loop's SearchWarning is printed by report, as one line
            warnings.simplefilter("ignore", SearchWarning)
            return strategy.run(config, data, resume=resume, progress=progress, callbacks=[search_plots])

    def report(config, result):
        print(f"\nsearch done: {config.out}")
        print(f"  supernet val acc {result.val_acc:.4f}, derived child val acc {result.child_val_acc:.4f} "
              f"(search-validation split)")
        print(f"  architecture: {summary(result.arch, len(result.model.space.primitives))}")
        print(f"  genotype: {result.genotype.to_json()}")
        if result.warning:
            print(f"snas-fast: warning: {result.warning}", file=sys.stderr)

    return _run(args, strategy.config_class, strategy.load_data, run, report)


def _train(args) -> int:
    from .engine.retrain import TrainConfig, TrainError, load_train_data, resolve_genotype, train
    from .spaces import get_space
    from .viz.callbacks import train_plots

    def prepare(args, config):
        if args.resume:  # the run directory's genotype
            return dict(genotype=None)
        if args.genotype is None and not (args.config and "genotype" in _read_json(args.config)):
            raise TrainError("genotype: required: a published genotype, a genotype JSON file or a search run "
                             "directory")
        return dict(genotype=resolve_genotype(config.genotype, get_space(config.space))[0])

    def run(config, data, resume, progress, genotype):
        return train(config, data, genotype=genotype, resume=resume, progress=progress, callbacks=[train_plots])

    def report(config, result):
        print(f"\ntraining done: {config.out}")
        print(f"  test acc {result.test_acc:.4f}, test loss {result.test_loss:.4f}")
        print(f"  params {result.params} ({result.params / 1e6:.3f} M, auxiliary head excluded)")

    return _run(args, TrainConfig, load_train_data, run, report, prepare)


def _space_requested(args) -> Optional[str]:
    """The space a search or train command asks for: ``--space``, else the one in ``--resume DIR``'s config.json,
    else the one in the ``--config`` file (None when none says; unreadable files are reported later)."""
    if getattr(args, "space", None):
        return args.space
    paths = [os.path.join(args.resume, "config.json") if args.resume else None, args.config]
    for path in filter(None, paths):
        try:
            settings = _read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(settings, dict) and isinstance(settings.get("space"), str):
            return settings["space"]
    return None


def _gnn(command: str, argv: List[str]) -> int:
    """``snas-fast search|train --space gnn``: EGNAS's graph search and retraining (:mod:`snas_fast.search.gnn`),
    with the flags of their own config classes, through the same :func:`_run`."""
    from .search import gnn
    from .viz.callbacks import train_plots
    from .viz.gnn import gnn_search_plots

    parser = _Parser(prog="snas-fast", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    if command == "search":
        _parser(sub, "search", "run a graph architecture search (EGNAS's space)", gnn.GnnSearchConfig)
    else:
        _parser(sub, "train", "train a graph genotype or a PyG baseline from scratch", gnn.GnnTrainConfig)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        sub.choices[command].error(f"unrecognized arguments: {' '.join(unknown)}")

    if command == "search":
        def run(config, data, resume, progress):
            with warnings.catch_warnings():  # printed by report, as one line
                warnings.simplefilter("ignore", SearchWarning)
                return gnn.search(config, data, resume, progress, callbacks=[gnn_search_plots])

        def report(config, result):
            print(f"\nsearch done: {config.out}")
            print(f"  supernet val acc {result.val_acc:.4f}, derived child val acc {result.child_val_acc:.4f} "
                  f"(search-validation)")
            print(f"  architecture: {gnn.describe_arch(result.arch)}")
            print(f"  genotype: {result.genotype.to_json()}")
            if result.warning:
                print(f"snas-fast: warning: {result.warning}", file=sys.stderr)

        return _run(args, gnn.GnnSearchConfig, lambda config: config.load_data("search"), run, report)

    def report(config, result):
        print(f"\ntraining done: {config.out}")
        print(f"  {result.model_name}: test acc {result.test_acc:.4f}, test loss {result.test_loss:.4f}, "
              f"params {result.params}")

    return _run(args, gnn.GnnTrainConfig, lambda config: config.load_data("train_test"),
                lambda config, data, resume, progress: gnn.train(config, data, resume, progress, [train_plots]), report)


def _morph(args) -> int:
    from .search.morph import MorphConfig
    from .search.registry import get_strategy
    from .viz.callbacks import morph_plots

    def load_data(config: MorphConfig):
        return config.load_data()

    def run(config, data, resume, progress):
        strategy = get_strategy(f"morph-{config.strategy}")
        return strategy.run(config, data, resume=resume, progress=progress, callbacks=[morph_plots])

    def report(config, result):
        print(f"\nmorph search done: {config.out}")
        print(f"  {len(result.history)} networks in {result.seconds / 60:.1f} min; choosing took "
              f"{100 * result.choose_seconds / max(result.seconds, 1e-9):.1f} % of it")
        best = next(r for r in result.history if r["model_id"] == result.best_id)
        print(f"  best: model {result.best_id} ({best['params']:,} params), search-validation acc "
              f"{result.val_acc:.4f}, test acc {result.test_acc:.4f}")
        print(f"  description: {os.path.join(config.out, 'best.json')}; retrain it with `snas-fast train "
              f"--genotype {config.out}`")

    return _run(args, MorphConfig, load_data, run, report)


def _summarised(args, cls, fn, done: str, summary: str, cut: Optional[str] = None) -> int:
    """A command that writes the Markdown ``summary`` in its run directory (``fn(config, resume, progress)``) and
    prints it at the end (the part before ``cut``)."""
    def report(config, result):
        print(f"\n{done}: {config.out}")
        with open(os.path.join(config.out, summary)) as f:
            text = f.read()
        print(text.split(cut)[0] if cut else text)

    return _run(args, cls, lambda config: None, lambda config, data, resume, progress: fn(config, resume, progress),
                report)


def _compare(args) -> int:
    from .compare import CompareConfig, compare

    return _summarised(args, CompareConfig, compare, "comparison done", "leaderboard.md", "\n\n")


def _rank(args) -> int:
    from .rank import RankConfig, rank

    return _summarised(args, RankConfig, lambda config, resume, progress: rank(config, progress), "ranking done",
                       "rank.md")


def _pareto(args) -> int:
    from .pareto import ParetoConfig, pareto

    return _summarised(args, ParetoConfig, pareto, "pareto front done", "pareto.md", "\n\n| method | setting")


def _latency(args) -> int:
    from .latency_table import LatencyConfig, latency_table

    def report(config, result):
        table, check = result
        print(f"latency table: {config.out} ({table.device}, {table.threads} thread(s), fixed part "
              f"{table.fixed_ms:.3f} ms)")
        if check is not None:
            print(f"  {check['children']} random children: Pearson r {check['pearson_r']:.3f}, mean absolute error "
                  f"{100 * check['mape']:.1f} % of the measured time")

    return _run(args, LatencyConfig, lambda config: None,
                lambda config, data, resume, progress: latency_table(config, progress), report)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def main(argv: Optional[List[str]] = None) -> int:
    parser = _Parser(prog="snas-fast", description="Stochastic Neural Architecture Search, fused.", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    from .engine.retrain import TrainConfig

    _parser(sub, "search", "run an SNAS search", SearchConfig)
    _parser(sub, "train", "retrain a genotype from scratch and report its test accuracy", TrainConfig)
    from .compare import CompareConfig

    _parser(sub, "compare", "search with several strategies on one budget, retrain every result with one recipe, "
                            "and write a leaderboard", CompareConfig)
    from .rank import RankConfig

    _parser(sub, "rank", "score random architectures by NASWOT, by shared weights (rsws, snas) and by training, "
                         "and report each proxy's rank correlation", RankConfig)
    from .pareto import ParetoConfig

    _parser(sub, "pareto", "the accuracy-cost front of SNAS (lambda sweep), MONAS (reward sweep) and random "
                           "sampling, every architecture retrained with one recipe", ParetoConfig)
    from .search.morph import MorphConfig

    _parser(sub, "morph", "grow networks by function-preserving morphisms, chosen by Bayesian optimisation "
                          "(Auto-Keras), at random or breadth-first, within a time budget", MorphConfig)
    from .latency_table import LatencyConfig

    _parser(sub, "latency-table", "time every candidate on every edge of one network and write the lookup table",
            LatencyConfig)
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] in (["search"], ["train"]) and ("--space=gnn" in words or any(  # before parsing: --help too
            a == "--space" and b == "gnn" for a, b in zip(words, words[1:]))):
        return _gnn(words[0], words)
    args, unknown = parser.parse_known_args(argv)
    if args.command in ("search", "train") and _space_requested(args) == "gnn":  # --resume DIR or --config FILE
        return _gnn(args.command, words)
    if unknown:  # reported by the subcommand's parser, which lists its own flags
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    commands = {"train": _train, "compare": _compare, "rank": _rank, "pareto": _pareto, "latency-table": _latency,
                "morph": _morph}
    return commands.get(args.command, _search)(args)


if __name__ == "__main__":
    sys.exit(main())
