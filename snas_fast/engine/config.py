"""Settings, as dataclasses whose fields carry their command-line help (:func:`~snas_fast._settings.setting`): the CLI
builds its flags from these fields (:func:`flag_fields`), not from a hand copy. A command's config class has the
settings it reads, and only those, from a ladder of classes:

- :class:`RunConfig`: every command (run directory, seed, device, ...);
- :class:`DataConfig`: a command that reads a dataset through a search space (``--space``, ``--dataset``, ...);
- :class:`NetworkConfig`: one that builds the space's networks: their size and every built-in space's own settings
  (:data:`SpaceSettings`; ``--help`` of a command lists those of its ``--space`` and of its roles only);
- :class:`TrainingConfig`: one that trains weights (epochs, optimiser, drop-path, ...).

A field left at None takes a default from :meth:`RunConfig.default_sources`: a recipe's, then the space's for the
command's role (:meth:`snas_fast.spaces.SearchSpace.defaults`: a search's networks are smaller than a retraining's),
then the dataset its kind reads first.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Tuple

from .._settings import ROLES, flag_fields, setting
from ..spaces.darts.space import DartsSettings
from ..spaces.gnn.settings import GnnSettings
from ..spaces.morph.space import MorphSettings

__all__ = ["DataConfig", "KIND_DEFAULTS", "NetworkConfig", "RunConfig", "RunError", "SpaceSettings", "TrainingConfig",
           "flag_fields", "setting", "shown_fields", "space_choices"]


class RunError(RuntimeError):
    """A run that cannot start or go on (bad setting, non-finite loss, unusable checkpoint); one-line message."""


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _int_at_least(value, low: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= low


@dataclass
class RunConfig:
    """Settings every command has. ``roles``: who the command is (:data:`~snas_fast._settings.ROLES`; its first is
    the role whose space defaults it takes)."""

    Error = RunError  # the exception a bad setting raises (each command has its own)
    roles: ClassVar[Tuple[str, ...]] = ROLES
    #: whether ``out`` is a directory (a run directory) or a file (e.g. a latency table)
    out_is_file: ClassVar[bool] = False

    out: str = setting("runs/run", "run directory")
    seed: int = setting(0, "random seed")
    device: str = setting("cpu", "cpu or cuda")
    overwrite: bool = setting(False, "start afresh in an --out that already holds a run (its checkpoint and "
                                     "metrics are replaced); without it such a directory is refused")
    dist_timeout: float = setting(1800.0, "torchrun: seconds a collective waits for a silent rank before the job "
                                          "fails")

    def __post_init__(self):
        self.fill_defaults()

    def default_sources(self) -> List[Dict[str, object]]:
        """The defaults of the settings left at None, first source first (a recipe, the space's, ...)."""
        return []

    def fill_defaults(self) -> None:
        """Sets every setting left at None to the first value :meth:`default_sources` gives it (once, when the
        config is built: ``dataclasses.replace`` of one setting changes nothing else)."""
        names = {f.name for f in dataclasses.fields(self)}
        for source in self.default_sources():
            for name, value in source.items():
                if name in names and getattr(self, name) is None:
                    setattr(self, name, value)

    def check_types(self) -> None:
        """Raises ``self.Error`` naming the first setting whose value is not of its flag's kind (an integer where an
        integer is expected, never a bool; any real number for a float; a string; true/false for a bool), e.g. a
        ``--config`` file's ``"1"``, ``1.5``, ``[1, 2]``, ``true`` or ``null`` for an integer, then its ``choices``
        and its ``minimum``. A setting whose default is None may be None."""
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
            low = f.metadata.get("minimum")
            if low is not None and value is not None and value < low:
                raise self.Error(f"{f.name}: expected an integer >= {low}, got {value!r}")

    def validate(self) -> None:
        """Raises ``self.Error`` naming the first bad setting."""
        self.check_types()
        if isinstance(self.dist_timeout, bool) or not (math.isfinite(self.dist_timeout) and self.dist_timeout > 0):
            raise self.Error(f"dist_timeout: expected a number > 0, got {self.dist_timeout!r}")
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

    def check_numbers(self, names, low: float, strict: bool = False) -> None:
        """Raises ``self.Error`` naming the first of the fields ``names`` that is not a finite number ``>= low``
        (``> low`` if ``strict``)."""
        for name in names:
            value = getattr(self, name)
            ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
                  and (value > low if strict else value >= low))
            if not ok:
                raise self.Error(f"{name}: expected a number {'>' if strict else '>='} {low:g}, got {value!r}")

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


