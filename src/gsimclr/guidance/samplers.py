"""Batch samplers: which images share a batch, and so act as each other's negatives in NT-Xent.

- ``random``: plain shuffling, reshuffled every epoch (SimCLR).
- ``paper``: the G-SimCLR notebook's batching. Every image gets its rank within its cluster (in
  index order), the images are ordered by rank and cut into batches, the remainder is dropped, and
  the same batches come back every epoch in the same order. While every cluster still has an image
  of a rank, a batch holds one image per cluster; once the small clusters run out (with k = 64 on
  CIFAR-10, after about 190 of the 781 batches) the big clusters fill the batches.
  (The notebook sorts by rank with pandas' unstable default sort, so its order *within* one rank is
  arbitrary; we keep cluster order within a rank. This only moves the boundary of a batch that
  straddles two ranks.)
- ``spread``: every cluster's images are spread as evenly as possible over the epoch's batches:
  a cluster of n_c images puts floor or ceil of n_c / m images in each of the m full batches, and
  the short last batch (if any) takes the images that lower the total most
  (:func:`short_batch_quota`). This is the least number of same-label pairs any batching of the
  epoch into these batch sizes can have (:func:`gsimclr.guidance.diagnostics.spread_floor_pairs`;
  tests/test_samplers.py checks it against brute force), and one image per cluster per batch
  whenever the cluster has no more images than there are batches. Reshuffled every epoch (cluster
  order, images within a cluster, batch order, order within a batch), every image once per epoch,
  the short batch (if any) last.
- ``greedy``: batches built greedily from the clusters with the most images left, at most
  ``ceil(batch / k)`` images of a cluster per batch while possible; the cap is then raised step by
  step (``tail="relax"``) or the leftovers are skipped (``tail="drop"``). It keeps many batches
  strict and piles the big clusters into the last ones; ``spread`` has fewer same-label pairs
  (benchmarks/results/guidance-cpu.md) and is G-SimCLR's default.

Under torch.distributed a sampler draws the *global* batch (the same on every process: it depends
only on the labels, the seed and the epoch) and each rank receives its own equal, disjoint slice, so
the rule holds for the global batch, whose embeddings NT-Xent gathers.

Samplers that use labels accept new ones between epochs (:meth:`LabelledBatches.set_labels`), which
re-clustering during training uses. :meth:`EpochBatches.epoch_batches` returns the global batches of
the current epoch (computed once per epoch and cached) for the diagnostics.

Example:
    >>> import numpy as np
    >>> labels = np.repeat(np.arange(4), 3)          # 4 clusters of 3 images
    >>> sampler = SpreadBatchSampler(labels, batch_size=4, seed=0)
    >>> [sorted(labels[b].tolist()) for b in sampler]
    [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]]
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from gsimclr.options import Declares, Option
from gsimclr.registry import Registry


class EpochBatches:
    """Epoch-seeded batches of the global batch and the rank's slice of each (the base of every sampler).

    A sampler owns how the configuration builds it (:meth:`from_config`: which options it reads) and
    what it adds to an epoch's log (:meth:`epoch_record`); the trainer knows no sampler by name."""

    name = ""
    drops_remainder = False
    uses_labels = True  # batches by (pseudo) labels; False: the same batches whatever the labels

    @classmethod
    def from_config(cls, cfg, labels: np.ndarray, rank: int = 0, world_size: int = 1) -> "EpochBatches":
        """This sampler over ``labels`` (one per image) as a configuration sets it: ``--batch-size``,
        ``--seed``, ``--drop-last`` and the options the sampler declares."""
        return cls(labels, cfg.batch_size, cfg.seed, rank=rank, world_size=world_size, drop_last=cfg.drop_last)

    def epoch_record(self) -> dict:
        """What this sampler adds to an epoch's log line (after the epoch's batches were drawn)."""
        return {}

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
        self.reshuffle = reshuffle  # False: the first epoch's order every epoch (tf.data's shuffle then cache)
        self.epoch = 0
        self._cache: tuple | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch if self.reshuffle else 0])

    def global_batches(self) -> list[np.ndarray]:
        """This epoch's global batches (index arrays), freshly computed."""
        raise NotImplementedError

    def epoch_batches(self) -> list[np.ndarray]:
        """The global batches this epoch trains on (after ``drop_last`` and the rank split), cached per epoch."""
        key = (self.epoch, self._labels_version())
        if self._cache is None or self._cache[0] != key:
            batches = [b for b in self.global_batches() if not (self.drop_last and len(b) < self.batch_size)]
            # a last batch not divisible by the ranks loses < world_size images
            batches = [b[:len(b) // self.world_size * self.world_size] for b in batches]
            self._cache = (key, [b for b in batches if len(b)])
        return self._cache[1]

    def _labels_version(self) -> int:
        return 0

    def __iter__(self):
        for batch in self.epoch_batches():
            per_rank = len(batch) // self.world_size
            yield batch[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __len__(self) -> int:
        return len(self.epoch_batches())


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


class RandomBatchSampler(EpochBatches):
    """Plain shuffling, reshuffled every epoch (vanilla SimCLR); ``shuffle_buffer`` > 0 shuffles as
    tf.data's ``shuffle(shuffle_buffer)`` (the SimCLR notebooks: 1,024) instead of a full permutation,
    and ``reshuffle=False`` keeps the first epoch's order (the CIFAR notebook caches it)."""

    name = "random"
    uses_labels = False

    @classmethod
    def from_config(cls, cfg, labels: np.ndarray | int, rank: int = 0, world_size: int = 1) -> "RandomBatchSampler":
        """Over ``labels`` (or ``labels`` images: a count): ``--shuffle-buffer`` and ``--reshuffle`` too."""
        n = labels if isinstance(labels, (int, np.integer)) else len(labels)
        return cls(int(n), cfg.batch_size, cfg.seed, rank, world_size, cfg.drop_last, cfg.reshuffle,
                   cfg.shuffle_buffer)

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

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest >= self.world_size and not self.drop_last else 0)


class LabelledBatches(EpochBatches):
    """A sampler that batches by (pseudo) labels; ``set_labels`` swaps them between epochs."""

    def __init__(self, labels, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False):
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
        super().__init__(len(labels), batch_size, seed, rank, world_size, drop_last)
        self._version = 0
        self.set_labels(labels)

    def set_labels(self, labels) -> None:
        labels = np.asarray(labels)
        if labels.shape != (self.n,):
            raise ValueError(f"expected {self.n} labels, got shape {labels.shape}")
        _, self.labels = np.unique(labels, return_inverse=True)
        self.labels = self.labels.reshape(-1).astype(np.int64)
        self.k = int(self.labels.max()) + 1
        self._version += 1

    def _labels_version(self) -> int:
        return self._version


def rank_order(labels) -> np.ndarray:
    """The G-SimCLR notebooks' order of the images: by rank within their cluster (0 for the cluster's
    lowest index, 1 for the next, ...), ties by cluster id.

        >>> rank_order(np.array([1, 0, 1, 0, 0])).tolist()
        [1, 0, 3, 2, 4]
    """
    labels = np.asarray(labels)
    _, labels = np.unique(labels, return_inverse=True)
    labels = labels.reshape(-1)
    n = len(labels)
    index = np.arange(n)
    order = np.lexsort((index, labels))                          # by cluster, then image index
    rank = np.empty(n, dtype=np.int64)
    starts = np.searchsorted(labels[order], np.arange(int(labels.max()) + 1 if n else 0))
    rank[order] = index - starts[labels[order]]                  # 0, 1, 2, ... within each cluster
    return np.lexsort((labels, rank))                            # by rank, then cluster


class PaperBatchSampler(LabelledBatches):
    """The notebook's batches: images ordered by their rank within their cluster, cut into batches,
    remainder dropped, the same batches in the same order every epoch."""

    name = "paper"
    drops_remainder = True

    def global_batches(self) -> list[np.ndarray]:
        by_rank = rank_order(self.labels)
        full = self.n // self.batch_size * self.batch_size
        return [by_rank[i:i + self.batch_size] for i in range(0, full, self.batch_size)]


def even_pairs(count, batches: int):
    """Same-label pairs of ``count`` images spread evenly over ``batches`` batches (q = count // batches
    in each, one more in count % batches of them): batches C(q, 2) + r q. Works on arrays."""
    q, r = np.divmod(count, batches)
    return batches * q * (q - 1) // 2 + r * q


def short_batch_quota(counts: np.ndarray, full_batches: int, short: int,
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """How many images of each label go into the short batch (``short`` images) so that, with the rest
    spread evenly over ``full_batches`` equal batches, the total of same-label pairs is least.

    The cost of label c is C(y, 2) + even_pairs(n_c - y, full_batches), convex in y, so adding the
    short batch's images one at a time where the cost rises least is optimal (ties broken by ``rng``)."""
    counts = np.asarray(counts, dtype=np.int64)
    quota = np.zeros(len(counts), dtype=np.int64)
    if short == 0:
        return quota
    if full_batches == 0:                               # only the short batch: everything goes there
        return counts.copy()
    tie = rng.random(len(counts)) if rng is not None else np.arange(len(counts), dtype=float)

    def rise(c: int) -> int:                            # the cost of one more image of label c in the short batch
        y = quota[c]
        return int(y - (counts[c] - y - 1) // full_batches)

    heap = [(rise(c), tie[c], c) for c in range(len(counts)) if counts[c]]
    heapq.heapify(heap)
    for _ in range(short):
        _, _, c = heapq.heappop(heap)
        quota[c] += 1
        if quota[c] < counts[c]:
            heapq.heappush(heap, (rise(c), tie[c], c))
    return quota


class SpreadBatchSampler(LabelledBatches):
    """Every cluster spread as evenly as possible over the epoch's batches (see the module docstring)."""

    name = "spread"

    def global_batches(self) -> list[np.ndarray]:
        rng = self._rng()
        n, size = self.n, self.batch_size
        full, short = divmod(n, size)
        # The short last batch (if any) takes the images whose absence from the full batches lowers
        # the pairs most (a few of the largest clusters)...
        by_label = np.lexsort((rng.random(n), self.labels))             # images grouped by label, shuffled inside
        counts = np.bincount(self.labels, minlength=self.k)
        quota = short_batch_quota(counts, full, short, rng)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        within = np.arange(n) - np.repeat(first, counts)                # position of each image inside its label
        in_short = within < np.repeat(quota, counts)
        last = by_label[in_short]
        rest = by_label[~in_short]
        # ...and the others are dealt round-robin over the full batches in an order that groups them by
        # label (random label order): a label occupies consecutive deals, so each full batch gets
        # floor or ceil of its share, the least same-label pairs possible.
        cluster_rank = rng.permutation(self.k)[self.labels[rest]]
        rest = rest[np.argsort(cluster_rank, kind="stable")]
        deal = np.arange(len(rest)) % max(full, 1)
        batches = [rest[deal == b] for b in range(full)]
        shuffled = [rng.permutation(batches[i]) for i in rng.permutation(full)]
        return shuffled + ([rng.permutation(last)] if short else [])


class GreedyBatchSampler(LabelledBatches):
    """Batches in which no label appears more than ``ceil(batch_size / k)`` times while the data allows."""

    name = "greedy"

    @classmethod
    def from_config(cls, cfg, labels: np.ndarray, rank: int = 0, world_size: int = 1) -> "GreedyBatchSampler":
        return cls(labels, cfg.batch_size, cfg.seed, tail=cfg.sampler_tail, rank=rank, world_size=world_size,
                   drop_last=cfg.drop_last)

    def epoch_record(self) -> dict:
        return {"relaxed_images": self.relaxed_images}

    def __init__(self, labels, batch_size: int, seed: int = 0, tail: str = "relax",
                 rank: int = 0, world_size: int = 1, drop_last: bool = False):
        if tail not in ("relax", "drop"):
            raise ValueError(f"tail must be 'relax' or 'drop', got {tail!r}")
        self.tail = tail
        self.relaxed_images = 0
        super().__init__(labels, batch_size, seed, rank, world_size, drop_last)

    @property
    def cap(self) -> int:
        return math.ceil(self.batch_size / self.k)

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
        if not batches:   # tail "drop" with one label holding most images: not a single batch keeps the cap
            raise ValueError(f"--sampler greedy --sampler-tail drop leaves no batch: no {self.batch_size} images "
                             f"hold at most {self.cap} of a pseudo label; use --sampler-tail relax or another --sampler")
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


#: name -> sampler class (``--sampler``); ``random`` needs no labels, the others batch by (pseudo) labels.
#: An entry's declared options are options of ``run`` and ``pretrain`` in the guidance section.
SAMPLERS: Registry = Registry("sampler", option="sampler", section="guidance")
for _cls in (SpreadBatchSampler, RandomBatchSampler, PaperBatchSampler):
    SAMPLERS.register(_cls.name, _cls)
SAMPLERS.register("greedy", GreedyBatchSampler, declares=Declares(options=(
    Option("sampler_tail", "relax", "greedy sampler once the smallest clusters run out: relax the one-per-cluster "
           "rule step by step, or drop the rest of the epoch", choices=("relax", "drop")),)))


def batch_sampler(cfg, n: int, labels: np.ndarray | None, rank: int = 0, world_size: int = 1) -> EpochBatches:
    """The configured sampler (``--sampler``) over ``labels``, built by its own :meth:`~EpochBatches.from_config`;
    without labels (SimCLR; encoder pseudo labels before the first clustering) a sampler that batches by
    labels falls back to plain shuffling. Raises ValueError for impossible sizes."""
    cls = SAMPLERS.get(cfg.sampler)
    if labels is None or not cls.uses_labels:
        return RandomBatchSampler.from_config(cfg, n, rank, world_size)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} images")
    return cls.from_config(cfg, labels, rank, world_size)


def make_batch_sampler(name: str, n: int, batch_size: int, labels=None, seed: int = 0, rank: int = 0,
                       world_size: int = 1, **options) -> EpochBatches:
    """The sampler ``name`` over ``n`` images; one that batches by labels falls back to ``random``
    when ``labels`` is None (SimCLR has no pseudo labels). Raises ValueError for impossible sizes."""
    cls = SAMPLERS.get(name)
    if cls is RandomBatchSampler or labels is None:    # drop_last holds for it too; tail is greedy's alone
        return RandomBatchSampler(n, batch_size, seed, rank, world_size, drop_last=options.get("drop_last", False))
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} images")
    return cls(labels, batch_size, seed, rank=rank, world_size=world_size, **options)

