"""Contrastive losses, one per module, each registered in :data:`LOSSES` by a light :class:`Loss`
record (no PyTorch import: the command line checks ``--loss`` and its options before any work) that
names the function making the criterion once from the config (as lightly's loss modules):
``criterion(views, pseudo_labels=...)`` with ``views`` of shape (V, N, D) and ``pseudo_labels`` (N,)
or None. A criterion may also give ``chance_loss(batch_sizes, n_views)``, its mean loss when the
embeddings have collapsed (the trainer's collapse warning; without it, no check).

Adding a loss: a module with the loss, and one registration::

    LOSSES.register("myloss", Loss("My loss", build="mypackage.myloss:build"))   # build(cfg) -> criterion

(a bare builder, ``LOSSES.register("myloss", build)``, is read as ``Loss("myloss loss", build=build)``).

Example:
    >>> LOSSES.names(), LOSSES["debiased"].title
    (['ntxent', 'debiased', 'hard-negative'], 'debiased contrastive loss')
    >>> import torch
    >>> from gsimclr.config import load_config
    >>> criterion = build_criterion(load_config(None, {"temperature": 0.5}))
    >>> float(criterion(torch.ones(2, 4, 8))) > 0
    True
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from gsimclr.config import flag
from gsimclr.errors import UserError
from gsimclr.registry import Registry


@dataclass(frozen=True)
class Loss:
    """What the command line, the option checks and the plots know of a loss without importing it."""

    title: str                                    # the loss curves' axis label
    build: str | Callable[[Any], Any]             # "module:function" (or the function): cfg -> criterion
    description: str = ""
    options: tuple[str, ...] = ()                 # config fields only this loss reads
    guidance: tuple[str, ...] = ("none", "mask", "attract")  # the --guidance values it trains with
    guidance_why: str = ""                        # why not the others (the refusal's reason)


LOSSES: Registry = Registry("loss")
LOSSES.register("ntxent", Loss("NT-Xent loss", "gsimclr.loss.ntxent:build_ntxent",
                               "NT-Xent (SimCLR's normalised temperature-scaled cross-entropy)"))
# the label-free false-negative corrections; their options (tau_plus, beta) are the config's "loss" section
_NO_ATTRACT = ("its estimator subtracts the expected same-class share of the negatives (--tau-plus), which "
               "attraction would count a second time as positives; use --guidance mask or none")
LOSSES.register("debiased", Loss(
    "debiased contrastive loss", "gsimclr.loss.debiased:build_debiased",
    "debiased contrastive loss (Chuang et al. 2020): the negatives' sum corrected by the class prior --tau-plus",
    options=("tau_plus",), guidance=("none", "mask"), guidance_why=_NO_ATTRACT))
LOSSES.register("hard-negative", Loss(
    "hard-negative contrastive loss", "gsimclr.loss.hard_negative:build_hard_negative",
    "hard-negative sampling (Robinson et al. 2021): the debiased estimator over negatives weighted by "
    "exp(--beta x similarity / t)", options=("tau_plus", "beta"), guidance=("none", "mask"), guidance_why=_NO_ATTRACT))


def loss_entry(name: str) -> Loss:
    """The :class:`Loss` registered as ``name`` (a bare builder is read as one titled "NAME loss")."""
    entry = LOSSES.get(name)
    return entry if isinstance(entry, Loss) else Loss(f"{name} loss", entry)


def build_criterion(cfg):
    """The configured loss (``cfg.loss``), built once for a training run."""
    build = loss_entry(cfg.loss).build
    if isinstance(build, str):
        module, _, attr = build.partition(":")
        build = getattr(importlib.import_module(module), attr)
    return build(cfg)


def check_loss_options(cfg, given: Iterable[str] = (), guided: bool = True) -> None:
    """The options ``--loss`` cannot train with, as a one-line UserError (no data, no PyTorch: the command
    line runs it before any work): an option of other losses among the ``given`` config fields (one only
    they read would be ignored), and, when a ``guided`` method trains, a ``--guidance`` it does not take."""
    entry = loss_entry(cfg.loss)
    entries = {name: loss_entry(name) for name in LOSSES.names()}
    for name in given:
        readers = [n for n, e in entries.items() if name in e.options]
        if readers and cfg.loss not in readers:
            raise UserError(f"{flag(name)} only affects --loss {' / '.join(readers)}, not --loss {cfg.loss}; "
                            f"drop it or choose --loss {readers[0]}")
    if guided and cfg.guidance not in entry.guidance:
        raise UserError(f"--guidance {cfg.guidance} with --loss {cfg.loss}: {entry.guidance_why or 'not supported'}")


__all__ = ["LOSSES", "Loss", "NTXentLoss", "DebiasedLoss", "HardNegativeLoss", "build_criterion", "check_loss_options",
           "debiased_loss", "hard_negative_loss", "loss_entry", "nt_xent"]
_HEAVY = {"NTXentLoss": "ntxent", "nt_xent": "ntxent", "DebiasedLoss": "debiased", "debiased_loss": "debiased",
          "HardNegativeLoss": "hard_negative", "hard_negative_loss": "hard_negative"}


def __getattr__(name: str):
    """The loss classes and functions on first use (their modules import PyTorch)."""
    if name in _HEAVY:
        return getattr(importlib.import_module(f"gsimclr.loss.{_HEAVY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
