"""The module paths of snas_fast 0.1 (one flat package), kept one release as deprecated aliases.

``import snas_fast.supernet`` (and every other path in :data:`MOVED`) still works, with a ``DeprecationWarning`` that
names the new path: it returns the module at its new place, the very same module object (so patching one patches
the other); where 0.1's module held names that now live in other layers (:data:`GATHERED`), a module made of the
new one's names and those.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

#: old path -> new path
MOVED = {
    "snas_fast._backend": "snas_fast.ops._backend",
    "snas_fast._ops": "snas_fast.ops.registry",
    "snas_fast.functional": "snas_fast.ops.functional",
    "snas_fast.modules": "snas_fast.ops.modules",
    "snas_fast.reference": "snas_fast.ops.reference",
    "snas_fast.recompute": "snas_fast.ops.recompute",
    "snas_fast.search_space": "snas_fast.spaces.darts.space",
    "snas_fast.costs": "snas_fast.spaces.darts.costs",
    "snas_fast.genotypes": "snas_fast.spaces.darts.genotypes",
    "snas_fast.supernet": "snas_fast.spaces.darts.supernet",
    "snas_fast.networks": "snas_fast.spaces.darts.networks",
    "snas_fast.schedules": "snas_fast.search.schedules",
    "snas_fast.convergence": "snas_fast.search.convergence",
    "snas_fast.trainer": "snas_fast.search.snas",
    "snas_fast.retrain": "snas_fast.engine.retrain",
    "snas_fast.distributed": "snas_fast.engine.distributed",
    "snas_fast.spaces.gnn.datasets": "snas_fast.data.graphs",
    "snas_fast.plots": "snas_fast.viz.plots",
}

#: old path -> the names its 0.1 module had that now live elsewhere (``"module:attribute"``)
GATHERED = {
    "snas_fast.supernet": {"Supernet": "snas_fast.search.snas:SnasSupernet",
                           "SAMPLING": "snas_fast.search.snas:GRANULARITIES",
                           "ESTIMATORS": "snas_fast.search.snas:ESTIMATORS"},
    "snas_fast.trainer": {"seed_epoch": "snas_fast.engine.seeds:seed_epoch",
                          "save_atomic": "snas_fast.engine.rundir:save_atomic",
                          "read_checkpoint": "snas_fast.engine.rundir:read_checkpoint",
                          "write_json_atomic": "snas_fast.engine.rundir:write_json_atomic"},
    "snas_fast.distributed": {"gumbel_noise": "snas_fast.search.snas:gumbel_noise",
                              "GUMBEL_SAMPLE": "snas_fast.search.snas:GUMBEL_SAMPLE",
                              "seed_for": "snas_fast.engine.seeds:seed_for",
                              "make_generator": "snas_fast.engine.seeds:make_generator",
                              "train_loader": "snas_fast.engine.data:train_loader",
                              "eval_loader": "snas_fast.engine.data:eval_loader",
                              "ShardSampler": "snas_fast.engine.data:ShardSampler"},
}


def _attribute(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        warnings.warn(f"{spec.name} is deprecated: import {self.new} (the old path goes in the next release)",
                      DeprecationWarning, stacklevel=3)
        new = importlib.import_module(self.new)
        if spec.name not in GATHERED:
            return new
        module = types.ModuleType(spec.name, new.__doc__)
        module.__dict__.update({k: v for k, v in vars(new).items() if not k.startswith("__")})
        module.__dict__.update({k: _attribute(v) for k, v in GATHERED[spec.name].items()})
        return module

    def exec_module(self, module) -> None:  # the module was executed at its new path
        pass


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(MOVED[fullname]))


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
