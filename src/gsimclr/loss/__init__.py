"""Contrastive losses, one per module, each registered in :data:`LOSSES` with a builder that makes
the criterion once from the config (as lightly's loss modules): ``criterion(views, pseudo_labels)``
with ``views`` of shape (V, N, D) and ``pseudo_labels`` (N,) or None.

Adding a loss: a module with the loss and one registration, which declares what the loss owns
(:class:`gsimclr.options.Declares`): its options (``cfg.my_weight``; options of ``run`` and
``pretrain``, refused for a run with another ``--loss``), its checks against the rest of the
configuration and the title of the loss curves::

    @LOSSES.register("myloss", declares=Declares(
        options=(Option("my_weight", 1.0, "weight of my term", min=0),),
        checks=(lambda cfg: "--guidance attract: my loss cannot attract" if cfg.guidance == "attract" else None,),
        titles={"loss": "My loss"}))
    def _build(cfg):
        return MyLoss(cfg.temperature, cfg.my_weight)

A loss shipped in this package is declared below by name and module instead (with what it declares),
so that the command line checks ``--loss`` and its options without importing PyTorch (this package
imports none until a loss is used).

Example:
    >>> import torch
    >>> from gsimclr.config import load_config
    >>> criterion = build_criterion(load_config(None, {"temperature": 0.5}))
    >>> float(criterion(torch.ones(2, 4, 8))) > 0
    True
"""

import importlib

from gsimclr.options import Declares, Option  # noqa: F401 (what a registration declares)
from gsimclr.registry import Registry

LOSSES: Registry = Registry("loss", option="loss", section="pretrain")
LOSSES.declare("ntxent", module="gsimclr.loss.ntxent", declares=Declares(titles={"loss": "NT-Xent loss"}))


def build_criterion(cfg):
    """The configured loss (``cfg.loss``), built once for a training run."""
    return LOSSES.get(cfg.loss)(cfg)


def loss_title(name: str) -> str:
    """The loss curves' axis label of loss ``name`` (its declared ``titles["loss"]``)."""
    return LOSSES.title(name, "loss")


__all__ = ["LOSSES", "NTXentLoss", "build_criterion", "loss_title", "nt_xent"]


def __getattr__(name: str):
    """The loss classes and functions on first use (their modules import PyTorch)."""
    if name in ("NTXentLoss", "nt_xent"):
        return getattr(importlib.import_module("gsimclr.loss.ntxent"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
