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
defines options never imports the modules that register the choices.
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
        if name in self:
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
        return list(self.keys())


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
