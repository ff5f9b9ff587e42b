"""Plug-ins: modules outside gsimclr that register methods, losses, samplers or any other entry.

A plug-in is a module whose import registers its entries (and with them their options, checks and
titles, :class:`gsimclr.options.Declares`). gsimclr imports, before it parses a command line:

- every entry point of the ``gsimclr.plugins`` group of the installed distributions (in the
  plug-in's own ``pyproject.toml``: ``[project.entry-points."gsimclr.plugins"] mine = "mine"``);
- the modules named by ``GSIMCLR_PLUGINS`` (comma-separated);
- the modules named by ``--plugin MODULE`` (repeatable, on every command).

A plug-in is a module name (importable, e.g. on ``PYTHONPATH``) or the path of its file
(``--plugin path/to/mine.py``: imported as module ``mine``) or of its package folder (with an
``__init__.py``). A plug-in that fails to import, or that exits while it is imported, is a one-line
:class:`gsimclr.errors.UserError` naming it. Each module is imported once (a second load is a no-op),
so a plug-in named twice registers once; one that registers nothing is a one-line warning.

Example:
    >>> plugin_arguments(["pretrain", "--plugin", "mine", "--plugin=theirs", "--lr", "0.1"])
    ['mine', 'theirs']
    >>> plugin_path("mine"), plugin_path("mine.py").name, plugin_path("plugins/mine").name
    (None, 'mine.py', 'mine')
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from gsimclr.errors import UserError

GROUP = "gsimclr.plugins"
ENVIRONMENT = "GSIMCLR_PLUGINS"
_loaded: dict[str, None] = {}   # what was loaded, in load order (an ordered set)
#: the plug-in being imported now (None: gsimclr itself), which the registries name as an entry's origin
importing: str | None = None


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


def plugin_path(spec: str) -> Path | None:
    """The file or folder a plug-in ``spec`` names (``mine.py``, ``path/to/mine``, ``~/mine.py``), or None
    for a module name (``mine``, ``mypackage.mine``)."""
    if spec.endswith(".py") or "/" in spec or os.sep in spec or spec.startswith("~") or spec in (".", ".."):
        return Path(os.path.expanduser(spec))
    return None


def load_plugins(modules: Iterable[str] = (), entry_points: bool = True, environment: bool = True) -> list[str]:
    """Import the entry points of :data:`GROUP`, then ``GSIMCLR_PLUGINS``, then ``modules`` (module names
    or paths, :func:`plugin_path`); the names imported now (each is imported once per process)."""
    done = []
    if entry_points:
        for point in metadata.entry_points(group=GROUP):
            key = f"entry point {point.name} ({point.value})"
            if key not in _loaded:
                _import(point.value.partition(":")[0], key, lambda: _load_entry_point(point, key))
                _loaded[key] = None
                done.append(point.value)
    for module in [*(environment_plugins() if environment else []), *modules]:
        if not module.strip():
            raise UserError("--plugin needs a module name or a .py file")
        path = plugin_path(module.strip())
        if path is not None:
            key = _path_key(module, path)
            if key not in _loaded:
                _import(module, f"plug-in {module}", lambda: _import_file(module, path))
                _loaded[key] = None
                done.append(key)
        elif module.strip() not in _loaded:
            name = module.strip()
            _check_module_name(module, name)
            _import(name, f"plug-in {name}", lambda: _import_module(name))
            _loaded[name] = None
            done.append(name)
    return done


def loaded_modules() -> list[str]:
    """The plug-ins loaded by name or path so far (``GSIMCLR_PLUGINS``, ``--plugin``; a path as an absolute
    one), in load order: what a worker process (``gsimclr run --jobs``) loads again to hold the same
    registrations, and what a run folder records (``run.json``)."""
    return [m for m in _loaded if not m.startswith("entry point ")]


def _check_module_name(spec: str, name: str) -> None:
    if not all(part.isidentifier() for part in name.split(".")):
        raise UserError(f"plug-in {spec!r} is neither a module name (such as mine or mypackage.mine) nor a .py file")


def _path_key(spec: str, path: Path) -> str:
    """The absolute path a plug-in file or folder is loaded from (a missing one is a one-line error)."""
    if not path.exists():
        raise UserError(f"plug-in {spec}: no such file or folder")
    if path.is_dir():
        if not (path / "__init__.py").is_file():
            raise UserError(f"plug-in {spec} is a folder without __init__.py; give the plug-in's .py file, or its "
                            "package folder")
    elif path.suffix != ".py":
        raise UserError(f"plug-in {spec} is not a Python file (.py) nor a module name")
    return str(path.resolve())


def _load_entry_point(point, what: str) -> None:
    with _counting(what):
        point.load()


def _import_module(name: str) -> None:
    with _counting(name):
        module = importlib.import_module(name)
        if getattr(module, "__file__", None) is None and getattr(module, "__path__", None) is not None:
            raise UserError("it is a folder without __init__.py (a namespace package), not a plug-in module")


def _import_file(spec: str, path: Path) -> None:
    """Import the plug-in file ``path`` (or package folder) as the module named by its stem (``__name__``,
    which its ``"module:attribute"`` references name), unless that module is imported from there already."""
    path = path.resolve()
    init = path / "__init__.py" if path.is_dir() else path
    name = path.name if path.is_dir() else path.stem
    if not name.isidentifier():
        raise UserError(f"{name!r} is not a Python module name; rename it (letters, digits, _)")
    known = sys.modules.get(name)
    if known is not None:
        if getattr(known, "__file__", None) and Path(known.__file__).resolve() == init:
            return   # imported already, under the same name from the same file
        raise UserError(f"a module named {name} is imported already (from "
                        f"{getattr(known, '__file__', None) or 'Python itself'}); rename the plug-in's file")
    module_spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(path)] if path.is_dir() else None)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        with _counting(spec):
            module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise


@contextmanager
def _counting(what: str) -> Iterator[None]:
    """Import a plug-in with :data:`importing` set, and warn when its import registers nothing."""
    global importing
    from gsimclr.registry import Registry

    before = Registry.entry_count()
    previous, importing = importing, what
    try:
        yield
    finally:
        importing = previous
    if Registry.entry_count() == before:
        warnings.warn(f"plug-in {what} registered nothing (no method, loss, sampler or other entry); is it the "
                      "right module?", stacklevel=1)


def _import(module: str, what: str, load) -> None:
    try:
        load()
    except UserError as exc:
        raise UserError(f"{what}: {exc}") from None
    except SystemExit as exc:   # sys.exit() in someone else's module ends no gsimclr command silently
        raise UserError(f"{what} failed to import: it called sys.exit({'' if exc.code is None else repr(exc.code)})"
                        ) from None
    except Exception as exc:  # any failure of someone else's module is one line naming it
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(f"{what} failed to import: {type(exc).__name__}" + (f": {detail}" if detail else "")) from None
