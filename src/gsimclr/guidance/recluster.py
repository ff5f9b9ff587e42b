"""When the ``encoder`` pseudo-label source re-clusters the encoder's features during pretraining.

After ``warmup`` epochs, and then every ``every`` epochs, the encoder's features are clustered
again and the sampler and the loss use the new labels from the next epoch on (IFND's incremental
false-negative detection, Chen et al. 2021). Before the first refresh there are no pseudo labels:
the run trains as SimCLR.

Example:
    >>> schedule = ReclusterSchedule(every=2, warmup=3)
    >>> [e for e in range(10) if schedule.due(e)], schedule.last_refresh(6)
    ([3, 5, 7, 9], 5)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReclusterSchedule:
    every: int = 1
    warmup: int = 1

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"re-clustering needs every >= 1 epochs, got {self.every}")
        if self.warmup < 0:
            raise ValueError(f"the re-clustering warm-up must be >= 0 epochs, got {self.warmup}")

    def due(self, epochs_done: int) -> bool:
        """Whether the labels are refreshed once ``epochs_done`` epochs are done (before the next one)."""
        return epochs_done >= self.warmup and (epochs_done - self.warmup) % self.every == 0

    def last_refresh(self, epochs_done: int) -> int | None:
        """The latest refresh at or before ``epochs_done`` epochs (None: none yet), for resuming."""
        if epochs_done < self.warmup:
            return None
        return epochs_done - (epochs_done - self.warmup) % self.every
