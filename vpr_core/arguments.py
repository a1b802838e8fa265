"""Command-line flags, derived from the settings' declarations (`vpr_core.settings`).

A flag's name, aliases, help, choices and the default its help shows come from the setting's
field. A flag the user did not type is absent from the parsed namespace (argparse's
SUPPRESS), so `given` tells typed values from defaults: explicit flags win over a resumed
run's flags.json, which wins over the config's defaults. Only the standard library and the
declarations are imported here: a parser stays quick to build.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import settings
from .fileio import write_json_atomic


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit status 2."""

    def error(self, message: str):
        sys.stderr.write(f"error: {message}; see `{self.prog} --help`\n")
        raise SystemExit(2)


def emit(args, result: dict, lines: list[str]) -> None:
    """Print `lines`; with `--json FILE`, also write `result` to FILE (atomically)."""
    for line in lines:
        print(line, flush=True)
    if getattr(args, "json", None):
        write_json_atomic(Path(args.json).absolute(), result)


def add_json(parser, json_help: str = "also write the result as JSON to FILE") -> None:
    parser.add_argument("--json", metavar="FILE", help=json_help)


def group_of(parser, title: str):
    """The parser's argument group `title`, made on first use."""
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser.add_argument_group(title)


def add_settings(parser, cls, names=None, *, exclude=(), default_from: str | None = None,
                 required=()) -> None:
    """A flag (with its aliases and switches) for each declared setting of `cls` that has
    one: those in `names` (default: all) but `exclude`. `default_from` (e.g. "the spec's")
    names where a value comes from before the config's default; `required` must be given."""
    for name, meta in settings.declared(cls):
        if (names is not None and name not in names) or name in exclude:
            continue
        group = group_of(parser, meta.group)
        flag = meta.flag_of(name)
        if flag is not None:
            group.add_argument(flag, *meta.aliases, dest=name, default=argparse.SUPPRESS,
                               required=name in required, **_value_options(cls, name, meta,
                                                                           default_from))
        for switch in meta.switches:
            group.add_argument(switch.flag, dest=name, action="store_const", const=switch.value,
                               default=argparse.SUPPRESS, help=switch.help)


def _value_options(cls, name: str, meta: settings.Setting, default_from: str | None) -> dict:
    if meta.parse is bool:  # a switch: on when given
        return {"help": meta.help.replace("%", "%%"), "action": "store_const", "const": True}
    help_text = meta.help
    if meta.shown_default is not None or settings.default_of(cls, name) is not None:
        default = settings.default_text(cls, name)
        shown = f"default: {default_from}, else {default}" if default_from else \
            f"default {default}"
        help_text = f"{help_text} ({shown})"
    options = {"help": help_text.replace("%", "%%")}
    metavar = meta.metavar or ("N" if meta.parse is int and meta.choices is None else None)
    options.update(metavar=metavar, choices=meta.choices)
    if meta.parse is not None:
        options["type"] = meta.parse
    if meta.nargs is not None:
        options["nargs"] = meta.nargs
    return options


def given(args, cls_or_names) -> dict:
    """The settings the user typed: those of a config class (or the names given) present in
    the parsed namespace."""
    names = [name for name, _ in settings.declared(cls_or_names)] \
        if isinstance(cls_or_names, type) else cls_or_names
    return {name: getattr(args, name) for name in names
            if getattr(args, name, None) is not None}
