"""What an option is, and what a registry entry declares about itself (no PyTorch, no config).

An option has a name (``tau_plus`` -> ``--tau-plus``), a default, a help text, a type, a section (its
group in ``--help`` and in the run folder's stages) and its valid range or choices (see
:func:`gsimclr.config.opt` for the keys). The core options live in :class:`gsimclr.config.Config`;
every other option belongs to a registry entry, which declares it with the entry
(:meth:`gsimclr.registry.Registry.register` / :meth:`~gsimclr.registry.Registry.declare`)::

    LOSSES.declare("debiased", module="mypackage.debiased", declares=Declares(
        options=(Option("tau_plus", 0.1, "class prior tau+ of the debiased estimator", min=0, lt=1),),
        checks=(lambda cfg: None if cfg.guidance != "attract" else "--guidance attract: ... cannot attract",),
        titles={"loss": "Debiased contrastive loss"}))

:class:`gsimclr.config.Config` is rebuilt from the core options and every declared one, so
``cfg.tau_plus`` reads it, the command line offers ``--tau-plus`` on the commands the entry names,
the configuration validates it, the generated CLI reference documents it, and given for a run that does
not use the entry it is refused in one line.

Example:
    >>> Option("tau_plus", 0.1, "class prior", min=0).annotation, flag("tau_plus")
    (<class 'float'>, '--tau-plus')
    >>> Option("steps", None, "how many", type=int).annotation
    int | None
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

# Option sections, in --help order, with their titles; entries may add their own (add_section).
SECTIONS: dict[str, str] = {
    "data": "data",
    "model": "model",
    "augment": "augmentation",
    "pretrain": "contrastive pretraining",
    "loss": "loss (read only by the --loss entries that declare them)",
    "guidance": "G-SimCLR guidance",
    "moco": "MoCo (--method moco or gmoco)",
    "pseudo_labels": "pseudo labels (autoencoder, encoder or file; k-means)",
    "linear": "linear evaluation",
    "knn": "kNN evaluation",
    "finetune": "fine-tuning",
    "supervised": "supervised baseline",
    "protocol": "evaluation protocol and model selection",
    "execution": "execution",
    "report": "report",
}
def add_section(name: str, title: str) -> None:
    """A new option section (shown before ``execution`` in ``--help``) for entries' options. (A run's
    provenance compares an entry's options wherever the run uses the entry, whatever their section.)
    Adding an existing section again with the same title is a no-op."""
    if name in SECTIONS:
        if SECTIONS[name] != title:
            raise ValueError(f"option section {name!r} is declared twice, differently")
        return
    items = list(SECTIONS.items())
    at = next(i for i, (key, _) in enumerate(items) if key == "execution")
    SECTIONS.clear()
    SECTIONS.update([*items[:at], (name, title), *items[at:]])


COMMAND_FLAGS = frozenset({"preset", "out", "resume", "stop_after", "max_minutes", "methods", "jobs", "method",
                           "checkpoint", "split", "point", "output", "show", "plugin", "help", "version", "format",
                           "overwrite", "runs", "paper", "command"})
"""The command line's own arguments that are no configuration option (``--out``, ``--plugin``, ...): no
entry's option may take their names (tests/test_cli.py checks this list against the parser)."""


def flag(name: str) -> str:
    """The command-line flag of an option: ``label_fraction`` -> ``--label-fraction``."""
    return "--" + name.replace("_", "-")


def metadata(section: str, help: str, *, choices: Any = None, min: float | None = None, max: float | None = None,
             gt: float | None = None, lt: float | None = None, check: Callable[[Any], str | None] | None = None,
             metavar: str | None = None) -> dict[str, Any]:
    """An option's metadata (a :class:`gsimclr.config.Config` field's ``metadata``)."""
    if section not in SECTIONS:
        raise ValueError(f"unknown option section {section!r}")
    return {"section": section, "help": help, "choices": choices, "min": min, "max": max, "gt": gt, "lt": lt,
            "check": check, "metavar": metavar}


@dataclass(frozen=True)
class Option:
    """An option an entry reads. ``type`` defaults to the default's (``int``, ``float``, ``str``,
    ``bool``, ``list[int]``); give it for a None default (``type=int`` then means ``int | None``).
    ``section`` defaults to the registry's. ``choices``, ``min``, ``max``, ``gt``, ``lt``, ``check`` and
    ``metavar`` as in :func:`gsimclr.config.opt`."""

    name: str
    default: Any
    help: str
    type: Any = None
    section: str | None = None
    choices: Any = None
    min: float | None = None
    max: float | None = None
    gt: float | None = None
    lt: float | None = None
    check: Callable[[Any], str | None] | None = None
    metavar: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier() or self.name.startswith("_"):
            raise ValueError(f"option name {self.name!r} must be a Python identifier (it is cfg.{self.name})")
        if self.name != self.name.lower():
            raise ValueError(f"option name {self.name!r} must be lowercase (it is {flag(self.name)}; such as "
                             f"{self.name.lower()!r})")
        if self.name in COMMAND_FLAGS:
            raise ValueError(f"option name {self.name!r} is taken by the command line's own {flag(self.name)}; "
                             "choose another name")
        if self.default is None and self.type is None:
            raise ValueError(f"option {self.name!r}: a None default needs a type")

    @property
    def annotation(self) -> Any:
        """The field's type: ``type`` (``| None`` for a None default), else the default's."""
        if self.type is not None:
            return self.type | None if self.default is None else self.type
        if isinstance(self.default, list):
            return list[type(self.default[0])] if self.default else list[str]
        return type(self.default)

    def field(self, section: str, **extra: Any) -> dataclasses.Field:
        """The dataclass field of this option in ``section`` (its own section wins)."""
        meta = metadata(self.section or section, self.help, choices=self.choices, min=self.min, max=self.max,
                        gt=self.gt, lt=self.lt, check=self.check, metavar=self.metavar)
        meta.update(extra)
        if isinstance(self.default, (list, dict, set)):
            default = self.default
            return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
        return dataclasses.field(default=self.default, metadata=meta)


Check = Callable[[Any], "str | None"]
"""``check(cfg)``: what is wrong with the rest of the configuration for this entry (None: nothing), or
raise :class:`gsimclr.errors.UserError`; run while the configuration is validated, before any data."""


@dataclass(frozen=True)
class Declares:
    """What a registry entry declares about itself, known without importing its (heavy) module:

    - ``options``: the options only this entry (and entries declaring the same option) reads;
    - ``commands``: the subcommands that take them (default: the registry's);
    - ``checks``: :data:`Check` functions run when the configuration selects this entry;
    - ``titles``: the words it gives tables and plots (e.g. ``{"loss": "NT-Xent loss"}``).
    """

    options: tuple[Option, ...] = ()
    commands: tuple[str, ...] | None = None
    checks: tuple[Check, ...] = ()
    titles: Mapping[str, str] = field(default_factory=dict)
