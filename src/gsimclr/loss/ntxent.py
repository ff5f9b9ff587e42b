"""NT-Xent, the normalised temperature-scaled cross-entropy loss of SimCLR.

For an anchor embedding ``z_a`` and one of its positives ``z_p`` (another view of the same image)

    l(a, p) = -log( exp(sim(a, p) / t) / sum_{k != a} exp(sim(a, k) / t) )

with cosine similarity ``sim``; the loss is the mean over all anchors and their positives. With two
views this is SimCLR's loss; with V views every anchor has V - 1 positives.

Loss-side guidance (not in the G-SimCLR paper; :mod:`gsimclr.guidance.loss_guidance`): with
``pseudo_labels``, candidates that share the anchor's pseudo label but are other images are either
dropped from the denominator (``guidance="mask"``, false-negative elimination) or counted as extra
positives (``guidance="attract"``, FNC's attraction, Huynh et al. 2022): the anchor's loss is then
the mean of -log p over all its positives, as in SupCon's L_out, with every other candidate in the
denominator. In every case the loss is the mean over anchors of the mean over each anchor's positives
(with V views and no attraction every anchor has V - 1 positives, so this is the plain mean).

Precision: the logits are computed in fp32 even under bf16 autocast (the embeddings are small; in
bf16 the loss's gradient has relative errors of a few percent at temperature 0.1).

Negatives from other processes: under ``torch.distributed`` with R > 1 processes, each holding an
equal share of the global batch, the embeddings (and pseudo labels) of every rank are gathered, so
every anchor sees the whole global batch as candidates. Each rank returns the mean over its own
anchors, so the mean of the R losses is the single-process loss on the global batch. The gather's
backward sums the gradients that every rank's loss sends to each row, so the gradient of a rank's
embeddings is R times the single-process gradient of those rows, and after DDP averages the
parameter gradients over the R processes they equal those of one process holding the global batch
(tests/test_distributed.py checks both, with and without pseudo labels).

Example:
    >>> import torch
    >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    >>> loss = NTXentLoss(temperature=0.5)
    >>> float(loss(z1, z2)) > 0
    True
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from gsimclr.loss.pairs import Pairs, check_views, contrast_pairs


def nt_xent(views: torch.Tensor, temperature: float = 0.1, pseudo_labels: torch.Tensor | None = None,
            gather: bool = True, guidance: str = "mask") -> torch.Tensor:
    """NT-Xent over ``views`` of shape (V, N, D): V views of N images (V >= 2).

    ``pseudo_labels`` (N,) with ``guidance`` ``mask`` or ``attract`` removes same-label candidates
    from the negatives (``none`` ignores the labels). ``gather`` adds the other processes'
    embeddings as candidates when torch.distributed is initialised.
    """
    check_views(views, guidance)
    with torch.autocast(views.device.type, enabled=False):  # fp32 logits under mixed precision
        pairs = contrast_pairs(views.float(), temperature, pseudo_labels, gather, guidance)
        return ntxent_from_pairs(pairs)


def ntxent_from_pairs(pairs: Pairs) -> torch.Tensor:
    """The loss of :func:`gsimclr.loss.pairs.contrast_pairs`'s pairs: every anchor's positives against
    the denominator of its positives and negatives, the mean over its positives, then over anchors."""
    logits, positives = pairs.logits, pairs.positives
    log_denominator = torch.logsumexp(logits.masked_fill(~(positives | pairs.negatives), float("-inf")), dim=1,
                                      keepdim=True)
    log_prob = logits - log_denominator
    per_anchor = (log_prob * positives).sum(1) / positives.sum(1)
    return -per_anchor.mean()


def collapsed_ntxent(batch_sizes: Sequence[int], n_views: int) -> float:
    """The mean NT-Xent of collapsed embeddings (all equal) over batches of ``batch_sizes``: every
    anchor's V - 1 positives among V b - 1 equal candidates, log(V b - 1)."""
    n = sum(batch_sizes)
    return float(sum(b * math.log(max(n_views * b - 1, 1)) for b in batch_sizes) / max(n, 1))


class NTXentLoss(nn.Module):
    """Module form of :func:`nt_xent`; call it with the views as separate tensors, ``loss(z1, z2)``."""

    def __init__(self, temperature: float = 0.1, gather: bool = True, guidance: str = "mask"):
        super().__init__()
        self.temperature = temperature
        self.gather = gather
        self.guidance = guidance

    def forward(self, *views: torch.Tensor, pseudo_labels: torch.Tensor | None = None) -> torch.Tensor:
        """``loss(z1, z2, ...)`` with one (N, D) tensor per view, or ``loss(z)`` with z of shape (V, N, D)."""
        stacked = views[0] if len(views) == 1 and views[0].ndim == 3 else torch.stack(views)
        return nt_xent(stacked, self.temperature, pseudo_labels, self.gather, self.guidance)

    def chance_loss(self, batch_sizes: Sequence[int], n_views: int) -> float:
        """The mean loss of collapsed embeddings over batches of ``batch_sizes`` (:func:`collapsed_ntxent`)."""
        return collapsed_ntxent(batch_sizes, n_views)


def build_ntxent(cfg) -> NTXentLoss:
    """``--loss ntxent``: NT-Xent at ``--temperature`` with the loss-side ``--guidance``."""
    return NTXentLoss(cfg.temperature, guidance=cfg.guidance)
