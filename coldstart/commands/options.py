"""Command-line options derived from config dataclasses, so a default has one home.

`add_config_options(parser, SplitConfig)` adds `--cold-fraction` etc. with the field's default,
type and help (`field(metadata={"help": ..., "choices": ...})`); `config_kwargs(SplitConfig,
args)` reads them back. A flag never restates a default: change the dataclass and the CLI
follows (tests/coldstart/test_options.py keeps them equal).

Types understood: int, float, str (and `X | None`), bool (a False default gives `--name`, a
True default `--no-name`), and tuples/lists of str written comma-separated ("title,genres").
Anything else (dicts, required lists) a command parses itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

_MISSING = dataclasses.MISSING


def field_default(field: dataclasses.Field) -> Any:
    """The field's default (calling its factory), or dataclasses.MISSING when it has none."""
    if field.default is not _MISSING:
        return field.default
    if field.default_factory is not _MISSING:
        return field.default_factory()
    return _MISSING


def config_defaults(cls: type) -> dict[str, Any]:
    """{field name: default} of a config dataclass (fields without a default left out)."""
    out = {f.name: field_default(f) for f in dataclasses.fields(cls)}
    return {k: v for k, v in out.items() if v is not _MISSING}


def _without_none(tp: Any) -> Any:
    """`X | None` -> X (None stays reachable as the default only)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def _csv(kind: type) -> Any:
    def parse(text: str) -> Any:
        return kind(part.strip() for part in text.split(",") if part.strip())

    parse.__name__ = "comma-separated list"  # argparse names the type in its error messages
    return parse


def add_config_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    names: Iterable[str] | None = None,
    flags: Mapping[str, str] | None = None,
) -> list[str]:
    """Add one option per field of dataclass `cls` (all fields, or `names`); returns the dests.

    flags: field name -> option string where the CLI spells it differently (e.g. with_tags ->
    "--tags"). A field without a default becomes a required option.
    """
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    chosen = list(names) if names is not None else list(by_name)
    for name in chosen:
        field = by_name[name]
        default = field_default(field)
        tp = _without_none(hints[name])
        help_ = field.metadata.get("help", "")
        flag = (flags or {}).get(name)
        option = name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": name}
        if tp is bool:
            # Only the switch away from the default is offered.
            if default is True:
                option = f"no-{option}"
                kwargs.update(action="store_false", default=True)
                help_ = f"turn off {help_}" if help_ else ""
            else:
                kwargs.update(action="store_true", default=False)
        else:
            origin = typing.get_origin(tp)
            if origin in (tuple, list):
                kwargs["type"] = _csv(origin)
                shown = ",".join(map(str, default)) if default is not _MISSING else None
            else:
                kwargs["type"] = tp if tp in (int, float, str) else str
                shown = default
            if "choices" in field.metadata:
                kwargs["choices"] = tuple(field.metadata["choices"])
            if default is _MISSING:
                kwargs["required"] = True
            else:
                kwargs["default"] = default
                help_ = f"{help_} (default: {shown})".strip()
        # argparse %-formats help strings: a literal % must be doubled.
        parser.add_argument(flag or f"--{option}", help=help_.replace("%", "%%"), **kwargs)
    return chosen


def config_kwargs(
    cls: type, args: argparse.Namespace, names: Iterable[str] | None = None
) -> dict[str, Any]:
    """The values of `cls`'s fields (all, or `names`) that `args` holds, as keyword arguments."""
    wanted = set(names) if names is not None else {f.name for f in dataclasses.fields(cls)}
    return {n: getattr(args, n) for n in wanted if hasattr(args, n)}
