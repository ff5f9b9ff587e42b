"""Batch samplers: plain shuffling (SimCLR) and guided batches (G-SimCLR).

A guided batch holds at most ``cap = ceil(batch_size / k)`` images of any pseudo label, that is at
most one per label when there are at least as many labels (k) as images in a batch, so that images
of one (pseudo) category do not act as negatives for each other.

Every epoch is reshuffled (the paper's batches were fixed once) and covers every image exactly once.
Batches are built greedily from the labels with the most images left (random tie-break), which
yields the largest possible number of batches that keep the constraint. When the remaining
images can no longer fill a batch under the constraint (small clusters have run out and a few large
ones are left), ``tail`` decides:

- ``"relax"`` (default): the cap is raised one step at a time for the remaining batches (at most 2
  images of a label, then 3, ...), so the final batches stay as guided as the data allows;
  ``relaxed_images`` reports how many images were placed in such batches. With k equal to the batch
  size (the paper's choice) every strict batch needs every cluster, so the smallest cluster bounds
  the number of strict batches; a k of about twice the batch size keeps almost all batches strict.
- ``"drop"``: the leftover images are skipped for this epoch (different ones each epoch).

The notebooks' orders, each an option:

- :class:`RankOrderBatchSampler` (G-SimCLR notebooks): every image gets its rank within its cluster
  (1 for the cluster's lowest index, 2 for the next, ...), the images are sorted by rank, and the
  batches are consecutive slices of that one order, the same every epoch, never shuffled: the first
  batches hold one image of each cluster while every cluster still has images of that rank.
- :class:`RandomBatchSampler` with ``shuffle_buffer``: tf.data's ``shuffle(buffer)`` (the SimCLR
  notebooks use 1,024), and ``reshuffle=False``: the first epoch's order every epoch (the CIFAR
  notebook's ``shuffle(1024)...cache()`` caches the shuffled order).

Under torch.distributed the constraint is global: batches are drawn for the global batch and each
rank receives its own disjoint, equal slice; the shuffle depends only on (seed, epoch).

Example:
    >>> import numpy as np
    >>> sampler = GuidedBatchSampler(np.repeat(np.arange(4), 3), batch_size=4, seed=0)
    >>> batches = list(sampler)
    >>> [len(set(np.repeat(np.arange(4), 3)[b])) for b in batches]
    [4, 4, 4]
"""

from __future__ import annotations

import math

import numpy as np


class _EpochBatches:
    """Shared by both samplers: epoch-seeded shuffling and the rank's slice of each global batch."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False, reshuffle: bool = True):
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        if batch_size > n:
            raise ValueError(f"batch size {batch_size} is larger than the dataset ({n} images)")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.reshuffle = reshuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch if self.reshuffle else 0])

    def global_batches(self) -> list[np.ndarray]:
        raise NotImplementedError

    def __iter__(self):
        for batch in self.global_batches():
            if self.drop_last and len(batch) < self.batch_size:
                continue
            per_rank = len(batch) // self.world_size  # a last batch not divisible by the ranks loses < world_size images
            if per_rank:
                yield batch[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest >= self.world_size and not self.drop_last else 0)


def buffer_shuffle(n: int, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """The order tf.data's ``shuffle(buffer)`` gives ``range(n)``: a buffer holds the next ``buffer``
    elements, each output is a uniformly random one of them, replaced by the next input element."""
    pool = list(range(min(buffer, n)))
    nxt, out = len(pool), np.empty(n, dtype=np.int64)
    picks = rng.random(n)
    for i in range(n):
        j = int(picks[i] * len(pool))
        out[i] = pool[j]
        if nxt < n:
            pool[j], nxt = nxt, nxt + 1
        else:
            pool[j] = pool[-1]
            pool.pop()
    return out


class RandomBatchSampler(_EpochBatches):
    """Plain shuffling, reshuffled every epoch (vanilla SimCLR); ``shuffle_buffer`` > 0 shuffles as
    tf.data's ``shuffle(shuffle_buffer)`` instead of a full permutation."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False, reshuffle: bool = True, shuffle_buffer: int = 0):
        super().__init__(n, batch_size, seed, rank, world_size, drop_last, reshuffle)
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle buffer must be >= 0, got {shuffle_buffer}")
        self.shuffle_buffer = shuffle_buffer

    def global_batches(self) -> list[np.ndarray]:
        rng = self._rng()
        order = buffer_shuffle(self.n, self.shuffle_buffer, rng) if self.shuffle_buffer else rng.permutation(self.n)
        return [order[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)]


