"""One registry type for everything a contributor extends: methods, losses, evaluations, samplers,
pseudo-label sources, data sources and backbones each keep a :class:`Registry` in their own module.

The CLI, the options (their ``choices``), the pipeline and the report read the registries, so adding
an entry touches its own module and one registration, as timm's ``@register_model``:

    >>> LOSSES = Registry("loss")
    >>> @LOSSES.register("l2")
    ... def l2(a, b):
    ...     return (a - b) ** 2
    >>> LOSSES.names(), LOSSES["l2"](3, 1)
    (['l2'], 4)
    >>> LOSSES.get("l1")
    Traceback (most recent call last):
    ...
    gsimclr.errors.UserError: unknown loss 'l1'; choose one of l2

Options name their choices lazily as ``"module:ATTRIBUTE"`` (see :func:`resolve`), so a module that
defines options never imports the modules that register the choices. A registry that lives in a light
module (no PyTorch) can name entries that a heavy module registers when it is imported
(:meth:`Registry.declare`): the command line then checks a choice without importing PyTorch, and the
first lookup of such a name imports its module:

    >>> FORMATS = Registry("format")
    >>> FORMATS.declare("json", "csv", module="mypackage.formats")
    >>> FORMATS.names(), "csv" in FORMATS
    (['json', 'csv'], True)

An entry also declares what it owns (:class:`gsimclr.options.Declares`): its options, the commands
that take them, its checks against the rest of the configuration and its titles. A registry whose
entry a configuration option picks names that option (``Registry("loss", option="loss")``), so the
configuration knows which entries a run uses (:meth:`Registry.selected`): only their checks run, and
their options given to a run that uses none of them are refused:

    >>> from gsimclr.options import Declares
    >>> NOISES = Registry("noise", option="noise", section="augment")
    >>> NOISES.register("gauss", "Gaussian noise", declares=Declares(titles={"table": "Gaussian"}))
    'Gaussian noise'
    >>> NOISES.title("gauss", "table"), NOISES.title("gauss", "plot")
    ('Gaussian', 'gauss')

(An example that declares options is in :mod:`gsimclr.options`; they join every configuration, so
this one declares none.)
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any, Callable, Iterable, TypeVar

from gsimclr.errors import UserError
from gsimclr.options import Declares, Option

T = TypeVar("T")

_NAME = re.compile(r"[a-z0-9][a-z0-9_.+-]*")
"""An entry's name: what ``--method``/``--loss``/... take, a comma list's item, a ``PREFIX:ARGUMENT``
spec's prefix and a method's stage folder, so lowercase letters, digits and ``_ . + -``, first a letter
or a digit (no space, comma, colon or slash; no folder ``.``/``..``)."""


def check_name(kind: str, name: Any) -> None:
    """A ValueError naming what is wrong with an entry's name (see :data:`_NAME`).

    >>> check_name("loss", "my loss")
    Traceback (most recent call last):
    ...
    ValueError: loss name 'my loss' is not allowed: use lowercase letters, digits and _ . + - (such as 'my_loss')
    """
    if isinstance(name, str) and _NAME.fullmatch(name):
        return
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{kind} name {name!r} is not allowed: give a name such as 'mine'")
    fixed = re.sub(r"[^a-z0-9_.+-]+", "_", name.strip().lower()).strip("_.+-") or "mine"
    raise ValueError(f"{kind} name {name!r} is not allowed: use lowercase letters, digits and _ . + - "
                     f"(such as {fixed!r})")


def _origin() -> str:
    """Who is registering now: the plug-in being imported (:data:`gsimclr.plugins.importing`), else gsimclr."""
    plugins = sys.modules.get("gsimclr.plugins")
    loading = getattr(plugins, "importing", None)
    return f"plug-in {loading}" if loading else "gsimclr"


class Registry(dict):
    """A name -> entry mapping that keeps registration order and names its kind in errors.

    ``option``: the configuration option whose value picks the entry a run uses (``pick`` maps that
    value to an entry name, e.g. ``file:PATH`` -> ``file``), or ``selected(cfg)`` gives the names
    directly; ``section`` and ``commands``: the defaults of its entries' options (their group in
    ``--help``, the subcommands that take them)."""

    #: every registry, in creation order: the configuration gathers their entries' options
    instances: list["Registry"] = []
    #: called after an entry declares options (the configuration rebuilds its fields)
    listeners: list[Callable[[], None]] = []

    def __init__(self, kind: str, *, option: str | None = None, pick: Callable[[Any], str | None] | None = None,
                 selected: Callable[[Any], Iterable[str]] | None = None, section: str = "pretrain",
                 commands: tuple[str, ...] = ("run", "pretrain"), reserved: Iterable[str] = (),
                 entry_check: Callable[[str, Any], str | None] | None = None):
        super().__init__()
        self.kind = kind
        self.reserved = frozenset(reserved)   # names the entries may not take (a method's: the run folder's own)
        self.origins: dict[str, str] = {}     # name -> who registered it ("gsimclr", "plug-in mine")
        self._entry_check = entry_check       # (name, entry) -> what is wrong with the entry, or None
        self.option, self.section, self.commands = option, section, commands
        self._pick, self._selected = pick, selected
        self._declared: dict[str, str] = {}  # name -> the module whose import registers it
        self.declarations: dict[str, Declares] = {}  # name -> what the entry declares about itself
        Registry.instances.append(self)

    def declare(self, *names: str, module: str, declares: Declares | None = None) -> None:
        """Names that importing ``module`` registers, known before it is imported: :meth:`names` and
        ``in`` see them at once; :meth:`get`, ``[]``, :meth:`values` and :meth:`items` import the module
        first. A declared name the module does not register is a ``LookupError`` at its first lookup.
        ``declares``: what each of these entries owns (options, checks, titles), known at once."""
        for name in names:
            self._check_new(name)
            self._declared[name] = module
            self.origins[name] = _origin()
        if declares is not None:
            self._set_declares(names, declares)

    def _set_declares(self, names: Iterable[str], declares: Declares) -> None:
        for name in names:
            self.declarations[name] = declares
        if declares.options:
            for listener in list(Registry.listeners):
                listener()

    def selected(self, cfg: Any) -> list[str]:
        """The entries of this registry a configuration uses (none when no option picks them)."""
        if self._selected is not None:
            return list(self._selected(cfg))
        if self.option is None:
            return []
        value = getattr(cfg, self.option, None)
        name = self._pick(value) if self._pick is not None and value is not None else value
        return [name] if name is not None and name in self else []

    def checks(self, name: str) -> tuple:
        return self.declarations[name].checks if name in self.declarations else ()

    def title(self, name: str, what: str = "title") -> str:
        """The words entry ``name`` gives ``what`` (a table, a plot's axis), else its name."""
        declares = self.declarations.get(name)
        return declares.titles.get(what, name) if declares is not None else name

    def options(self) -> list[tuple[Option, str, tuple[str, ...], str]]:
        """``(option, section, commands, entry name)`` for every option every entry declares."""
        return [(o, o.section or self.section, d.commands or self.commands, name)
                for name, d in self.declarations.items() for o in d.options]

    def owners(self, option: str) -> list[str]:
        """The entries that declare ``option``."""
        return [name for name, d in self.declarations.items() if any(o.name == option for o in d.options)]

    def _load(self, name: str | None = None) -> None:
        """Import the modules of the declared names not registered yet (only ``name``'s, if given)."""
        pending = [n for n in ([name] if name is not None else list(self._declared))
                   if n in self._declared and not dict.__contains__(self, n)]
        for module in dict.fromkeys(self._declared[n] for n in pending):
            importlib.import_module(module)
        for n in pending:
            if not dict.__contains__(self, n):
                raise LookupError(f"{self.kind} {n!r} is declared in {self._declared[n]} but importing it "
                                  "registered no such entry")

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or name in self._declared

    def __getitem__(self, name: str) -> Any:
        self._load(name)
        return dict.__getitem__(self, name)

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def keys(self):  # type: ignore[override]
        return self.names()

    def values(self):  # type: ignore[override]
        self._load()
        return [dict.__getitem__(self, n) for n in self.names()]

    def items(self):  # type: ignore[override]
        self._load()
        return [(n, dict.__getitem__(self, n)) for n in self.names()]

    def register(self, name: str, entry: Any = None, *, declares: Declares | None = None) -> Any:
        """``REG.register("name", entry)``, or ``@REG.register("name")`` as a decorator; ``declares``:
        what the entry owns (:class:`gsimclr.options.Declares`), unless :meth:`declare` said it; an entry
        with a ``declares`` attribute (a record such as :class:`gsimclr.loss.Loss`) declares that by itself."""
        if entry is not None:
            self._add(name, entry, declares)
            return entry

        def wrap(obj: T) -> T:
            self._add(name, obj, declares)
            return obj

        return wrap

    @classmethod
    def entry_count(cls) -> int:
        """How many entries every registry holds (declared or registered): whether an import registered any."""
        return len(cls.instances) + sum(len(dict.keys(r)) + len(r._declared) for r in cls.instances)

    def _check_new(self, name: Any) -> None:
        """A ValueError for a name an entry cannot take: not a valid name, reserved, or taken already (naming
        who took it)."""
        check_name(self.kind, name)
        if name in self.reserved:
            raise ValueError(f"{self.kind} name {name!r} is reserved (gsimclr uses it); choose another name")
        if name in self._declared or dict.__contains__(self, name):
            by = self.origins.get(name, "gsimclr")
            raise ValueError(f"{self.kind} {name!r} is registered twice ({by} registered it already); "
                             "choose another name")

    def _add(self, name: str, entry: Any, declares: Declares | None = None) -> None:
        arriving = name in self._declared and not dict.__contains__(self, name)   # a declared name's registration
        if not arriving:
            self._check_new(name)
        problem = self._entry_check(name, entry) if self._entry_check is not None else None
        if problem:
            raise ValueError(f"{self.kind} {name!r}: {problem}")
        if declares is None and isinstance(getattr(entry, "declares", None), Declares):
            declares = entry.declares  # a record that carries its own declarations (gsimclr.loss.Loss)
        if declares is not None and name in self.declarations:
            raise ValueError(f"{self.kind} {name!r} declares its options twice (in declare and register)")
        self[name] = entry
        if not arriving:
            self.origins[name] = _origin()
        if declares is not None:
            try:
                self._set_declares([name], declares)
            except Exception:   # a refused declaration (an option shadowing another) registers nothing
                dict.__delitem__(self, name)
                self.declarations.pop(name, None)
                if not arriving:
                    self.origins.pop(name, None)
                for listener in list(Registry.listeners):
                    listener()
                raise

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        """The entry registered as ``name``; an unknown name is a :class:`UserError` listing the choices."""
        if name in self:
            return self[name]
        if default is not None:
            return default
        raise UserError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")

    def names(self) -> list[str]:
        """Every name, declared ones first (in declaration order), then the others as registered."""
        return [*self._declared, *(n for n in dict.keys(self) if n not in self._declared)]


def resolve(ref: str | Iterable[str] | Callable[[], Iterable[str]]) -> list[str]:
    """The names a choices reference stands for: a ``"module:ATTRIBUTE"`` string (a registry or any
    iterable of names, imported on first use), a callable returning names, or the names themselves."""
    if isinstance(ref, str):
        module, _, attr = ref.partition(":")
        value = getattr(importlib.import_module(module), attr)
        return list(value.names() if isinstance(value, Registry) else value)
    if callable(ref):
        return list(ref())
    return list(ref)


def resolve_function(ref: str | Callable) -> Callable:
    """A function, or the one a ``"module:FUNCTION"`` string names (imported on first use, as :func:`resolve`)."""
    if isinstance(ref, str):
        module, _, attr = ref.partition(":")
        return getattr(importlib.import_module(module), attr)
    return ref
