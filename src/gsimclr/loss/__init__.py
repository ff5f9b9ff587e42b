"""Contrastive losses, one per module, each registered in :data:`LOSSES` by a light :class:`Loss`
record (no PyTorch import: the command line checks ``--loss`` and its options before any work) that
names the function making the criterion once from the config (as lightly's loss modules):
``criterion(views, pseudo_labels=...)`` with ``views`` of shape (V, N, D) and ``pseudo_labels`` (N,)
or None. A criterion may also give ``chance_loss(batch_sizes, n_views)``, its mean loss when the
embeddings have collapsed (the trainer's collapse warning; without it, no check).

The record is everything the rest of gsimclr knows of a loss: its title (the loss curves' axis
label), its builder, its options (:class:`gsimclr.options.Option`: ``cfg.my_weight``, ``--my-weight``
on ``run`` and ``pretrain``, refused for a run with another ``--loss``), the ``--guidance`` values it
trains with and any further checks against the rest of the configuration; registering it declares
them (:attr:`Loss.declares`, read by :meth:`gsimclr.registry.Registry.register`).

Adding a loss, in this package or in a plug-in (:mod:`gsimclr.plugins`): a module with the loss, and
one registration::

    LOSSES.register("myloss", Loss("my loss", build="mypackage.myloss:build",   # build(cfg) -> criterion
                                   options=(Option("my_weight", 1.0, "myloss: weight of my term", min=0),),
                                   guidance=("none", "mask"), guidance_why="my term has no positives to add"))

(``build`` may be the function itself where the registering module imports PyTorch anyway, as a
plug-in's does; a bare builder, ``LOSSES.register("myloss", build)``, is read as
``Loss("myloss loss", build=build)``.) The debiased and hard-negative losses below are registered so.

Example:
    >>> LOSSES.names()[:3], LOSSES["debiased"].title, [o.name for o in LOSSES["hard-negative"].options]
    (['ntxent', 'debiased', 'hard-negative'], 'debiased contrastive loss', ['tau_plus', 'beta'])
    >>> import torch
    >>> from gsimclr.config import load_config
    >>> criterion = build_criterion(load_config(None, {"temperature": 0.5}))
    >>> float(criterion(torch.ones(2, 4, 8))) > 0
    True
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from gsimclr.options import Check, Declares, Option
from gsimclr.registry import Registry


@dataclass(frozen=True)
class Loss:
    """What the command line, the option checks and the plots know of a loss without importing it."""

    title: str                                    # the loss curves' axis label
    build: str | Callable[[Any], Any]             # "module:function" (or the function): cfg -> criterion
    description: str = ""
    options: tuple[Option, ...] = ()              # the options only this loss (and losses declaring the same) reads
    guidance: tuple[str, ...] | None = None       # the --guidance values it trains with (None: every one)
    guidance_why: str = ""                        # why not the others (the refusal's reason)
    checks: tuple[Check, ...] = ()                # further checks of the configuration (gsimclr.options.Check)

    @property
    def declares(self) -> Declares:
        """What registering this loss declares: its options, its checks (the ``--guidance`` values first)
        and its title."""
        return Declares(options=self.options, checks=(self._check_guidance, *self.checks),
                        titles={"loss": self.title})

    def _check_guidance(self, cfg: Any) -> str | None:
        if self.guidance is None or cfg.guidance in self.guidance:
            return None
        return f"--guidance {cfg.guidance} with --loss {cfg.loss}: {self.guidance_why or 'not supported'}"


LOSSES: Registry = Registry("loss", option="loss", section="loss")
LOSSES.register("ntxent", Loss("NT-Xent loss", "gsimclr.loss.ntxent:build_ntxent",
                               "NT-Xent (SimCLR's normalised temperature-scaled cross-entropy)"))

# the label-free false-negative corrections (gsimclr.loss.debiased, gsimclr.loss.hard_negative)
_TAU_PLUS = Option("tau_plus", 0.1, "debiased and hard-negative losses: class prior tau+, the expected share of the "
                   "anchor's own class among its negatives (0: no correction; the official code: 0.1)", min=0, lt=1)
_NO_ATTRACT = ("its estimator subtracts the expected same-class share of the negatives (--tau-plus), which "
               "attraction would count a second time as positives; use --guidance mask or none")
LOSSES.register("debiased", Loss(
    "debiased contrastive loss", "gsimclr.loss.debiased:build_debiased",
    "debiased contrastive loss (Chuang et al. 2020): the negatives' sum corrected by the class prior --tau-plus",
    options=(_TAU_PLUS,), guidance=("none", "mask"), guidance_why=_NO_ATTRACT))
LOSSES.register("hard-negative", Loss(
    "hard-negative contrastive loss", "gsimclr.loss.hard_negative:build_hard_negative",
    "hard-negative sampling (Robinson et al. 2021): the debiased estimator over negatives weighted by "
    "exp(--beta x similarity / t)",
    options=(_TAU_PLUS, Option("beta", 1.0, "hard-negative loss: hardness beta, negatives weighted by exp(beta x "
                               "similarity / temperature) (0: the debiased loss; the official code: 1.0)", min=0)),
    guidance=("none", "mask"), guidance_why=_NO_ATTRACT))


def loss_entry(name: str) -> Loss:
    """The :class:`Loss` registered as ``name`` (a bare builder is read as one titled by its declared
    ``titles["loss"]``, else "NAME loss")."""
    entry = LOSSES.get(name)
    if isinstance(entry, Loss):
        return entry
    declares = LOSSES.declarations.get(name, Declares())
    return Loss(declares.titles.get("loss", f"{name} loss"), entry, options=declares.options)


def loss_title(name: str) -> str:
    """The loss curves' axis label of loss ``name`` (its entry's title; "NAME loss" for one not registered,
    e.g. a plug-in's in an older run)."""
    return loss_entry(name).title if name in LOSSES else f"{name} loss"


def build_criterion(cfg):
    """The configured loss (``cfg.loss``), built once for a training run."""
    build = loss_entry(cfg.loss).build
    if isinstance(build, str):
        module, _, attr = build.partition(":")
        build = getattr(importlib.import_module(module), attr)
    criterion = build(cfg)
    if not callable(criterion):   # a plug-in's builder that forgot its return
        from gsimclr.errors import UserError

        raise UserError(f"--loss {cfg.loss}: its build function returned {type(criterion).__name__}, not a criterion "
                        "(a callable such as a torch.nn.Module)")
    return criterion


def check_loss(cfg) -> None:
    """The checks the ``--loss`` entry declares (its ``--guidance`` values, ...) on ``cfg``, as a one-line
    UserError; :meth:`gsimclr.config.Config.validate` runs them before any data is read."""
    from gsimclr.config import run_checks

    run_checks(LOSSES.checks(cfg.loss), cfg)


__all__ = ["LOSSES", "Loss", "NTXentLoss", "DebiasedLoss", "HardNegativeLoss", "build_criterion", "check_loss",
           "debiased_loss", "hard_negative_loss", "loss_entry", "loss_title", "nt_xent"]
_HEAVY = {"NTXentLoss": "ntxent", "nt_xent": "ntxent", "DebiasedLoss": "debiased", "debiased_loss": "debiased",
          "HardNegativeLoss": "hard_negative", "hard_negative_loss": "hard_negative"}


def __getattr__(name: str):
    """The loss classes and functions on first use (their modules import PyTorch)."""
    if name in _HEAVY:
        return getattr(importlib.import_module(f"gsimclr.loss.{_HEAVY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
