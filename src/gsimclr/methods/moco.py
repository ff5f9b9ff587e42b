"""MoCo v2 (He et al. 2020; Chen et al. 2020): a query encoder trained by gradient, a key encoder that
follows it as an exponential moving average (``--moco-momentum``), and a queue of the keys of earlier
batches (``--queue-size``) as the negatives of an InfoNCE loss at ``--temperature``:

    l(q) = -log( exp(q.k+ / t) / (exp(q.k+ / t) + sum_{j in queue} exp(q.k_j / t)) )

with the query ``q`` of one view, the key ``k+`` of the other view of the same image (no gradient),
all L2-normalised. After each step the batch's keys are enqueued, replacing the oldest; under
torch.distributed the keys of every rank are gathered first, so every rank holds the same queue.

Guidance reaches the queue (``gmoco``): the queue keeps each key's image index and pseudo label
(refreshed when re-clustering changes the labels), and ``--guidance mask`` drops the queue entries
that share the query's pseudo label from the denominator, ``attract`` counts them as extra positives
(the anchor's loss is then the mean of -log p over its positives, as in NT-Xent's attraction). With
10 classes a tenth of the queue shares the query's class: this is where false negatives are most
numerous, and the diagnostics count the same-class (query, queue key) pairs of every step.

The queue starts empty (entries without a key are left out of the loss), and the whole of it (keys,
labels, image indices, pointer) and the key encoder are buffers of the model, so a checkpoint holds
them and a resumed run continues bit for bit.

Example:
    >>> import torch
    >>> queue = KeyQueue(size=4, dim=2)
    >>> queue.push(torch.eye(2)[[0, 1, 0]], torch.tensor([5, 6, 5]), torch.tensor([10, 11, 12]))
    >>> queue.index.tolist(), int(queue.ptr)
    ([10, 11, 12, -1], 3)
    >>> queue.push(torch.eye(2)[[1, 1]], None, torch.tensor([13, 14]))
    >>> queue.index.tolist(), queue.labels.tolist(), int(queue.ptr)   # the oldest key was replaced
    ([14, 11, 12, 13], [-1, 6, 5, -1], 1)
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gsimclr.distributed import gather
from gsimclr.errors import UserError
from gsimclr.guidance.diagnostics import epoch_pair_stats, random_pairs
from gsimclr.guidance.loss_guidance import GUIDANCE
from gsimclr.methods.base import Recipe
from gsimclr.models.heads import ProjectionHead
from gsimclr.models.simclr import SimCLRModel, backbone_options

#: the queue size when --queue-size is not given: MoCo v2's CIFAR size, or less on a smaller data set
DEFAULT_QUEUE = 4096


class KeyQueue(nn.Module):
    """A ring buffer of ``size`` keys with each key's pseudo label and image index (-1: none/empty)."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("index", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def valid(self) -> torch.Tensor:
        """Which entries hold a key (the queue fills during the first steps)."""
        return self.index >= 0

    @torch.no_grad()
    def push(self, keys: torch.Tensor, labels: torch.Tensor | None, index: torch.Tensor) -> None:
        """Enqueue the batch's ``keys`` (N, D) with their pseudo labels (None: -1) and image indices,
        gathered from every rank first; the oldest entries make room (without a host synchronisation)."""
        if labels is None:
            labels = torch.full_like(index, -1)
        keys, labels, index = (gather(t.to(self.keys.device))[0] for t in (keys.to(self.keys.dtype), labels, index))
        size, n = len(self.keys), len(keys)
        positions = (self.ptr + torch.arange(n, device=self.keys.device)) % size
        if n > size:                                   # only the newest `size` keys stay
            positions, keys, labels, index = positions[-size:], keys[-size:], labels[-size:], index[-size:]
        self.keys[positions] = keys
        self.labels[positions] = labels
        self.index[positions] = index
        self.ptr.copy_((self.ptr + n) % size)

    @torch.no_grad()
    def relabel(self, labels: torch.Tensor | None) -> None:
        """Each key's label from new per-image ``labels`` (None: forget them), by its image index."""
        if labels is None:
            self.labels.fill_(-1)
            return
        looked_up = labels.to(self.labels.device)[self.index.clamp_min(0)]
        self.labels.copy_(torch.where(self.valid, looked_up, torch.full_like(looked_up, -1)))