@dataclass
class DataConfig(RunConfig):
    """A command that reads a dataset of a search space. ``data_parallel``: under torchrun it trains data-parallel
    (a comparison instead shares whole runs out over the ranks)."""

    data_parallel: ClassVar[bool] = True

    space: str = setting("darts", "search space (snas_fast.spaces.space_names())")
    # its values are those of the space's kind, registered datasets included (space_choices), so no fixed choices
    dataset: Optional[str] = setting(None, "dataset, of the space's kind, or a tabular space's table (default: the "
                                           "kind's first; nothing is downloaded)", kind=str)
    data_dir: Optional[str] = setting(None, "folder holding cifar-10-batches-py", kind=str)
    data_limit: Optional[int] = setting(None, "keep the first N examples of each split", kind=int)
    num_workers: int = setting(0, "data loader workers")
    batch_size: Optional[int] = setting(None, "batch size (per process under torchrun; 64 unless the space's recipe "
                                              "says otherwise)", kind=int)

    def space_object(self):
        """The registered space ``space`` (unbound: :meth:`bound_space` binds it to the run)."""
        from ..spaces import get_space

        return get_space(self.space)

    def default_sources(self) -> List[Dict[str, object]]:
        from .. import data
        from ..spaces import space_names

        sources = super().default_sources()
        if self.space not in space_names():
            return sources  # validate() names it
        space = self.space_object()
        if space.data_kind is None:
            return sources + [space.defaults(self.roles[0]), KIND_DEFAULTS["table"]]
        return sources + [space.defaults(self.roles[0]), dict(KIND_DEFAULTS[space.data_kind],
                                                              dataset=data.default_dataset(space.data_kind))]

    def validate(self) -> None:
        from ..spaces import space_names
        from . import distributed

        if self.space not in space_names():
            raise self.Error(f"space: expected one of {', '.join(space_names())}, got {self.space!r}")
        space = self.space_object()
        kind = space.data_kind
        for name in ("dataset", "mixed"):  # the space's own values first: a better message than the union's
            allowed = space_choices(space, name)
            value = getattr(self, name, None)
            if allowed is not None and isinstance(value, str) and value not in allowed:
                raise self.Error(f"{name}: expected one of {', '.join(allowed)}, got {value!r} (space {self.space})")
        super().validate()
        self.check_ints(("batch_size",), 1)
        if self.data_limit is not None and not _int_at_least(self.data_limit, 1):
            raise self.Error(f"data_limit: expected an integer >= 1, got {self.data_limit}")
        if not _int_at_least(self.num_workers, 0):
            raise self.Error(f"num_workers: expected an integer >= 0, got {self.num_workers!r}")
        if kind == "graphs" and self.data_parallel and distributed.context(self.device).distributed:
            raise self.Error("space: the graph spaces run in one process; start the command without torchrun")

    def load_data(self, split: str = "search"):
        """``(train, val, info)`` of the search parts (``split="search"``) or ``(train, test, info)`` for a
        retraining (``"train_test"``) of ``dataset``, cut to ``data_limit`` examples per part if set
        (:func:`snas_fast.data.load`); None for a tabular space (no data). Raises ``self.Error`` or
        :class:`~snas_fast.data.DatasetError`, one line."""
        from .. import data

        if self.space_object().data_kind is None:
            return None
        if self.dataset == "cifar10" and not self.data_dir:
            raise self.Error("data_dir: cifar10 needs the folder holding cifar-10-batches-py (nothing is "
                             "downloaded)")
        try:
            return data.load(self.dataset, self.data_dir, seed=self.seed, split=split, limit=self.data_limit)
        except ValueError as error:
            raise self.Error(str(error)) from None

    def bound_space(self, info=None):
        """The space of this run: its own settings from this config and the dataset's ``info``
        (:meth:`SearchSpace.configure <snas_fast.spaces.SearchSpace.configure>`). ``self.Error`` (the space's one
        line, which names the setting) for a setting the space refuses."""
        try:
            return self.space_object().configure(self, info)
        except ValueError as error:
            raise self.Error(str(error)) from None


@dataclass
class SpaceSettings(MorphSettings, GnnSettings, DartsSettings):
    """Every built-in space's own settings (:attr:`SearchSpace.settings <snas_fast.spaces.SearchSpace.settings>`):
    a command lists those of its ``--space`` (:func:`shown_fields`)."""


@dataclass
class NetworkConfig(SpaceSettings, DataConfig):
    """A command that builds the space's networks: their size and the space's own settings. ``strategy``: the
    strategy whose run this is (no flag: ``snas-fast search --strategy`` and ``compare`` write it into the run's
    ``config.json``, ``--resume`` reads it back)."""

    strategy: Optional[str] = None


