"""Contrastive losses, one per module, each registered in :data:`LOSSES` with a builder that makes
the criterion once from the config (as lightly's loss modules): ``criterion(views, pseudo_labels)``
with ``views`` of shape (V, N, D) and ``pseudo_labels`` (N,) or None.

Adding a loss: a module with the loss and one registration::

    @LOSSES.register("myloss")
    def _build(cfg):
        return MyLoss(cfg.temperature)

Example:
    >>> import torch
    >>> from gsimclr.config import load_config
    >>> criterion = build_criterion(load_config(None, {"temperature": 0.5}))
    >>> float(criterion(torch.ones(2, 4, 8))) > 0
    True
"""

from gsimclr.loss.ntxent import NTXentLoss, nt_xent
from gsimclr.registry import Registry

LOSSES: Registry = Registry("loss")
LOSSES.register("ntxent", lambda cfg: NTXentLoss(cfg.temperature, guidance=cfg.guidance))


def build_criterion(cfg):
    """The configured loss (``cfg.loss``), built once for a training run."""
    return LOSSES.get(cfg.loss)(cfg)


__all__ = ["LOSSES", "NTXentLoss", "build_criterion", "nt_xent"]
