"""Run by tests/test_distributed.py under torchrun: the CLI's search and train in each rank, with each rank's final
model saved so the test can compare ranks, and faults injected into one rank.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py SCENARIO OUT_DIR
"""
from __future__ import annotations

import os
import runpy
import sys
import time

import torch

from snas_fast.cli import main
from snas_fast.engine import distributed, loop, retrain
from snas_fast.search import snas as trainer
from snas_fast.viz import callbacks

RANK = int(os.environ["RANK"])
# the figures are tested elsewhere; drawing them is most of a tiny run's time
callbacks.search_plots = lambda end: None
callbacks.train_plots = lambda end: None
TINY = ["--dataset", "digits", "--data-limit", "64", "--batch-size", "16", "--layers", "3", "--channels", "4",
        "--seed", "3", "--quiet"]


def capture(module, name, store):
    """Wrap ``module.name`` (search or train) so its result's model lands in ``store``."""
    original = getattr(module, name)

    def wrapped(*args, **kw):
        result = original(*args, **kw)
        store["model"] = result.model
        return result

    setattr(module, name, wrapped)
    return original


def save_rank_state(store, path):
    torch.save({k: v.detach().cpu() for k, v in store["model"].state_dict().items()}, path)


def interrupt_epoch(n, error):
    """Make the loop's ``_train_epoch`` raise ``error()`` when called for the n-th time (1-based)."""
    original, calls = loop._train_epoch, []

    def patched(*args, **kw):
        calls.append(1)
        if len(calls) == n:
            error()
        return original(*args, **kw)

    loop._train_epoch = patched
    return original


def equivalence(out):
    # several CLI runs in one process: keep torchrun's process group between them (leaving and joining it again
    # in one job is not what the CLI does, and gloo does not support it reliably)
    teardown, distributed.teardown = distributed.teardown, lambda: None
    store = {}
    capture(trainer, "search", store)
    capture(retrain, "train", store)
    # A: 2 epochs, shared Gumbel sample, synchronised BatchNorm
    search_a = os.path.join(out, "a")
    assert main(["search", *TINY, "--epochs", "2", "--sync-bn", "true", "--mixed", "fused", "--out",
                 search_a]) == 0
    save_rank_state(store, os.path.join(out, f"search_rank{RANK}.pt"))
    # B: the same run, interrupted at the start of its second epoch on every rank, then resumed
    search_b = os.path.join(out, "b")

    def stop():
        raise KeyboardInterrupt

    original = interrupt_epoch(2, stop)
    assert main(["search", *TINY, "--epochs", "2", "--sync-bn", "true", "--mixed", "fused", "--out",
                 search_b]) == 130
    loop._train_epoch = original
    assert main(["search", "--resume", search_b, "--quiet"]) == 0
    save_rank_state(store, os.path.join(out, f"resumed_rank{RANK}.pt"))
    # C: one hard Gumbel sample per rank (the ranks run different candidates), per-process BatchNorm statistics;
    # run as `python -m snas_fast` runs it
    sys.argv = ["snas_fast", "search", *TINY, "--epochs", "1", "--gumbel-sample", "per-rank", "--hard", "true",
                "--out", os.path.join(out, "c")]
    try:
        runpy.run_module("snas_fast", run_name="__main__", alter_sys=True)
    except SystemExit as done:
        assert done.code == 0, done.code
    save_rank_state(store, os.path.join(out, f"per_rank_rank{RANK}.pt"))
    # the search hands its genotype to a data-parallel retraining
    assert main(["train", "--genotype", search_a, *TINY, "--epochs", "1", "--sync-bn", "true", "--out",
                 os.path.join(out, "train")]) == 0
    save_rank_state(store, os.path.join(out, f"train_rank{RANK}.pt"))
    teardown()


def fail(out):
    def injected():
        if RANK == 1:
            raise trainer.SearchError("injected failure on rank 1")

    interrupt_epoch(1, injected)
    sys.exit(main(["search", *TINY, "--epochs", "2", "--out", os.path.join(out, "fail")]))


def hang(out):
    def stall():
        if RANK == 1:
            time.sleep(600)  # a rank that stops answering without failing

    interrupt_epoch(1, stall)
    sys.exit(main(["search", *TINY, "--epochs", "2", "--dist-timeout", "3", "--out", os.path.join(out, "hang")]))


if __name__ == "__main__":
    {"equivalence": equivalence, "fail": fail, "hang": hang}[sys.argv[1]](sys.argv[2])