class MoCoModel(SimCLRModel):
    """SimCLR's backbone and head as the query encoder, their moving average as the key encoder, and
    the queue. ``forward`` and ``features`` are the query encoder's (what is evaluated and exported)."""

    def __init__(self, backbone: nn.Module, head: ProjectionHead, queue_size: int, momentum: float):
        super().__init__(backbone, head)
        self.key_backbone = copy.deepcopy(backbone)
        self.key_head = copy.deepcopy(head)
        for p in self._key_parameters():
            p.requires_grad_(False)
        self.momentum = momentum
        self.queue = KeyQueue(queue_size, head.dims[-1])
        # identical on every rank by construction: DDP neither reduces nor broadcasts them each step
        self._ddp_params_and_buffers_to_ignore = [name for name, _ in self.named_parameters()
                                                  if name.startswith("key_")] + \
            [name for name, _ in self.named_buffers() if name.startswith(("key_", "queue."))]

    def _key_parameters(self) -> list[nn.Parameter]:
        return list(self.key_backbone.parameters()) + list(self.key_head.parameters())

    def _query_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters()) + list(self.head.parameters())

    @torch.no_grad()
    def update_key_encoder(self) -> None:
        """k <- m k + (1 - m) q for every parameter (the buffers, BatchNorm's statistics, are the key
        encoder's own)."""
        keys, queries = self._key_parameters(), self._query_parameters()
        torch._foreach_mul_(keys, self.momentum)
        torch._foreach_add_(keys, [q.detach() for q in queries], alpha=1 - self.momentum)

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        return self.key_head(self.key_backbone(x))


class MoCoLoss(nn.Module):
    """InfoNCE of queries against their keys and the queue's negatives (lightly's
    ``NTXentLoss(memory_bank_size=...)``, plus guidance): ``loss(q, k, pseudo_labels, index)``
    returns the loss and enqueues the keys (``update=False``: it does not)."""

    def __init__(self, queue: KeyQueue, temperature: float = 0.2, guidance: str = "none"):
        super().__init__()
        if guidance not in GUIDANCE:
            raise ValueError(f"guidance must be one of {', '.join(GUIDANCE)}, got {guidance!r}")
        self.queue, self.temperature, self.guidance = queue, temperature, guidance

    def forward(self, q: torch.Tensor, k: torch.Tensor, pseudo_labels: torch.Tensor | None = None,
                index: torch.Tensor | None = None, update: bool = True) -> torch.Tensor:
        with torch.autocast(q.device.type, enabled=False):  # fp32 logits under mixed precision
            loss = self._loss(F.normalize(q.float(), dim=1), F.normalize(k.float().detach(), dim=1), pseudo_labels)
        if update:
            if index is None:
                index = torch.arange(len(k), device=k.device)
            self.queue.push(F.normalize(k.detach().float(), dim=1), pseudo_labels, index)
        return loss

    def _loss(self, q: torch.Tensor, k: torch.Tensor, pseudo_labels: torch.Tensor | None) -> torch.Tensor:
        queue = self.queue
        negatives = queue.keys.clone()               # a snapshot: the queue changes in place after the loss
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ negatives.T], dim=1) / self.temperature
        excluded = (~queue.valid).expand(len(q), -1)
        positives = torch.zeros_like(logits, dtype=torch.bool)
        positives[:, 0] = True
        if pseudo_labels is not None and self.guidance != "none":
            same = (pseudo_labels.to(q.device)[:, None] == queue.labels[None, :]) & queue.valid
            if self.guidance == "mask":
                excluded = excluded | same
            else:  # attract
                positives[:, 1:] |= same
        excluded = torch.cat([torch.zeros_like(excluded[:, :1]), excluded], dim=1)
        log_prob = logits - torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1, keepdim=True)
        return -((log_prob * positives).sum(1) / positives.sum(1)).mean()


def queue_size(cfg, n_images: int) -> int:
    """``--queue-size``, or by default :data:`DEFAULT_QUEUE` keys or fewer: the most whole batches
    that leave a batch's own images out of the queue (n_images - batch_size)."""
    if cfg.queue_size is not None:
        return cfg.queue_size
    room = n_images - cfg.batch_size
    return max(cfg.batch_size, min(DEFAULT_QUEUE, room - room % cfg.batch_size))