@dataclass
class TrainingConfig(NetworkConfig):
    """A command that trains weights: the optimisation recipe (:data:`KIND_DEFAULTS`: SGD for images, Adam for
    graphs)."""

    epochs: Optional[int] = setting(10, "epochs", kind=int)
    optimizer: Optional[str] = setting(None, "weights: sgd (momentum) or adam, with a cosine rate (sgd for images, "
                                             "adam for graphs unless given)", kind=str, choices=("sgd", "adam"))
    lr: Optional[float] = setting(None, "weights: initial learning rate (0.025 with sgd on images, 0.003 "
                                        "with adam on graphs, unless given)", kind=float)
    lr_min: float = setting(0.0, "weights: final learning rate")
    momentum: float = setting(0.9, "weights: SGD momentum")
    weight_decay: Optional[float] = setting(None, "weights: weight decay (3e-4 on images, 0 on graphs, unless given)",
                                            kind=float)
    grad_clip: float = setting(5.0, "weights: gradient norm clip")
    drop_path: Optional[float] = setting(0.0, "drop-path probability (ramped linearly from 0 over the epochs)",
                                         kind=float)
    sync_bn: bool = setting(False, "torchrun: BatchNorm statistics of the global batch (else per process)")

    def validate(self) -> None:
        super().validate()
        self.check_ints(("epochs",), 1)
        if not 0.0 <= self.drop_path < 1.0:
            raise self.Error(f"drop_path: expected a probability in [0, 1), got {self.drop_path}")
        self.check_numbers(("lr", "grad_clip"), 0.0, strict=True)
        self.check_numbers(("lr_min", "weight_decay"), 0.0)
        if not 0.0 <= self.momentum < 1.0:
            raise self.Error(f"momentum: expected a number in [0, 1), got {self.momentum!r}")

    def weight_optimizer(self, parameters):
        """``(optimizer, cosine schedule over the epochs down to lr_min)`` of the weights ``parameters``."""
        import torch

        if self.optimizer == "adam":
            optimizer = torch.optim.Adam(parameters, self.lr, weight_decay=self.weight_decay)
        else:
            optimizer = torch.optim.SGD(parameters, self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(self.epochs), eta_min=self.lr_min)
        return optimizer, schedule


#: The defaults by the kind of data (``snas_fast.data.KINDS``; ``"table"``: a tabular space's): the weights'
#: optimiser. Images: DARTS's SGD recipe; graphs: Adam at 3e-3 (EGNAS's SGD at 0.025 left the
#: digits-graph supernet at chance after 3 epochs, Adam reached 0.27 train accuracy; README, "Graph networks").
KIND_DEFAULTS: Dict[str, Dict[str, object]] = {
    "images": dict(optimizer="sgd", lr=0.025, weight_decay=3e-4, batch_size=64),
    "graphs": dict(optimizer="adam", lr=3e-3, weight_decay=0.0, batch_size=64),
}
KIND_DEFAULTS["table"] = KIND_DEFAULTS["images"]  # a table trains nothing; its configs still validate


def space_choices(space, name: str) -> Optional[Tuple[str, ...]]:
    """The values the setting ``name`` may take on ``space`` where the space narrows its flag's choices: the
    datasets of its kind (``dataset``; a tabular space's tables), how its supernet mixes (``mixed``); None
    elsewhere."""
    from .. import data

    if name == "dataset":
        return data.dataset_names(space.data_kind) if space.data_kind is not None else (space.datasets or None)
    if name == "mixed":
        return getattr(space, "mixed_modes", None)
    return None


def _space_fields() -> Dict[str, set]:
    """Every built-in space settings class's fields, by the class."""
    return {cls: {f.name for f in dataclasses.fields(cls)} for cls in SpaceSettings.__mro__[1:]
            if dataclasses.is_dataclass(cls) and cls is not object}


def shown_fields(cls, space=None):
    """``(flag, field)`` of the settings a command of config class ``cls`` shows for ``space`` (a space object, or
    None for the default ``darts``): every field with a flag, but a space's own setting only where ``space`` has it,
    and a setting only where one of its ``roles`` is the command's; none the class lists in ``hidden``."""
    if space is None:
        from ..spaces import get_space

        space = get_space("darts")
    owned = set().union(*_space_fields().values())
    own = {f.name for f in dataclasses.fields(space.settings)} if space.settings else set()
    roles = set(getattr(cls, "roles", ROLES))
    hidden = set(getattr(cls, "hidden", ()))
    if space.data_kind is None:  # a tabular space reads no data (but may hold several tables: its datasets)
        hidden |= {"data_dir", "data_limit", "num_workers"} | (set() if space.datasets else {"dataset"})
    for flag, f in flag_fields(cls):
        if f.name in hidden or (f.name in owned and f.name not in own):
            continue
        if not roles & set(f.metadata.get("roles", ROLES)):
            continue
        yield flag, f
