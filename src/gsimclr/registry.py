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
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable, TypeVar

from gsimclr.errors import UserError

T = TypeVar("T")


class Registry(dict):
    """A name -> entry mapping that keeps registration order and names its kind in errors."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self._declared: dict[str, str] = {}  # name -> the module whose import registers it

    def declare(self, *names: str, module: str) -> None:
        """Names that importing ``module`` registers, known before it is imported: :meth:`names` and
        ``in`` see them at once; :meth:`get`, ``[]``, :meth:`values` and :meth:`items` import the module
        first. A declared name the module does not register is a ``LookupError`` at its first lookup."""
        for name in names:
            if name in self._declared or dict.__contains__(self, name):
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._declared[name] = module

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

    def register(self, name: str, entry: Any = None) -> Any:
        """``REG.register("name", entry)``, or ``@REG.register("name")`` as a decorator."""
        if entry is not None:
            self._add(name, entry)
            return entry

        def wrap(obj: T) -> T:
            self._add(name, obj)
            return obj

        return wrap

    def _add(self, name: str, entry: Any) -> None:
        if dict.__contains__(self, name):
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self[name] = entry

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
