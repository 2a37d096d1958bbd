"""Which vector stores exist, and the one place a store is chosen by name.

A backend is a `Backend` declaration (index.backend) bound to the name `BACKEND` in its module.
Built-in backends are found by name, without importing anything until one is asked for:
"faiss" in index.store, and any other NAME in the module `coldstart.index.NAME_store` (so a
third built-in store is one new file, e.g. index/qdrant_store.py). Stores shipped by other
distributions register an entry point in the group "coldstart.index_backends"
(`qdrant = "my_pkg.qdrant:BACKEND"`).

`coldstart index build|info`, `coldstart serve` and the experiment's index stage choose a store
here: `choose` turns a YAML file's settings plus command-line values into (backend, location,
settings); `open_store` opens one by name.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from coldstart.index.backend import Backend, Option, Settings, VectorStore

log = logging.getLogger(__name__)

DEFAULT = "faiss"  # the embedded default: no server, no extra packages
ENTRY_POINT_GROUP = "coldstart.index_backends"
_PACKAGE = "coldstart.index"
_SUFFIX = "_store"
_MODULES = {"faiss": f"{_PACKAGE}.store"}  # built-ins whose module breaks the NAME_store rule


class UnknownBackend(ValueError):
    """A backend name that no module or entry point declares."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"unknown index backend {name!r}: known backends are {', '.join(backend_names())}"
        )


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _builtin_names() -> list[str]:
    # The package folder, listed without importing a module: `coldstart --help` stays fast.
    folder = Path(__file__).resolve().parent
    found = [
        info.name[: -len(_SUFFIX)]
        for info in pkgutil.iter_modules([str(folder)])
        if info.name.endswith(_SUFFIX) and len(info.name) > len(_SUFFIX)
    ]
    return [*_MODULES, *sorted(set(found) - set(_MODULES))]


def backend_names() -> tuple[str, ...]:
    """Every registered backend, the default first, then built-ins, then entry points."""
    builtin = _builtin_names()
    return (*builtin, *sorted(set(_entry_points()) - set(builtin)))


@functools.cache
def get_backend(name: str) -> Backend:
    """The declaration of backend `name`; UnknownBackend (listing the known ones) if none."""
    if name in _builtin_names():
        module = importlib.import_module(_MODULES.get(name, f"{_PACKAGE}.{name}{_SUFFIX}"))
        found = getattr(module, "BACKEND", None)
    elif name in _entry_points():
        found = _entry_points()[name].load()
    else:
        raise UnknownBackend(name)
    if not isinstance(found, Backend) or found.name != name:
        raise TypeError(f"backend {name!r} is not declared as a Backend named {name!r}: {found!r}")
    return found


def backends() -> list[Backend]:
    """Every backend that loads. One that does not (a broken third-party package) is skipped
    with a warning, so that it cannot break the commands' --help."""
    out = []
    for name in backend_names():
        try:
            out.append(get_backend(name))
        except Exception as err:  # noqa: BLE001 - reported, and the others still work
            log.warning("index backend %r is unavailable: %s", name, err)
    return out


def open_store(
    backend: str, location: str | os.PathLike, settings: Settings | None = None
) -> VectorStore:
    """Open the existing store of backend `backend` at `location` (faiss: an index directory;
    milvus: a `.db` file or `http://host:19530`). settings: its YAML sections, e.g.
    {"index": {"nprobe": 32}, "store": {"fsync": True}} or {"milvus": {"collection": "items"}}.
    """
    chosen = get_backend(backend)
    settings = settings or {}
    chosen.check(settings)
    return chosen.open(str(location), settings)


@dataclass
class Choice:
    """A chosen store: its backend, where it lives and its settings (YAML + command line)."""

    backend: Backend
    location: str
    settings: dict[str, dict[str, Any]]


def choose(
    raw: Mapping[str, Any],
    given: Mapping[str, Any],
    command: str,
    backend: str | None = None,
) -> Choice:
    """The store a command works on.

    raw: the --config YAML (its `backend:` key and the backends' sections).
    given: option flag -> value for every store option the user set on the command line
        (None: not given). An option of another backend is refused, naming its owner.
    backend: --backend (wins over the YAML's `backend:`; default "faiss").
    """
    chosen = get_backend(backend or raw.get("backend") or DEFAULT)
    own = {opt.flag: opt for opt in chosen.options if command in opt.commands}
    foreign = [flag for flag, value in given.items() if value is not None and flag not in own]
    if foreign:
        owners = sorted(
            {b.name for b in backends() for opt in b.options if opt.flag in foreign} - {chosen.name}
        )
        verb = "is" if len(foreign) == 1 else "are"
        raise ValueError(
            f"{', '.join(foreign)} {verb} for --backend {' or '.join(owners) or '(none)'}, "
            f"not {chosen.name}"
        )
    settings = {section: dict(raw.get(section) or {}) for section in chosen.sections}
    main = chosen.sections[0]
    location = settings[main].pop(chosen.location_key, None) if chosen.location_key else None
    for flag, opt in own.items():
        value = given.get(flag)
        if value is None:
            continue
        if opt.key is None:
            location = value
        else:
            settings[opt.section or main][opt.key] = value
    chosen.check(settings)
    if not location:
        where = [opt for opt in own.values() if opt.key is None]
        hint = f"{where[0].flag} {where[0].metavar or 'LOCATION'}" if where else "a location"
        raise ValueError(f"--backend {chosen.name} needs {hint}" + _help(where))
    return Choice(chosen, str(location), settings)


def _help(options: list[Option]) -> str:
    return f" ({options[0].help})" if options else ""


__all__ = [
    "DEFAULT",
    "ENTRY_POINT_GROUP",
    "Choice",
    "UnknownBackend",
    "backend_names",
    "backends",
    "choose",
    "get_backend",
    "open_store",
]
