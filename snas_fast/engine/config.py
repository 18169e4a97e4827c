"""The settings every run has (data, network size, optimiser, processes), as a dataclass whose fields carry their
command-line help: the CLI builds its flags from these fields (:func:`flag_fields`), not from a hand copy.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

from .data import DATASETS, limit, load_dataset

__all__ = ["RunConfig", "RunError", "flag_fields", "setting"]


class RunError(RuntimeError):
    """A run that cannot start or go on (bad setting, non-finite loss, unusable checkpoint); one-line message."""


def setting(default: Any, help: str, kind: Optional[Callable] = None, flag: Optional[str] = None,
            choices: Optional[Sequence[str]] = None):
    """A config field with its command-line flag: ``--{flag}`` (default: the field name with dashes) parsed by
    ``kind`` (default: the type of ``default``; bools take true/false); ``choices``: the values it may take (checked
    by :meth:`RunConfig.check_types`, listed by ``--help``)."""
    return field(default=default, metadata=dict(help=help, kind=kind, flag=flag,
                                                choices=tuple(choices) if choices is not None else None))


def flag_fields(cls) -> Iterator[Tuple[str, dataclasses.Field]]:
    """``(flag, field)`` of every field of the config class ``cls`` that has a flag, in field order."""
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            yield f.metadata["flag"] or f.name.replace("_", "-"), f


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _int_at_least(value, low: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= low


#: The help of ``channels_last``, a setting of the commands that build a network (search, train).
CHANNELS_LAST_HELP = ("run the network in channels_last (NHWC) memory format: faster convolutions on CPU and "
                      "cuDNN's layout in half precision (bench/RESULTS.md)")


@dataclass
class RunConfig:
    """Settings shared by the search and the retraining (the subclasses add theirs and may change defaults)."""

    Error = RunError  # the exception a bad setting raises (each command has its own)

    dataset: str = setting("digits", "digits (embedded) or cifar10 (python-format folder, --data-dir)",
                           choices=DATASETS)
    data_dir: Optional[str] = setting(None, "folder holding cifar-10-batches-py", kind=str)
    data_limit: Optional[int] = setting(None, "keep the first N examples of each split", kind=int)
    out: str = setting("runs/run", "run directory")
    seed: int = setting(0, "random seed")
    space: str = setting("darts", "search space (snas_fast.spaces.space_names())")
    epochs: Optional[int] = setting(10, "epochs", kind=int)
    batch_size: int = setting(64, "batch size (per process under torchrun)")
    layers: Optional[int] = setting(8, "cells in the network", kind=int)
    channels: Optional[int] = setting(16, "channels of the first cells (C)", kind=int)
    lr: float = setting(0.025, "weights: initial SGD learning rate (cosine schedule)")
    lr_min: float = setting(0.0, "weights: final learning rate")
    momentum: float = setting(0.9, "weights: SGD momentum")
    weight_decay: float = setting(3e-4, "weights: weight decay")
    grad_clip: float = setting(5.0, "weights: gradient norm clip")
    drop_path: Optional[float] = setting(0.0, "drop-path probability (ramped linearly from 0 over the epochs)",
                                         kind=float)
    num_workers: int = setting(0, "data loader workers")
    device: str = setting("cpu", "cpu or cuda")
    sync_bn: bool = setting(False, "torchrun: BatchNorm statistics of the global batch (else per process)")
    overwrite: bool = setting(False, "start afresh in an --out that already holds a run (its checkpoint and "
                                     "metrics are replaced); without it such a directory is refused")
    dist_timeout: float = setting(1800.0, "torchrun: seconds a collective waits for a silent rank before the job "
                                          "fails")

    def check_types(self) -> None:
        """Raises ``self.Error`` naming the first setting whose value is not of its flag's kind (an integer where an
        integer is expected, never a bool; any real number for a float; a string; true/false for a bool), e.g. a
        ``--config`` file's ``"1"``, ``1.5``, ``[1, 2]``, ``true`` or ``null`` for an integer. A setting whose
        default is None may be None."""
        for f in dataclasses.fields(self):
            if "help" not in f.metadata:
                continue
            value = getattr(self, f.name)
            kind = f.metadata["kind"] or type(f.default)
            if value is None and f.default is None:
                continue
            if kind is bool:
                ok = isinstance(value, bool)
            elif kind is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif kind is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif kind is str:
                ok = isinstance(value, str)
            else:
                ok = True
            if not ok:
                raise self.Error(f"{f.name}: expected {_KIND_NAMES.get(kind, kind.__name__)}, got {value!r}")
            choices = f.metadata.get("choices")
            if choices is not None and value is not None and value not in choices:
                raise self.Error(f"{f.name}: expected one of {', '.join(choices)}, got {value!r}")

    def validate(self) -> None:
        """Raises ``self.Error`` naming the first bad setting."""
        from ..spaces import space_names

        self.check_types()
        if self.space not in space_names():
            raise self.Error(f"space: expected one of {', '.join(space_names())}, got {self.space!r}")
        self.check_ints(("epochs", "batch_size", "layers", "channels"), 1)
        if self.data_limit is not None and not _int_at_least(self.data_limit, 1):
            raise self.Error(f"data_limit: expected an integer >= 1, got {self.data_limit}")
        if not _int_at_least(self.num_workers, 0):
            raise self.Error(f"num_workers: expected an integer >= 0, got {self.num_workers!r}")
        if not 0.0 <= self.drop_path < 1.0:
            raise self.Error(f"drop_path: expected a probability in [0, 1), got {self.drop_path}")
        for name in ("lr", "grad_clip", "dist_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value)
                                                                                     and value > 0):
                raise self.Error(f"{name}: expected a number > 0, got {value!r}")
        for name in ("lr_min", "weight_decay"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise self.Error(f"{name}: expected a number >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise self.Error(f"momentum: expected a number in [0, 1), got {self.momentum!r}")
        if not 0 <= self.seed < 2 ** 32:
            raise self.Error(f"seed: expected an integer in 0 .. 2**32 - 1, got {self.seed!r}")
        self.check_device()
        self.check_out()

    def check_device(self) -> None:
        """``device``: cpu, or cuda / cuda:N on a machine where torch sees that GPU."""
        import torch

        try:
            device = torch.device(self.device)
        except (RuntimeError, ValueError):
            raise self.Error(f"device: expected cpu or cuda, got {self.device!r}") from None
        if device.type not in ("cpu", "cuda"):
            raise self.Error(f"device: expected cpu or cuda, got {self.device!r}")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise self.Error(f"device: {self.device} was asked for, but torch sees no GPU (torch "
                             f"{torch.__version__}); use --device cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise self.Error(f"device: expected a GPU index below {torch.cuda.device_count()}, got {self.device!r}")

    #: whether ``out`` is a directory (a run directory) or a file (e.g. a latency table)
    out_is_file = False

    def check_out(self) -> None:
        """``out``: a non-empty path that is not an existing file (a directory, for a run) in a place this process
        may write to."""
        out = self.out
        if not out or not str(out).strip():
            raise self.Error(f"out: expected a path, got {out!r}")
        if os.path.exists(out) and not (os.path.isfile(out) if self.out_is_file else os.path.isdir(out)):
            raise self.Error(f"out: {out} exists and is not a {'file' if self.out_is_file else 'directory'}")
        parent = os.path.abspath(out if os.path.isdir(out) else os.path.dirname(os.path.abspath(out)))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise self.Error(f"out: cannot write under {parent} (permission denied)")

    def check_ints(self, names, low: int) -> None:
        """Raises ``self.Error`` naming the first of the fields ``names`` that is not an integer ``>= low``."""
        for name in names:
            if not _int_at_least(getattr(self, name), low):
                raise self.Error(f"{name}: expected an integer >= {low}, got {getattr(self, name)!r}")

    def load_data(self, split: str = "search"):
        """``(train, val, info)`` of the search parts (``split="search"``) or ``(train, test, info)`` for a
        retraining (``"train_test"``) of ``dataset``, cut to ``data_limit`` examples per part if set
        (:func:`snas_fast.engine.data.load_dataset`). Raises ``self.Error`` or DatasetError, one line."""
        if self.dataset == "cifar10" and not self.data_dir:
            raise self.Error("data_dir: cifar10 needs the folder holding cifar-10-batches-py (nothing is "
                             "downloaded)")
        train, other, info = load_dataset(self.dataset, self.data_dir, seed=self.seed, split=split)
        return (*limit((train, other), self.data_limit), info)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def carried_to(self, cls, **changes):
        """A ``cls`` config with this one's settings that ``cls`` also has, then ``changes`` (e.g. the retraining
        recipe of a candidate: ``config.carried_to(TrainConfig, out=..., genotype=...)``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**dict({k: v for k, v in self.to_dict().items() if k in names}, **changes))

    @classmethod
    def from_dict(cls, d: dict):
        """The config of ``d`` (a ``config.json``); unknown settings raise ``cls.Error``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise cls.Error(f"config: unknown settings {unknown}")
        return cls(**d)
