"""NT-Xent, the normalised temperature-scaled cross-entropy loss of SimCLR.

For an anchor embedding ``z_a`` and one of its positives ``z_p`` (another view of the same image)

    l(a, p) = -log( exp(sim(a, p) / t) / sum_{k != a} exp(sim(a, k) / t) )

with cosine similarity ``sim``; the loss is the mean over all anchors and their positives. With two
views this is SimCLR's loss; with V views every anchor has V - 1 positives.

Guidance by false-negative masking (optional, not in the G-SimCLR paper): with ``pseudo_labels``,
candidates that share the anchor's pseudo label but are other images are dropped from the
denominator.

Negatives from other processes: under ``torch.distributed`` with more than one process the
embeddings of every rank are gathered with a gather that carries gradients back to their rank, so
every anchor sees the global batch as negatives, and the loss equals the single-process loss on
the global batch.

Example:
    >>> import torch
    >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    >>> loss = NTXentLoss(temperature=0.5)
    >>> float(loss(z1, z2)) > 0
    True
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _gather(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' rows of ``x`` (concatenated in rank order) and this rank's index; gradients flow
    back to the rank that produced each row."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0), dist.get_rank()


def nt_xent(views: torch.Tensor, temperature: float = 0.1, pseudo_labels: torch.Tensor | None = None,
            gather: bool = True) -> torch.Tensor:
    """NT-Xent over ``views`` of shape (V, N, D): V views of N images (V >= 2).

    ``pseudo_labels`` (N,) enables false-negative masking. ``gather`` adds the other processes'
    embeddings as negatives when torch.distributed is initialised.
    """
    if views.ndim != 3 or views.shape[0] < 2:
        raise ValueError(f"expected views of shape (V>=2, N, D), got {tuple(views.shape)}")
    n_views, n, _ = views.shape
    z = F.normalize(views.float(), dim=-1)
    # Columns are ordered (rank, view, image); image ids are global: rank * n + image.
    local_ids = torch.arange(n, device=z.device).repeat(n_views)                      # (V*n,)
    anchors = z.reshape(n_views * n, -1)
    if gather:
        candidates, rank = _gather(z)                                                  # (R*V, n, D)
    else:
        candidates, rank = z, 0
    n_ranks = candidates.shape[0] // n_views
    candidates = candidates.reshape(-1, z.shape[-1])
    cand_ids = (torch.arange(n_ranks, device=z.device)[:, None] * n + local_ids.view(1, -1)).reshape(-1)
    anchor_ids = local_ids + rank * n
    self_cols = torch.arange(n_views * n, device=z.device) + rank * n_views * n

    logits = anchors @ candidates.T / temperature                                      # (V*n, R*V*n)
    same_image = anchor_ids[:, None] == cand_ids[None, :]
    is_self = torch.zeros_like(same_image)
    is_self[torch.arange(n_views * n, device=z.device), self_cols] = True
    excluded = is_self
    if pseudo_labels is not None:
        labels = pseudo_labels.to(z.device).repeat(n_views)
        all_labels = _gather(pseudo_labels.to(z.device))[0] if gather else pseudo_labels.to(z.device)
        cand_labels = all_labels.view(n_ranks, 1, n).expand(n_ranks, n_views, n).reshape(-1)
        excluded = excluded | ((labels[:, None] == cand_labels[None, :]) & ~same_image)
    log_denominator = torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1, keepdim=True)
    positives = same_image & ~is_self
    log_prob = logits - log_denominator
    return -(log_prob * positives).sum() / positives.sum()


class NTXentLoss(nn.Module):
    """Module form of :func:`nt_xent`; call it with the views as separate tensors, ``loss(z1, z2)``."""

    def __init__(self, temperature: float = 0.1, gather: bool = True):
        super().__init__()
        self.temperature = temperature
        self.gather = gather

    def forward(self, *views: torch.Tensor, pseudo_labels: torch.Tensor | None = None) -> torch.Tensor:
        return nt_xent(torch.stack(views), self.temperature, pseudo_labels, self.gather)
