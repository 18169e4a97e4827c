"""The layout is the architecture: what each layer may load, checked in a fresh interpreter (``sys.modules``), and the
0.1 module paths kept as deprecated aliases of the same module objects."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

LAYERS = ("ops", "data", "spaces", "search", "engine", "viz")


def loaded_after(statement: str):
    """The snas_fast modules (and whether matplotlib and the extension are) loaded by ``statement`` alone."""
    code = (f"import sys, json\n{statement}\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('snas_fast', 'matplotlib')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def layers_in(modules):
    return {m.split(".")[1] for m in modules if m.count(".") >= 1 and m.split(".")[1] in LAYERS}


def test_the_op_layer_loads_nothing_of_the_layers_above_it():
    modules = loaded_after("import snas_fast.ops; snas_fast.ops.mixed_op; snas_fast.ops.FusedMixedOp")
    assert "snas_fast._C" in modules and "snas_fast.ops.registry" in modules  # it did load the ops
    assert layers_in(modules) == {"ops"}


@pytest.mark.parametrize("module", ["snas_fast.spaces.darts.genotypes", "snas_fast.spaces.darts.costs",
                                    "snas_fast.spaces.darts.networks", "snas_fast.genotypes"])
def test_the_darts_policy_modules_load_no_compiled_extension(module):
    modules = loaded_after(f"import warnings; warnings.simplefilter('ignore'); import {module}")
    assert "snas_fast._C" not in modules and "snas_fast.ops.registry" not in modules
    assert layers_in(modules) <= {"ops", "spaces"}
    assert not any(m.startswith("matplotlib") for m in modules)


def test_spaces_load_no_strategy_engine_or_plot():
    modules = loaded_after("import snas_fast.spaces.darts.supernet, snas_fast.spaces.darts.networks, "
                           "snas_fast.spaces.morph, snas_fast.spaces.gnn.space, snas_fast.spaces.gnn.supernet")
    assert layers_in(modules) <= {"ops", "data", "spaces"} and "spaces" in layers_in(modules)


def test_the_data_layer_loads_no_space_engine_or_strategy():
    modules = loaded_after("import snas_fast.data, snas_fast.data.images, snas_fast.data.graphs, "
                           "snas_fast.data.loaders; snas_fast.data.load('digits-graph', limit=2)")
    assert layers_in(modules) == {"data"}


def test_the_engine_loads_no_plot_and_no_strategy():
    modules = loaded_after("import snas_fast.engine.loop, snas_fast.engine.rundir, snas_fast.engine.retrain, "
                           "snas_fast.engine.data, snas_fast.engine.distributed, snas_fast.engine.config")
    assert "viz" not in layers_in(modules) and "search" not in layers_in(modules)
    assert not any(m.startswith("matplotlib") for m in modules)


def test_a_strategy_loads_no_plot():
    modules = loaded_after("import snas_fast.search.snas, snas_fast.search.snas_pt, snas_fast.search.random, "
                           "snas_fast.search.rsws, snas_fast.search.darts, snas_fast.search.evolution, "
                           "snas_fast.search.bo, snas_fast.search.monas, snas_fast.search.evaluators, "
                           "snas_fast.search.naswot, snas_fast.search.morph, snas_fast.search.bayes, "
                           "snas_fast.search.registry")
    assert "viz" not in layers_in(modules) and not any(m.startswith("matplotlib") for m in modules)


def test_importing_the_package_loads_nothing_until_used():
    assert loaded_after("import snas_fast") == ["snas_fast", "snas_fast._compat", "snas_fast._lazy"]


def test_old_module_paths_are_deprecated_aliases_of_the_same_modules():
    import importlib
    import warnings

    from snas_fast import _compat

    for old, new in _compat.MOVED.items():
        sys.modules.pop(old, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        if old in _compat.GATHERED:  # the new module's names and those 0.1's module had that moved elsewhere
            for name, value in vars(importlib.import_module(new)).items():
                assert name.startswith("__") or name in _compat.GATHERED[old] or getattr(module, name) is value
            for name in _compat.GATHERED[old]:
                assert getattr(module, name) is not None, (old, name)
        else:
            assert module is importlib.import_module(new), old
        assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught), old
    # 0.1's import lines, verbatim
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from snas_fast.search_space import EDGES, PRIMITIVES, SepConv, make_op  # noqa: F401
        from snas_fast.supernet import Supernet
        from snas_fast.trainer import SearchConfig, read_checkpoint, search  # noqa: F401
        from snas_fast.distributed import gumbel_noise, train_loader  # noqa: F401
    # 0.1's data module is the data layer now, with the names it had
    from snas_fast.data import (CIFAR10_MEAN, DIGITS_TEST_SEED, DatasetError, DatasetInfo, ShardSampler,  # noqa: F401
                                eval_loader, limit, load_cifar10, load_digits, make_loaders)
    assert "digits" in __import__("snas_fast").data.DATASETS

    import torch

    assert Supernet(4, 10, 3, in_channels=1, sampling="example")(torch.randn(2, 1, 8, 8), 0.5).shape == (2, 10)


def test_the_readme_api_still_works():
    import warnings

    import snas_fast

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the README's names are not deprecated
        assert snas_fast.genotypes.load("DARTS_V2") == snas_fast.Genotype.from_dict(
            snas_fast.genotypes.load("DARTS_V2").to_dict())
        assert snas_fast.costs.network_costs is not None
        for name in snas_fast.__all__:
            assert getattr(snas_fast, name) is not None, name
    model = snas_fast.Supernet(4, 10, 3, in_channels=1, sampling="cell", estimator="dsnas")
    import torch

    assert model(torch.randn(2, 1, 8, 8), 1.0, hard=True).shape == (2, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # an old path (tested above)
        assert snas_fast.trainer.RECIPES is snas_fast.search.snas.RECIPES
