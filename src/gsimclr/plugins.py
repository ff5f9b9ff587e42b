"""Plug-ins: modules outside gsimclr that register methods, losses, samplers or any other entry.

A plug-in is a module whose import registers its entries (and with them their options, checks and
titles, :class:`gsimclr.options.Declares`). gsimclr imports, before it parses a command line:

- every entry point of the ``gsimclr.plugins`` group of the installed distributions (in the
  plug-in's own ``pyproject.toml``: ``[project.entry-points."gsimclr.plugins"] mine = "mine"``);
- the modules named by ``GSIMCLR_PLUGINS`` (comma-separated);
- the modules named by ``--plugin MODULE`` (repeatable, on every command).

A plug-in that fails to import is a one-line :class:`gsimclr.errors.UserError`. Each module is
imported once (a second load is a no-op), so a plug-in named twice registers once.

Example:
    >>> plugin_arguments(["pretrain", "--plugin", "mine", "--plugin=theirs", "--lr", "0.1"])
    ['mine', 'theirs']
    >>> names = load_plugins(["json"], entry_points=False, environment=False)  # registers nothing
    >>> load_plugins(["json"], entry_points=False, environment=False)  # a second load is a no-op
    []
"""

from __future__ import annotations

import importlib
import os
from importlib import metadata
from typing import Iterable, Sequence

from gsimclr.errors import UserError

GROUP = "gsimclr.plugins"
ENVIRONMENT = "GSIMCLR_PLUGINS"
_loaded: set[str] = set()


def plugin_arguments(argv: Sequence[str]) -> list[str]:
    """The modules of ``--plugin MODULE`` / ``--plugin=MODULE`` in a command line, in order."""
    found = []
    for i, arg in enumerate(argv):
        if arg == "--plugin" and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith("--plugin="):
            found.append(arg.split("=", 1)[1])
    return found


def environment_plugins(environ: dict | None = None) -> list[str]:
    """The modules named by ``GSIMCLR_PLUGINS`` (comma-separated)."""
    text = (os.environ if environ is None else environ).get(ENVIRONMENT, "")
    return [m.strip() for m in text.split(",") if m.strip()]


def load_plugins(modules: Iterable[str] = (), entry_points: bool = True, environment: bool = True) -> list[str]:
    """Import the entry points of :data:`GROUP`, then ``GSIMCLR_PLUGINS``, then ``modules``; the names
    imported now (each is imported once per process)."""
    done = []
    if entry_points:
        for point in metadata.entry_points(group=GROUP):
            key = f"entry point {point.name} ({point.value})"
            if key not in _loaded:
                _import(point.value.partition(":")[0], key, point.load)
                _loaded.add(key)
                done.append(point.value)
    for module in [*(environment_plugins() if environment else []), *modules]:
        if not module.strip():
            raise UserError("--plugin needs a module name")
        if module not in _loaded:
            _import(module, f"plug-in {module}", lambda: importlib.import_module(module))
            _loaded.add(module)
            done.append(module)
    return done


def loaded_modules() -> list[str]:
    """The modules loaded by name so far (``GSIMCLR_PLUGINS``, ``--plugin``), in no set order: what a worker
    process (``gsimclr run --jobs``) loads again to hold the same registrations."""
    return sorted(m for m in _loaded if not m.startswith("entry point "))


def _import(module: str, what: str, load) -> None:
    try:
        load()
    except UserError as exc:
        raise UserError(f"{what}: {exc}") from None
    except Exception as exc:  # any failure of someone else's module is one line naming it
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(f"{what} failed to import: {type(exc).__name__}" + (f": {detail}" if detail else "")) from None