class MoCo(Recipe):
    """MoCo's parts; with pseudo labels (``gmoco``) its batches come from the guided sampler and
    ``--guidance`` applies to the queue."""

    compile_loss = False  # the step updates the queue and the key encoder in place
    uses_index = True     # the queue keeps each key's image index (relabelled by re-clustering)

    def check(self, cfg, n_images: int) -> None:
        # the option-only rules (2 views, joint forward) are the entry's `requires` (gsimclr.methods)
        size = queue_size(cfg, n_images)
        if size + cfg.batch_size > n_images:
            raise UserError(f"--queue-size {size} with --batch-size {cfg.batch_size} is more than the "
                            f"{n_images} images: the queue would hold keys of a batch's own images; "
                            f"at most {max(n_images - cfg.batch_size, 0)}")

    def resolve(self, cfg, n_images: int):
        """The config with the queue size this data set gets (recorded in the checkpoint)."""
        return dataclasses.replace(cfg, queue_size=queue_size(cfg, n_images))

    def build_model(self, cfg) -> MoCoModel:
        if cfg.queue_size is None:
            raise ValueError("MoCo's default queue size depends on the data: build from Recipe.resolve's config")
        base = SimCLRModel.build(cfg.model, cfg.head_dims, cfg.head_batch_norm, **backbone_options(cfg))
        return MoCoModel(base.backbone, base.head, cfg.queue_size, cfg.moco_momentum)

    def build_criterion(self, cfg, model: MoCoModel) -> MoCoLoss:
        return MoCoLoss(model.queue, cfg.temperature, cfg.guidance)

    def make_loss_fn(self, cfg, criterion: MoCoLoss):
        def moco_loss(model, views, labels, index):
            net = getattr(model, "module", model)               # under DDP, the wrapped model
            q = model(views[0].contiguous(memory_format=torch.channels_last))
            net.update_key_encoder()
            k = net.keys(views[1].contiguous(memory_format=torch.channels_last))
            return criterion(q, k, pseudo_labels=labels, index=index)

        return moco_loss

    def chance_loss(self, cfg, batch_sizes: Sequence[int]) -> float | None:
        """Collapsed embeddings once the queue is full: log(queue + 1) (the positive among as many equal logits)."""
        return None if cfg.guidance != "none" else math.log(queue_size(cfg, sum(batch_sizes)) + 1)

    def relabel(self, model: MoCoModel, labels: torch.Tensor | None) -> None:
        getattr(model, "module", model).queue.relabel(labels)

    def epoch_state(self, model: MoCoModel) -> Any:
        queue = getattr(model, "module", model).queue
        return queue.index.cpu().numpy().copy(), int(queue.ptr)

    def pair_stats(self, batches: Sequence[np.ndarray], state: Any, pseudo_labels: np.ndarray | None,
                   classes: np.ndarray | None, guidance: str) -> dict[str, float]:
        """The batches' pairs (:func:`gsimclr.guidance.diagnostics.epoch_pair_stats`), and the loss's:
        its negatives are the queue's keys, so per step the (query, queue key) pairs of one label,
        replaying the epoch's pushes from the queue at its start: ``class_pairs_queue`` (same class),
        ``class_pairs_in_loss`` (those left as negatives by --guidance), ``pseudo_pairs_queue`` (same
        pseudo label) and ``class_pairs_queue_random`` (the expectation for shuffled images)."""
        stats = epoch_pair_stats(batches, pseudo_labels, classes, "none")
        if not batches:
            return stats
        index, ptr = state
        index = index.copy()
        size = len(index)
        codes = {}
        if pseudo_labels is not None:
            codes["pseudo"] = np.unique(np.asarray(pseudo_labels), return_inverse=True)[1].reshape(-1)
        if classes is not None:
            codes["class"] = np.unique(np.asarray(classes), return_inverse=True)[1].reshape(-1)
            if "pseudo" in codes:
                codes["both"] = codes["class"] * (int(codes["pseudo"].max()) + 1) + codes["pseudo"]
        sums = dict.fromkeys(codes, 0.0)
        held_counts = []
        for batch in batches:
            held = index[index >= 0]
            held_counts.append(len(held))
            for name, code in codes.items():
                width = int(code.max()) + 1
                sums[name] += float(np.bincount(code[batch], minlength=width).astype(np.float64)
                                    @ np.bincount(code[held], minlength=width))
            positions, pushed = (ptr + np.arange(len(batch))) % size, batch
            if len(batch) > size:
                positions, pushed = positions[-size:], batch[-size:]
            index[positions] = pushed
            ptr = (ptr + len(batch)) % size
        steps = len(batches)
        if "pseudo" in codes:
            stats["pseudo_pairs_queue"] = sums["pseudo"] / steps
        if "class" in codes:
            stats["class_pairs_queue"] = sums["class"] / steps
            guided = "both" in codes and guidance in ("mask", "attract")
            stats["class_pairs_in_loss"] = (sums["class"] - (sums["both"] if guided else 0.0)) / steps
            used = np.asarray(classes)[np.concatenate(batches)]
            same = random_pairs(used, [2])      # the chance that two of these images share a class
            stats["class_pairs_queue_random"] = float(np.mean([len(b) * h for b, h in zip(batches, held_counts)]) * same)
        return stats
