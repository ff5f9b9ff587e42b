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

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from gsimclr.guidance.loss_guidance import GUIDANCE
from gsimclr.loss import LOSSES


class _AllGather(torch.autograd.Function):
    """All ranks' ``x`` concatenated along dim 0 in rank order; backward sums the gradient of the
    whole gathered tensor over the ranks and returns this rank's rows. (An all-reduce rather than
    torch.distributed.nn's deprecated all_gather, whose backward needs a reduce-scatter or
    scatters on gloo: the embeddings are small and an all-reduce works on every backend.)"""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.size = dist.get_rank(), dist.get_world_size()
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(ctx.size)]
        dist.all_gather(parts, x)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad.chunk(ctx.size, dim=0)[ctx.rank]


@torch.compiler.disable  # a graph break: the collectives run eagerly inside a compiled loss
def _gather(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' rows of ``x`` (concatenated in rank order) and this rank's index; gradients flow
    back to the rank that produced each row (integer tensors are gathered without autograd)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    if not x.is_floating_point():
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0), dist.get_rank()
    return _AllGather.apply(x), dist.get_rank()


def nt_xent(views: torch.Tensor, temperature: float = 0.1, pseudo_labels: torch.Tensor | None = None,
            gather: bool = True, guidance: str = "mask") -> torch.Tensor:
    """NT-Xent over ``views`` of shape (V, N, D): V views of N images (V >= 2).

    ``pseudo_labels`` (N,) with ``guidance`` ``mask`` or ``attract`` removes same-label candidates
    from the negatives (``none`` ignores the labels). ``gather`` adds the other processes'
    embeddings as candidates when torch.distributed is initialised.
    """
    if views.ndim != 3 or views.shape[0] < 2:
        raise ValueError(f"expected views of shape (V>=2, N, D), got {tuple(views.shape)}")
    if guidance not in GUIDANCE:
        raise ValueError(f"guidance must be one of {', '.join(GUIDANCE)}, got {guidance!r}")
    with torch.autocast(views.device.type, enabled=False):  # fp32 logits under mixed precision
        return _nt_xent(views.float(), temperature, pseudo_labels if guidance != "none" else None, gather, guidance)


def _nt_xent(views: torch.Tensor, temperature: float, pseudo_labels: torch.Tensor | None, gather: bool,
             guidance: str) -> torch.Tensor:
    n_views, n, _ = views.shape
    z = F.normalize(views, dim=-1)
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
    positives = same_image & ~is_self
    if pseudo_labels is not None:
        labels = pseudo_labels.to(z.device).repeat(n_views)
        all_labels = _gather(pseudo_labels.to(z.device))[0] if gather else pseudo_labels.to(z.device)
        cand_labels = all_labels.view(n_ranks, 1, n).expand(n_ranks, n_views, n).reshape(-1)
        same_label = (labels[:, None] == cand_labels[None, :]) & ~same_image
        if guidance == "mask":
            excluded = excluded | same_label
        else:  # attract
            positives = positives | same_label
    log_denominator = torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1, keepdim=True)
    log_prob = logits - log_denominator
    per_anchor = (log_prob * positives).sum(1) / positives.sum(1)
    return -per_anchor.mean()


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


@LOSSES.register("ntxent")
def build_ntxent(cfg) -> NTXentLoss:
    """``--loss ntxent``: NT-Xent at ``--temperature`` with the loss-side ``--guidance``."""
    return NTXentLoss(cfg.temperature, guidance=cfg.guidance)
