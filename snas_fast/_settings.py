"""Settings as dataclass fields that carry their command-line flag (:func:`setting`), below every layer: a space
declares its own (:attr:`snas_fast.spaces.SearchSpace.settings`), a strategy, a recipe and a command theirs, and the
CLI builds its flags from the fields (:func:`flag_fields`), never from a hand copy."""
from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

__all__ = ["ROLES", "flag_fields", "setting"]

#: Who reads a setting: ``"search"`` (a strategy: the architectures it draws and the networks it trains),
#: ``"supernet"`` (a strategy that trains the space's one-shot supernet), ``"child"`` (a retraining: the network
#: trained from scratch). A command's config class lists the roles it plays (``roles``, the first giving its
#: defaults).
ROLES = ("search", "supernet", "child")


def setting(default: Any, help: str, kind: Optional[Callable] = None, flag: Optional[str] = None,
            choices: Optional[Sequence[str]] = None, roles: Sequence[str] = ROLES, minimum: Optional[int] = None):
    """A config field with its command-line flag: ``--{flag}`` (default: the field name with dashes) parsed by
    ``kind`` (default: the type of ``default``; bools take true/false); ``choices``: the values it may take (checked
    by ``RunConfig.check_types``, listed by ``--help``); ``roles``: who reads it (:data:`ROLES`; a command shows the
    flags of its roles); ``minimum``: the least value an integer setting may take (checked with its kind)."""
    return field(default=default, metadata=dict(help=help, kind=kind, flag=flag, roles=tuple(roles), minimum=minimum,
                                                choices=tuple(choices) if choices is not None else None))


def flag_fields(cls) -> Iterator[Tuple[str, dataclasses.Field]]:
    """``(flag, field)`` of every field of the config class ``cls`` that has a flag, in field order."""
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            yield f.metadata["flag"] or f.name.replace("_", "-"), f
