"""Hard-negative sampling (Robinson et al., "Contrastive Learning with Hard Negative Samples", ICLR
2021): ``--loss hard-negative`` with hardness ``--beta`` on top of the debiased estimator
(:mod:`gsimclr.loss.debiased`, class prior ``--tau-plus``).

The negatives' sum in the debiased estimator becomes N times an importance-weighted mean, the weights
exp(beta s/t) normalised over the anchor's negatives, so that negatives closer to the anchor count more:

    Ng = max( (N sum_j w_j exp(s(u_j)/t) - N tau+ (1/M) sum_i exp(s(v_i)/t)) / (1 - tau+),  N e^(-1/t) )
    w_j = exp(beta s(u_j)/t) / sum_k exp(beta s(u_k)/t)

(the official code's ``(imp * neg).sum() / imp.mean()``, its weights not detached: the gradient flows
through them as well). At beta = 0 every w_j is 1/N and the loss is the debiased loss; at tau+ = 0 and
beta = 0 it is NT-Xent with two views. ``--guidance mask`` normalises the weights over the negatives
kept (N counts those only); ``attract`` is not defined.

Example:
    >>> import torch
    >>> from gsimclr.loss.debiased import debiased_loss
    >>> views = torch.randn(2, 8, 16)
    >>> bool(torch.isclose(hard_negative_loss(views, 0.5, 0.1, beta=0.0), debiased_loss(views, 0.5, 0.1)))
    True
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from gsimclr.loss.debiased import (NegativeMass, check_debiased, collapsed_debiased, debiased_from_pairs,
                                   working_precision)
from gsimclr.loss.pairs import check_views, contrast_pairs


def importance_weighted_sum(beta: float) -> NegativeMass:
    """The estimate N sum_j w_j exp(s_j/t) over each anchor's negatives, w_j = softmax_j(beta s_j/t)."""

    def mass(logits: torch.Tensor, scaled: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        hardness = (beta * logits).masked_fill(~negatives, float("-inf"))
        top = hardness.amax(1, keepdim=True).detach()
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))   # an anchor with no negatives
        importance = (hardness - top).exp()                                   # 0 outside the negatives
        weights = importance / importance.sum(1, keepdim=True).clamp_min(torch.finfo(logits.dtype).tiny)
        return negatives.sum(1).to(logits.dtype) * (weights * scaled).sum(1)

    return mass


def check_beta(beta: float) -> None:
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")


def hard_negative_loss(views: torch.Tensor, temperature: float = 0.1, tau_plus: float = 0.1, beta: float = 1.0,
                       pseudo_labels: torch.Tensor | None = None, gather: bool = True,
                       guidance: str = "mask") -> torch.Tensor:
    """The hard-negative loss over ``views`` (V, N, D): the debiased loss (``tau_plus``) with the negatives
    weighted by hardness ``beta`` >= 0; ``pseudo_labels`` with ``guidance="mask"`` as there."""
    check_views(views, guidance)
    check_debiased(tau_plus, guidance, pseudo_labels)
    check_beta(beta)
    with torch.autocast(views.device.type, enabled=False):  # fp32 logits under mixed precision
        pairs = contrast_pairs(working_precision(views), temperature, pseudo_labels, gather, guidance)
        return debiased_from_pairs(pairs, temperature, tau_plus, importance_weighted_sum(beta))


class HardNegativeLoss(nn.Module):
    """Module form of :func:`hard_negative_loss`: ``loss(z1, z2)`` or ``loss(z)`` with z (V, N, D)."""

    def __init__(self, temperature: float = 0.1, tau_plus: float = 0.1, beta: float = 1.0, gather: bool = True,
                 guidance: str = "mask"):
        super().__init__()
        check_debiased(tau_plus, "none", None)
        check_beta(beta)
        self.temperature, self.tau_plus, self.beta = temperature, tau_plus, beta
        self.gather, self.guidance = gather, guidance

    def forward(self, *views: torch.Tensor, pseudo_labels: torch.Tensor | None = None) -> torch.Tensor:
        stacked = views[0] if len(views) == 1 and views[0].ndim == 3 else torch.stack(views)
        return hard_negative_loss(stacked, self.temperature, self.tau_plus, self.beta, pseudo_labels, self.gather,
                                  self.guidance)

    def chance_loss(self, batch_sizes: Sequence[int], n_views: int) -> float:
        """The mean loss of collapsed embeddings: uniform weights, so the debiased loss's
        (:func:`gsimclr.loss.debiased.collapsed_debiased`)."""
        return collapsed_debiased(batch_sizes, n_views)


def build_hard_negative(cfg) -> HardNegativeLoss:
    """``--loss hard-negative``: at ``--temperature``, class prior ``--tau-plus``, hardness ``--beta`` and the
    loss-side ``--guidance``."""
    return HardNegativeLoss(cfg.temperature, cfg.tau_plus, cfg.beta, guidance=cfg.guidance)
