"""``snas-fast`` (and ``python -m snas_fast``): the command line.

    snas-fast search --dataset digits --epochs 10 --out runs/digits
    snas-fast search --resume runs/digits
    snas-fast search --space gnn --strategy evolution --archs 20 --out runs/gnn-evo   (any strategy, any space)
    snas-fast train --genotype runs/digits --dataset digits --epochs 10 --out runs/digits-train
    torchrun --standalone --nproc_per_node 2 -m snas_fast search ...   (data-parallel: snas_fast.engine.distributed)

Every command's flags are generated from its config class and show what it reads: the settings of its ``--space``
(and of the search's ``--strategy``) only, and the datasets of that space's kind
(:func:`snas_fast.engine.config.shown_fields`). The space and the strategy are read from the command line before
the flags (or from ``--resume DIR``'s ``config.json``, or the ``--config`` file).
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

from .engine.config import flag_fields, shown_fields  # noqa: E402
from .search.snas import SearchConfig, SearchWarning  # noqa: E402


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_flags(p: argparse.ArgumentParser, cls, space=None, taken=()) -> None:
    """One flag per setting of the config class ``cls`` that a command on ``space`` reads
    (:func:`snas_fast.engine.config.shown_fields`): ``--{flag}``, parsed by the field's kind, defaulting to None (the
    config's default, shown once in the help, with the allowed values: the datasets of ``space``'s kind); a bool flag
    alone means true (``--hard``), or takes true/false. ``taken``: flags the command already has (the search's
    ``--strategy`` names the strategy; a strategy setting of that name is then fixed by it)."""
    from .engine.config import space_choices

    try:
        defaults = cls(space=space.name) if space is not None and "space" in cls.__dataclass_fields__ else cls()
    except Exception:  # a space the settings refuse: its error comes when the command runs
        defaults = cls()
    for flag, f in shown_fields(cls, space):
        if flag in taken:
            continue
        kind = f.metadata["kind"] or type(f.default)
        choices = f.metadata.get("choices")
        if space is not None:
            choices = space_choices(space, f.name) or choices
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


def _parser(sub, name: str, help: str, cls, space=None, strategies=None) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, allow_abbrev=False)
    p.add_argument("--config", help="JSON file of settings (the flags given here override it)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR with its own config.json")
    if strategies:
        p.add_argument("--strategy", metavar="{" + ",".join(strategies) + "}", choices=strategies, default=None,
                       help="the search strategy (default: snas); its own flags follow")
    _add_flags(p, cls, space, ("strategy",) if strategies else ())
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
        if issubclass(cls, SearchConfig):
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
    if os.path.exists(os.path.join(out, "history.csv")) or os.path.isdir(os.path.join(out, "candidate_000")):
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


def _search(args, strategy) -> int:
    from .search.convergence import summary
    from .search.snas import Snas
    from .viz.callbacks import search_plots

    callbacks = [search_plots] if isinstance(strategy, Snas) else []

    def load_data(config):
        config.strategy = strategy.name  # the run's strategy, in its config.json (read back by --resume)
        return strategy.load_data(config)

    caught = []

    def run(config, data, resume, progress):
        with warnings.catch_warnings(record=True) as seen:  # a SearchWarning is printed by report, as one line
            warnings.simplefilter("always", SearchWarning)
            result = strategy.run(config, data, resume=resume, progress=progress, callbacks=callbacks)
        caught.extend(str(w.message) for w in seen if issubclass(w.category, SearchWarning))
        for w in seen:
            if not issubclass(w.category, SearchWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return result

    def report(config, result):
        space = config.space_object()
        print(f"\nsearch done: {config.out} ({strategy.name} on {config.space})")
        if hasattr(result, "child_val_acc"):
            print(f"  supernet val acc {result.val_acc:.4f}, derived child val acc {result.child_val_acc:.4f} "
                  f"(search-validation split)")
            print(f"  architecture: {summary(result.arch, len(space.primitives))}")
        else:
            print(f"  best: its own score {result.score:.4f} (search-validation)")
        print(f"  genotype: {json.dumps(space.to_dict(result.genotype))}")
        for message in dict.fromkeys(caught):
            print(f"snas-fast: warning: {message}", file=sys.stderr)

    return _run(args, strategy.config_class, load_data, run, report)


def _train(args) -> int:
    from .engine.retrain import TrainConfig, genotype_required, load_train_data, train
    from .viz.callbacks import train_plots

    def load_data(config):
        given = args.genotype is not None or (args.config and "genotype" in _read_json(args.config))
        if not (args.resume or given or config.baseline != "none"):
            raise genotype_required(config.space_object())
        return load_train_data(config)

    def run(config, data, resume, progress):
        return train(config, data, resume=resume, progress=progress, callbacks=[train_plots])

    def report(config, result):
        print(f"\ntraining done: {config.out}")
        print(f"  {result.model_name}: test acc {result.test_acc:.4f}, test loss {result.test_loss:.4f}")
        print(f"  params {result.params} ({result.params / 1e6:.3f} M, auxiliary head excluded)")

    return _run(args, TrainConfig, load_data, run, report)


def _requested(words: List[str], name: str) -> Optional[str]:
    """A setting a command line asks for before it is parsed: ``--name X`` (or ``--name=X``), else the one in
    ``--resume DIR``'s config.json, else the one in the ``--config`` file (None when none says; unreadable files
    are reported later)."""
    flag = f"--{name}"
    for a, b in zip(words, words[1:] + [None]):
        if a == flag and b is not None:
            return b
        if a.startswith(flag + "="):
            return a.partition("=")[2]
    paths = []
    for a, b in zip(words, words[1:] + [None]):
        if a == "--resume" and b:
            paths.append(os.path.join(b, "config.json"))
        if a == "--config" and b:
            paths.append(b)
    for path in paths:
        try:
            settings = _read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(settings, dict) and isinstance(settings.get(name), str):
            return settings[name]
    return None


def _morph(args) -> int:
    from .search.morph import MorphConfig
    from .search.registry import get_strategy
    from .viz.callbacks import morph_plots

    def load_data(config: MorphConfig):
        return config.load_data()

    def run(config, data, resume, progress):
        strategy = get_strategy(f"morph-{config.proposer}")
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


def _benchmark(args) -> int:
    from .benchmark import BenchmarkConfig, benchmark

    return _summarised(args, BenchmarkConfig, benchmark, "benchmark done", "summary.md")


def _rank(args) -> int:
    from .rank import RankConfig, rank

    return _summarised(args, RankConfig, lambda config, resume, progress: rank(config, progress), "ranking done",
                       "rank.md")


def _groundtruth(args) -> int:
    from .groundtruth import GroundTruthConfig, groundtruth

    return _summarised(args, GroundTruthConfig, groundtruth, "ground truth done", "groundtruth.md")


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


def _space(name: Optional[str]):
    """The registered space ``name`` (None, or a name no space has: None; the command reports it)."""
    from .spaces import get_space, space_names

    return get_space(name) if name in space_names() else None


def main(argv: Optional[List[str]] = None) -> int:
    from .search.registry import get_strategy, strategy_names

    words = sys.argv[1:] if argv is None else list(argv)
    command = words[0] if words else None
    space_name = _requested(words, "space")
    if command == "train" and space_name is None:  # the genotype's own space
        from .engine.retrain import genotype_space

        space_name = genotype_space(_requested(words, "genotype"))
    name = _requested(words, "strategy") if command == "search" else None
    strategy = get_strategy(name if name in strategy_names() else "snas")
    if space_name is None:  # the command's own default space (the morphism strategies': morph)
        cls = {"search": strategy.config_class}.get(command)
        if command == "morph":
            from .search.morph import MorphConfig as cls
        if command == "benchmark":
            from .benchmark import BenchmarkConfig as cls
        space_name = cls.__dataclass_fields__["space"].default if cls is not None else "darts"
    space = _space(space_name)

    parser = _Parser(prog="snas-fast", description="Stochastic Neural Architecture Search, fused.", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    from .engine.retrain import TrainConfig

    _parser(sub, "search", "run a search: SNAS, or any strategy (--strategy) on any space (--space)",
            strategy.config_class, space, strategy_names())
    _parser(sub, "train", "retrain a genotype (or a space's baseline) from scratch and report its test accuracy",
            TrainConfig, space)
    from .compare import CompareConfig

    _parser(sub, "compare", "search with several strategies on one budget, retrain every result with one recipe, "
                            "and write a leaderboard", CompareConfig, space)
    from .benchmark import BenchmarkConfig

    _parser(sub, "benchmark", "query-based strategies on a benchmark table (nbgraph): anytime curves of the test "
                              "value of each one's best by validation, against random search and the table's oracles",
            BenchmarkConfig, space)
    from .rank import RankConfig

    _parser(sub, "rank", "score random architectures by NASWOT, by shared weights (rsws, snas) and by training, "
                         "and report each proxy's rank correlation", RankConfig, space)
    from .groundtruth import GroundTruthConfig

    _parser(sub, "groundtruth", "train architectures drawn uniformly from a space with the retraining recipe and "
                                "write their test accuracies (a ground-truth sample, resumable)",
            GroundTruthConfig, space)
    from .pareto import ParetoConfig

    _parser(sub, "pareto", "the accuracy-cost front of SNAS (lambda sweep), MONAS (reward sweep) and random "
                           "sampling, every architecture retrained with one recipe", ParetoConfig, space)
    from .search.morph import MorphConfig

    _parser(sub, "morph", "grow networks by function-preserving morphisms, chosen by Bayesian optimisation "
                          "(Auto-Keras), at random or breadth-first, within a time budget", MorphConfig, space)
    from .latency_table import LatencyConfig

    _parser(sub, "latency-table", "time every candidate on every edge of one network and write the lookup table",
            LatencyConfig, space)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the subcommand's parser, which lists its own flags
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "search":
        if getattr(args, "strategy", None) is not None and args.resume:
            return _fail(f"--resume {args.resume}: a resumed run keeps the strategy of its config.json; drop "
                         f"--strategy")
        return _search(args, strategy)
    commands = {"train": _train, "compare": _compare, "benchmark": _benchmark, "rank": _rank, "pareto": _pareto,
                "groundtruth": _groundtruth,
                "latency-table": _latency, "morph": _morph}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
