"""The pairs of a contrastive batch, shared by the losses over views: every anchor (each view of each of
this process's images) against every candidate (each view of each image of the global batch), as
scaled similarities ``logits = cos(anchor, candidate) / t`` and two masks:

- ``positives``: the anchor's other views (V - 1 of them), and under ``guidance="attract"`` the
  candidates that share its pseudo label;
- ``negatives``: every other candidate, except the anchor itself and, under ``guidance="mask"``,
  the candidates that share its pseudo label (``none`` ignores the labels).

Candidates from other processes: under ``torch.distributed`` with R > 1 processes, each holding an
equal share of the global batch, the embeddings and pseudo labels of every rank are gathered with
:func:`gsimclr.distributed.gather` (``gather=True``), so every anchor sees the whole global batch.
Columns are ordered (rank, view, image), rows (view, image).

Example:
    >>> import torch
    >>> pairs = contrast_pairs(torch.randn(2, 3, 4), 0.5, torch.tensor([0, 0, 1]), guidance="mask")
    >>> pairs.logits.shape, pairs.positives.sum(1).tolist(), pairs.negatives.sum(1).tolist()
    (torch.Size([6, 6]), [1, 1, 1, 1, 1, 1], [2, 2, 4, 2, 2, 4])
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from gsimclr import distributed
from gsimclr.guidance.loss_guidance import GUIDANCE


class Pairs(NamedTuple):
    logits: torch.Tensor     # (V*n, R*V*n): cosine similarity / temperature
    positives: torch.Tensor  # (V*n, R*V*n) bool
    negatives: torch.Tensor  # (V*n, R*V*n) bool; never overlaps positives, never the anchor itself


def check_views(views: torch.Tensor, guidance: str) -> None:
    """ValueError unless ``views`` is (V >= 2, N, D) and ``guidance`` a registered guidance."""
    if views.ndim != 3 or views.shape[0] < 2:
        raise ValueError(f"expected views of shape (V>=2, N, D), got {tuple(views.shape)}")
    if guidance not in GUIDANCE:
        raise ValueError(f"guidance must be one of {', '.join(GUIDANCE)}, got {guidance!r}")


def contrast_pairs(views: torch.Tensor, temperature: float, pseudo_labels: torch.Tensor | None = None,
                   gather: bool = True, guidance: str = "mask") -> Pairs:
    """The logits and masks of ``views`` (V, n, D), in the dtype of ``views`` (see the module docstring)."""
    n_views, n, _ = views.shape
    z = F.normalize(views, dim=-1)
    local_ids = torch.arange(n, device=z.device).repeat(n_views)                      # (V*n,)
    anchors = z.reshape(n_views * n, -1)
    candidates, rank = distributed.gather(z) if gather else (z, 0)                     # (R*V, n, D)
    n_ranks = candidates.shape[0] // n_views
    candidates = candidates.reshape(-1, z.shape[-1])
    # image ids are global: rank * n + image
    cand_ids = (torch.arange(n_ranks, device=z.device)[:, None] * n + local_ids.view(1, -1)).reshape(-1)
    anchor_ids = local_ids + rank * n
    self_cols = torch.arange(n_views * n, device=z.device) + rank * n_views * n

    logits = anchors @ candidates.T / temperature                                      # (V*n, R*V*n)
    same_image = anchor_ids[:, None] == cand_ids[None, :]
    is_self = torch.zeros_like(same_image)
    is_self[torch.arange(n_views * n, device=z.device), self_cols] = True
    positives = same_image & ~is_self
    negatives = ~same_image
    if pseudo_labels is not None and guidance != "none":
        local = pseudo_labels.to(z.device)
        labels = local.repeat(n_views)
        all_labels = distributed.gather(local)[0] if gather else local
        cand_labels = all_labels.view(n_ranks, 1, n).expand(n_ranks, n_views, n).reshape(-1)
        same_label = (labels[:, None] == cand_labels[None, :]) & ~same_image
        negatives = negatives & ~same_label
        if guidance == "attract":
            positives = positives | same_label
    return Pairs(logits, positives, negatives)
