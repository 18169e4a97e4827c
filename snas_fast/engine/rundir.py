"""A run directory: ``config.json``, ``metrics.jsonl`` (one JSON line per epoch, ``"epoch"`` counted from 1 as
on the console and in the plots) and ``checkpoint.pt`` (written
atomically after every epoch), shared by the search and the retraining. Only rank 0 writes; a checkpoint is read
by rank 0 and handed to the others (no shared file system needed).
"""
from __future__ import annotations

import json
import os
import warnings
from typing import List, Optional, Tuple

import torch

from . import distributed

__all__ = ["RunDir", "read_checkpoint", "read_metrics", "save_atomic", "write_json_atomic"]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"


def save_atomic(obj, path: str) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    tmp = f"{path}.tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json_atomic(data, path: str) -> None:
    """JSON to a temporary file, then rename."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def read_checkpoint(path: str) -> Tuple[Optional[dict], Optional[str]]:
    """``(state, None)`` of a checkpoint written by :func:`save_atomic`, or ``(None, problem)`` for a file that is not
    one. A checkpoint is data: it is read with ``weights_only=True`` (tensors, numbers, strings and plain
    containers), so a crafted file cannot run code. The problem is returned, not raised, so that rank 0 can hand it
    to the other ranks of a process group and every rank stops with the same one-line error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's advice on a foreign pickle; the one-line problem says it
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch each raise their own kinds for a foreign or damaged file
        return None, f"{path}: not a snas-fast checkpoint ({' '.join(str(error).split())[:200]})"
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        return None, f"{path}: not a snas-fast checkpoint (expected a dict with model and epoch)"
    return state, None


def read_metrics(path: str) -> List[dict]:
    """The rows of a ``metrics.jsonl``. A last line cut short (a kill mid-write) is dropped with a warning; a
    damaged line before it raises ValueError naming the file and the line."""
    with open(path) as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    rows = []
    for n, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if n < len(lines) - 1:
                raise ValueError(f"{path}: line {n + 1} is not a JSON object") from None
            warnings.warn(f"{path}: its last line was cut short (a write interrupted); dropped", RuntimeWarning,
                          stacklevel=2)
    return rows


class RunDir:
    """The run directory ``out`` as process ``ctx`` sees it (only the main process writes)."""

    def __init__(self, out: str, ctx: distributed.Context):
        self.out, self.ctx = out, ctx
        self.config_path = os.path.join(out, CONFIG_FILE)
        self.metrics_path = os.path.join(out, METRICS_FILE)
        self.checkpoint_path = os.path.join(out, CHECKPOINT_FILE)

    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def holds_run(self) -> bool:
        """Whether the directory holds a run: a checkpoint or a metrics line."""
        return os.path.exists(self.checkpoint_path) or (os.path.exists(self.metrics_path)
                                                        and os.path.getsize(self.metrics_path) > 0)

    def clean_temporaries(self) -> None:
        """Removes the ``*.tmp`` files a write killed half-way left (never read)."""
        if self.ctx.is_main:
            for path in (self.checkpoint_path, self.metrics_path, self.config_path):
                if os.path.exists(f"{path}.tmp"):
                    os.remove(f"{path}.tmp")

    def start(self, config: dict) -> None:
        """A fresh run: the directory, ``config.json`` and an empty ``metrics.jsonl``; an old checkpoint is removed
        (it belongs to the run this one replaces)."""
        if self.ctx.is_main:
            os.makedirs(self.out, exist_ok=True)
            if os.path.exists(self.checkpoint_path):
                os.remove(self.checkpoint_path)
            write_json_atomic(config, self.config_path)
            open(self.metrics_path, "w").close()

    def load_checkpoint(self) -> Tuple[Optional[dict], Optional[str]]:
        """``(state, problem)`` of the checkpoint, the same on every rank; ``(None, None)`` when there is none."""
        found = self.ctx.is_main and os.path.exists(self.checkpoint_path)
        return distributed.broadcast_object(read_checkpoint(self.checkpoint_path) if found else (None, None))

    def save_checkpoint(self, state: dict) -> None:
        if self.ctx.is_main:
            save_atomic(state, self.checkpoint_path)

    def append_metrics(self, row: dict) -> None:
        if self.ctx.is_main:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def truncate_metrics(self, epochs: int) -> None:
        """Drops metric lines of epochs after the checkpoint (an epoch that was interrupted is run again)."""
        if not self.ctx.is_main:
            return
        rows = read_metrics(self.metrics_path) if os.path.exists(self.metrics_path) else []
        tmp = f"{self.metrics_path}.tmp"
        with open(tmp, "w") as f:  # then a rename: a kill never leaves the history half-written
            for row in rows[:epochs]:
                f.write(json.dumps(row) + "\n")
        os.replace(tmp, self.metrics_path)

    def metrics(self) -> List[dict]:
        return read_metrics(self.metrics_path)

    def write_json(self, name: str, data) -> None:
        if self.ctx.is_main:
            write_json_atomic(data, self.path(name))
