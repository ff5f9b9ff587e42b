"""A batch sampler as a gsimclr plug-in (one file): every epoch each cluster is shuffled and the
clusters are dealt round-robin into the batches (largest clusters first, or in a random order), so a
batch holds one image per cluster while the clusters last.

    gsimclr pretrain --plugin interleave_plugin --method gsimclr --sampler interleave --interleave-order random ...
"""

import numpy as np

from gsimclr.guidance.samplers import SAMPLERS, LabelledBatches
from gsimclr.options import Declares, Option


class InterleaveSampler(LabelledBatches):
    name = "interleave"

    @classmethod
    def from_config(cls, cfg, labels, rank=0, world_size=1):
        return cls(labels, cfg.batch_size, cfg.seed, rank=rank, world_size=world_size, drop_last=cfg.drop_last,
                   order=cfg.interleave_order)

    def __init__(self, labels, batch_size, seed=0, rank=0, world_size=1, drop_last=False, order="largest"):
        self.order = order
        super().__init__(labels, batch_size, seed, rank, world_size, drop_last)

    def global_batches(self):
        rng = self._rng()
        clusters = [rng.permutation(np.flatnonzero(self.labels == c)) for c in range(self.k)]
        ranked = (sorted(range(self.k), key=lambda c: -len(clusters[c])) if self.order == "largest"
                  else rng.permutation(self.k))
        deck = [clusters[c][i] for i in range(max(map(len, clusters))) for c in ranked if i < len(clusters[c])]
        order = np.asarray(deck, dtype=np.int64)
        return [order[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)]


SAMPLERS.register("interleave", InterleaveSampler, declares=Declares(options=(
    Option("interleave_order", "largest", "interleave sampler: the clusters' order in every round",
           choices=("largest", "random")),)))
