"""Moved to :mod:`gsimclr.guidance.samplers`; this name keeps old imports working."""

from gsimclr.guidance.samplers import GreedyBatchSampler, RandomBatchSampler

GuidedBatchSampler = GreedyBatchSampler

__all__ = ["GuidedBatchSampler", "RandomBatchSampler"]
