"""Lazy attributes of a package (PEP 562): a name is imported from its module on first use.

A package ``__init__`` that imports everything makes every import of any of its modules pay for (and load) all of
them: importing the pure DARTS genotype module would load the compiled extension. The packages of snas_fast name
their public attributes in one table instead and import them when asked.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Mapping, Tuple, Union


def lazy_attributes(package: str, table: Dict[str, str]) -> Tuple[Callable[[str], object], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``table[name]`` is ``"module"`` (the attribute is that module,
    relative to ``package``) or ``"module:attribute"``. A resolved attribute is cached in the package."""

    def __getattr__(name: str):
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_name, _, attribute = target.partition(":")
        module = importlib.import_module(module_name, package)
        value = getattr(module, attribute) if attribute else module
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> List[str]:
        return sorted(set(table) | set(vars(importlib.import_module(package))))

    return __getattr__, __dir__


def make(registry: Mapping[str, Union[str, Callable]], name: str, what: str, kind: type):
    """A new object of the registry entry ``name``: its factory, or the factory its import path names
    (``"module:attribute"``, imported when first asked for), called with no argument. ValueError listing the names
    for an unknown one (``what``: the setting's name); TypeError for a factory that does not make a ``kind``."""
    if name not in registry:
        raise ValueError(f"{what}: expected one of {', '.join(registry)}, got {name!r}")
    factory = registry[name]
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
    made = factory()
    if not isinstance(made, kind):
        raise TypeError(f"{what} {name!r}: its factory returned {type(made).__name__}, not a {kind.__name__}")
    return made