def rank_order(pseudo_labels) -> np.ndarray:
    """The G-SimCLR notebooks' order of the images: by rank within their cluster, ties by cluster id.

    The notebooks sort with pandas' default (unstable) quicksort, which may order the images of one
    rank differently; full batches of one rank hold the same images either way."""
    labels = np.asarray(pseudo_labels)
    ranks = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        ranks[idx] = np.arange(len(idx))
    return np.lexsort((labels, ranks))


class RankOrderBatchSampler(_EpochBatches):
    """Consecutive batches of :func:`rank_order`, the same every epoch (the G-SimCLR notebooks')."""

    def __init__(self, pseudo_labels, batch_size: int, rank: int = 0, world_size: int = 1, drop_last: bool = False):
        labels = np.asarray(pseudo_labels)
        super().__init__(len(labels), batch_size, 0, rank, world_size, drop_last, reshuffle=False)
        self.order = rank_order(labels)

    def global_batches(self) -> list[np.ndarray]:
        return [self.order[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)]


class GuidedBatchSampler(_EpochBatches):
    """Batches in which no pseudo label appears more than ``ceil(batch_size / k)`` times."""

    def __init__(self, pseudo_labels, batch_size: int, seed: int = 0, tail: str = "relax",
                 rank: int = 0, world_size: int = 1, drop_last: bool = False):
        labels = np.asarray(pseudo_labels)
        super().__init__(len(labels), batch_size, seed, rank, world_size, drop_last)
        if tail not in ("relax", "drop"):
            raise ValueError(f"tail must be 'relax' or 'drop', got {tail!r}")
        _, self.labels = np.unique(labels, return_inverse=True)
        self.k = int(self.labels.max()) + 1
        self.cap = math.ceil(batch_size / self.k)
        self.tail = tail
        self.relaxed_images = 0

    def global_batches(self) -> list[np.ndarray]:
        rng = self._rng()
        pools = [rng.permutation(np.flatnonzero(self.labels == c)) for c in range(self.k)]
        counts = np.array([len(p) for p in pools])
        taken = np.zeros(self.k, dtype=np.int64)
        batches, cap = [], self.cap
        self.relaxed_images = 0
        while counts.sum():
            size = min(self.batch_size, int(counts.sum()))
            batch = self._fill(counts, size, cap, rng)
            if batch is None:
                if self.tail == "drop":
                    break
                cap += 1
                continue
            if cap > self.cap:
                self.relaxed_images += size
            batches.append(np.concatenate([pools[c][taken[c]:taken[c] + m] for c, m in batch]))
            for c, m in batch:
                taken[c] += m
                counts[c] -= m
        order = rng.permutation(len(batches))
        return [rng.permutation(batches[i]) for i in order]

    def _fill(self, counts: np.ndarray, size: int, cap: int, rng: np.random.Generator):
        """(label, how many) pairs filling ``size`` slots, largest remaining labels first, at most
        ``cap`` each; None when that cap cannot be kept."""
        ranked = np.lexsort((rng.random(self.k), -counts))
        picks, filled = [], 0
        for c in ranked:
            if filled == size or counts[c] == 0:
                break
            m = int(min(cap, counts[c], size - filled))
            picks.append((int(c), m))
            filled += m
        return picks if filled == size else None

    def __len__(self) -> int:
        return sum(1 for _ in self)
