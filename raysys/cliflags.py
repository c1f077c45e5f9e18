"""Command-line flags from config dataclasses: one --flag per field, and the flags a user
gave turned back into key=value overrides (so flags, --set and YAML go through the same
validation in raysys.configio)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One --flag per field of `cls` (default None = keep the config's value)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: a flag of type X
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = f"(default: {default!r})"
        if typing.get_origin(hint) is tuple:
            args = typing.get_args(hint)
            if len(args) == 2 and args[1] is not Ellipsis:
                parser.add_argument(flag, type=args[0], nargs=2, metavar=("MIN", "MAX"), help=help_)
            else:
                parser.add_argument(flag, nargs="+", help=help_)
        elif hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            parser.add_argument(flag, type=hint, help=help_)


def flag_values(args: argparse.Namespace, cls) -> list[str]:
    """The given dataclass flags as key=value overrides."""
    out = []
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            out.append(f"{f.name}={json.dumps(list(value) if isinstance(value, (list, tuple)) else value)}")
    return out
