"""Contrastive losses, one per module, each registered in :data:`LOSSES` with a builder that makes
the criterion once from the config (as lightly's loss modules): ``criterion(views, pseudo_labels)``
with ``views`` of shape (V, N, D) and ``pseudo_labels`` (N,) or None.

Adding a loss: a module with the loss and one registration::

    @LOSSES.register("myloss")
    def _build(cfg):
        return MyLoss(cfg.temperature)

A loss shipped in this package is also declared below by name and module, so that the command line
checks ``--loss`` without importing PyTorch (this package imports none until a loss is used).

Example:
    >>> import torch
    >>> from gsimclr.config import load_config
    >>> criterion = build_criterion(load_config(None, {"temperature": 0.5}))
    >>> float(criterion(torch.ones(2, 4, 8))) > 0
    True
"""

import importlib

from gsimclr.registry import Registry

LOSSES: Registry = Registry("loss")
LOSSES.declare("ntxent", module="gsimclr.loss.ntxent")


def build_criterion(cfg):
    """The configured loss (``cfg.loss``), built once for a training run."""
    return LOSSES.get(cfg.loss)(cfg)


__all__ = ["LOSSES", "NTXentLoss", "build_criterion", "nt_xent"]


def __getattr__(name: str):
    """The loss classes and functions on first use (their modules import PyTorch)."""
    if name in ("NTXentLoss", "nt_xent"):
        return getattr(importlib.import_module("gsimclr.loss.ntxent"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
