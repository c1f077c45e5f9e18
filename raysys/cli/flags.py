"""Command-line flags from config dataclasses: one --flag per field, and the flags a user
gave turned back into key=value overrides (so flags, --set and YAML go through the same
validation in raysys.config.mapping).

A nested config (a stage's `prompt`, `generation`, `taskmap`) gets one flag per field of
its own, named by the field alone (`--template`, `--max-new-tokens`), or by the section and
the field where the name alone would not say what it is (`--generation-batch`); the
override it gives is dotted (`prompt.template=...`).

Also --verbose, the flag of every verb that runs Ray or models, and the log it decides on."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing

# Nested fields whose flag names the section too: (section, field) -> flag name.
_SECTION_FLAGS = {("generation", "batch"): "generation-batch"}


def _flags(cls, prefix: str = "", skip: tuple[str, ...] = ()):
    """(dotted key, flag name, type hint, default) of each leaf field of `cls`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(hints[f.name]) and not prefix:
            for key, flag, hint, d in _flags(hints[f.name], f"{f.name}."):
                yield key, flag, hint, getattr(default, key.split(".")[-1])
            continue
        section = prefix.rstrip(".")
        flag = _SECTION_FLAGS.get((section, f.name), f.name).replace("_", "-")
        yield prefix + f.name, flag, hints[f.name], default


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One --flag per leaf field of `cls` (default None = keep the config's value)."""
    for key, flag, hint, default in _flags(cls, skip=skip):
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: a flag of type X
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        kw = {"dest": "cfg:" + key, "help": f"(default: {default!r})"}
        if typing.get_origin(hint) is tuple:
            args = typing.get_args(hint)
            if len(args) == 2 and args[1] is not Ellipsis:
                parser.add_argument("--" + flag, type=args[0], nargs=2, metavar=("MIN", "MAX"), **kw)
            else:
                parser.add_argument("--" + flag, nargs="+", metavar=flag.upper().replace("-", "_"), **kw)
        elif hint is bool:
            parser.add_argument("--" + flag, action=argparse.BooleanOptionalAction, default=None, **kw)
        else:
            parser.add_argument("--" + flag, type=hint, metavar=flag.upper().replace("-", "_"), **kw)


def add_config_flags(parser: argparse.ArgumentParser, cls, what: str = "") -> None:
    """--config FILE, --set KEY=VALUE (repeatable) and one flag per field of `cls`: how a
    verb takes its stage's config (read back with `config_from_args`)."""
    parser.set_defaults(config_cls=cls)
    parser.add_argument("--config", help=f"YAML file of {cls.__name__} fields{what}")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (dotted for nested ones: prompt.template=alpaca)")
    add_dataclass_flags(parser, cls)


def config_from_args(args: argparse.Namespace):
    """The config a verb was given: its YAML file, then --set, then the field flags."""
    from raysys.config.mapping import load_config

    cls = args.config_cls
    return load_config(cls, args.config, list(args.set) + flag_values(args, cls))


def flag_values(args: argparse.Namespace, cls) -> list[str]:
    """The given dataclass flags as key=value overrides."""
    out = []
    for key, _, _, _ in _flags(cls):
        value = getattr(args, "cfg:" + key, None)
        if value is not None:
            out.append(f"{key}={json.dumps(list(value) if isinstance(value, (list, tuple)) else value)}")
    return out


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true", help="keep Ray's and the libraries' output on the "
                        "terminal (default: raysys.log in the output folder or work dir)")


def start_log_in(args: argparse.Namespace, folder: str | os.PathLike | None = None) -> None:
    """The libraries' output to `folder` (default: the folder of --out)/raysys.log, unless
    --verbose (raysys.console.start_log)."""
    from raysys.console import start_log

    start_log(folder if folder is not None else os.path.dirname(os.path.abspath(args.out)), args.verbose)


def at_least(low: float, kind: type = int):
    """An argparse type: a number of `kind` >= `low` (counts and shares: --actors 0 is
    refused by the parser in one line, before anything starts)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not value >= low or value != value:  # NaN fails both
            raise argparse.ArgumentTypeError(f"must be >= {low:g}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


class Parser(argparse.ArgumentParser):
    """argparse with raysys's error line: `raysys: error: <verb>: <message>`, exit 2 (no usage dump)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"raysys: error: {self.prog.removeprefix('raysys').strip() or 'raysys'}: {message} "
              f"(see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)
