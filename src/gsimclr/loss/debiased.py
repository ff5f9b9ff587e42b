"""The debiased contrastive loss (Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020):
``--loss debiased`` with the class prior ``--tau-plus`` (tau+).

Without labels a batch's negatives are drawn from the whole data, so a share tau+ of them are of the
anchor's own class (false negatives). The paper estimates the sum over true negatives from the
negatives and the positives: for an anchor with N negatives u_j and M positives v_i (here its other
V - 1 views, M = V - 1; the official code has M = 1), with s the cosine similarity and t the
temperature,

    Ng = max( (sum_j exp(s(u_j)/t) - N tau+ (1/M) sum_i exp(s(v_i)/t)) / (1 - tau+),  N e^(-1/t) )
    l(a, p) = -log( exp(s(p)/t) / (exp(s(p)/t) + Ng) )            for each positive p

the clamp at N e^(-1/t) being the least the true sum can be (every similarity is at least -1). The
loss is the mean over each anchor's positives, then over the anchors. At tau+ = 0 it is NT-Xent with
two views (the clamp never binds then); with more views NT-Xent keeps the other positives in the
denominator, this loss does not (the paper's estimator with M positives).

``--guidance mask`` removes the candidates that share the anchor's pseudo label from the negatives
(N counts only the negatives kept; tau+ is then the share of false negatives left among them);
``attract`` is not defined (see :mod:`gsimclr.loss`). Under ``torch.distributed`` the negatives are the
global batch's (:mod:`gsimclr.loss.pairs`); the logits are computed in fp32 under mixed precision
(in float64 for float64 embeddings), shifted by each anchor's largest logit before the exponentials,
so a small temperature cannot overflow. :mod:`gsimclr.loss.hard_negative` reweights the negatives.

Example:
    >>> import math, torch
    >>> from gsimclr.loss.ntxent import nt_xent
    >>> views = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(0))
    >>> bool(torch.isclose(debiased_loss(views, 0.5, tau_plus=0.0), nt_xent(views, 0.5)))
    True
    >>> aligned = torch.stack([views[0], views[0]])   # each positive at similarity 1: the clamp binds
    >>> round(float(debiased_loss(aligned, 0.5, tau_plus=0.5)), 4), round(math.log(1 + 14 * math.exp(-4)), 4)
    (0.2283, 0.2283)
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from gsimclr.loss.pairs import Pairs, check_views, contrast_pairs

#: ``mass(logits, scaled, negatives)`` -> (A,): the estimate of sum_j exp(logit_j - shift) over each
#: anchor's negatives, from the logits, their shifted exponentials ``scaled`` and the negatives' mask
NegativeMass = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def negative_sum(logits: torch.Tensor, scaled: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """The plain sum over the negatives (the debiased loss's)."""
    return (scaled * negatives).sum(1)


def working_precision(views: torch.Tensor) -> torch.Tensor:
    """float64 embeddings as they are, any other precision as fp32."""
    return views if views.dtype == torch.float64 else views.float()


def check_debiased(tau_plus: float, guidance: str, pseudo_labels: torch.Tensor | None) -> None:
    if not 0 <= tau_plus < 1:
        raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus}")
    if guidance == "attract" and pseudo_labels is not None:
        raise ValueError("the debiased estimator is not defined with guidance 'attract' (use 'mask' or 'none')")


def debiased_from_pairs(pairs: Pairs, temperature: float, tau_plus: float,
                        mass: NegativeMass = negative_sum) -> torch.Tensor:
    """The loss of :func:`gsimclr.loss.pairs.contrast_pairs`'s pairs (see the module docstring), with the
    negatives' sum estimated by ``mass``."""
    logits, positives, negatives = pairs
    kept = positives | negatives
    # each anchor's exponentials divided by exp(its largest logit): nothing overflows, and the
    # shift cancels out of the loss (it is a constant, so it carries no gradient)
    shift = logits.masked_fill(~kept, float("-inf")).amax(1, keepdim=True).detach()
    shifted = (logits - shift).masked_fill(~kept, float("-inf"))
    scaled = shifted.exp()                                                      # 0 outside kept
    n_neg = negatives.sum(1).to(logits.dtype)
    n_pos = positives.sum(1).to(logits.dtype)
    positive_mean = (scaled * positives).sum(1) / n_pos
    estimate = (mass(logits, scaled, negatives) - n_neg * tau_plus * positive_mean) / (1 - tau_plus)
    floor = n_neg * torch.exp(-1.0 / temperature - shift.squeeze(1))
    ng = torch.maximum(estimate, floor)
    # -log(pos / (pos + Ng)) = log(pos + Ng) - log pos, for each positive (1 elsewhere keeps the log finite)
    denominator = torch.where(positives, scaled + ng[:, None], torch.ones_like(scaled))
    terms = torch.where(positives, torch.log(denominator) - shifted.masked_fill(~positives, 0.0),
                        torch.zeros_like(scaled))
    return (terms.sum(1) / n_pos).mean()


def debiased_loss(views: torch.Tensor, temperature: float = 0.1, tau_plus: float = 0.1,
                  pseudo_labels: torch.Tensor | None = None, gather: bool = True,
                  guidance: str = "mask") -> torch.Tensor:
    """The debiased contrastive loss over ``views`` (V, N, D) with class prior ``tau_plus`` in [0, 1);
    ``pseudo_labels`` with ``guidance="mask"`` drop same-label candidates from the negatives."""
    check_views(views, guidance)
    check_debiased(tau_plus, guidance, pseudo_labels)
    with torch.autocast(views.device.type, enabled=False):  # fp32 logits under mixed precision
        pairs = contrast_pairs(working_precision(views), temperature, pseudo_labels, gather, guidance)
        return debiased_from_pairs(pairs, temperature, tau_plus)


def collapsed_debiased(batch_sizes: Sequence[int], n_views: int) -> float:
    """The mean loss of collapsed embeddings (all equal) over batches of ``batch_sizes``, for any tau+
    (and any hardness beta): every similarity is 1, so Ng = N e^(1/t) with N = V (b - 1) negatives,
    and every term is log(1 + N)."""
    n = sum(batch_sizes)
    return float(sum(b * math.log(1 + n_views * (b - 1)) for b in batch_sizes) / max(n, 1))


class DebiasedLoss(nn.Module):
    """Module form of :func:`debiased_loss`: ``loss(z1, z2)`` or ``loss(z)`` with z (V, N, D)."""

    def __init__(self, temperature: float = 0.1, tau_plus: float = 0.1, gather: bool = True, guidance: str = "mask"):
        super().__init__()
        check_debiased(tau_plus, "none", None)
        self.temperature, self.tau_plus, self.gather, self.guidance = temperature, tau_plus, gather, guidance

    def forward(self, *views: torch.Tensor, pseudo_labels: torch.Tensor | None = None) -> torch.Tensor:
        stacked = views[0] if len(views) == 1 and views[0].ndim == 3 else torch.stack(views)
        return debiased_loss(stacked, self.temperature, self.tau_plus, pseudo_labels, self.gather, self.guidance)

    def chance_loss(self, batch_sizes: Sequence[int], n_views: int) -> float:
        """The mean loss of collapsed embeddings (:func:`collapsed_debiased`)."""
        return collapsed_debiased(batch_sizes, n_views)


def build_debiased(cfg) -> DebiasedLoss:
    """``--loss debiased``: at ``--temperature`` with class prior ``--tau-plus`` and the loss-side ``--guidance``."""
    return DebiasedLoss(cfg.temperature, cfg.tau_plus, guidance=cfg.guidance)
