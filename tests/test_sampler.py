"""Sampler invariants, checked with hypothesis."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gsimclr.sampler import GuidedBatchSampler, RandomBatchSampler

labels_st = st.lists(st.integers(0, 11), min_size=8, max_size=120).map(np.array)


def _max_count(labels, batch):
    return np.bincount(labels[batch]).max()


@settings(max_examples=60, deadline=None)
@given(labels=labels_st, batch_size=st.integers(1, 16), seed=st.integers(0, 5), epoch=st.integers(0, 3))
def test_relax_covers_every_image_once_and_keeps_cap_while_possible(labels, batch_size, seed, epoch):
    if batch_size > len(labels):
        return
    sampler = GuidedBatchSampler(labels, batch_size, seed=seed)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(labels)))            # each image exactly once
    assert all(len(b) <= batch_size for b in batches)
    k = len(np.unique(labels))
    cap = math.ceil(batch_size / k)
    strict = [b for b in batches if _max_count(labels, b) <= cap]
    assert len(flat) - sum(len(b) for b in strict) <= sampler.relaxed_images  # violations are all reported
    if sampler.relaxed_images == 0:
        assert len(strict) == len(batches)


@settings(max_examples=60, deadline=None)
@given(labels=labels_st, batch_size=st.integers(1, 16), seed=st.integers(0, 5))
def test_drop_never_violates_the_constraint(labels, batch_size, seed):
    if batch_size > len(labels):
        return
    sampler = GuidedBatchSampler(labels, batch_size, seed=seed, tail="drop")
    batches = list(sampler)
    cap = math.ceil(batch_size / len(np.unique(labels)))
    assert all(_max_count(labels, b) <= cap for b in batches)
    flat = np.concatenate(batches) if batches else np.array([], int)
    assert len(set(flat.tolist())) == len(flat)                          # no image twice


def test_at_most_one_per_label_when_k_at_least_batch_size():
    labels = np.repeat(np.arange(20), 5)                                  # balanced: every batch can be strict
    sampler = GuidedBatchSampler(labels, 10, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sampler.relaxed_images == 0
        assert all(len(set(labels[b].tolist())) == len(b) for b in batches)


def test_reshuffled_every_epoch_and_deterministic_per_seed():
    labels = np.repeat(np.arange(16), 4)
    a = GuidedBatchSampler(labels, 8, seed=1)
    first = [b.tolist() for b in a]
    a.set_epoch(1)
    second = [b.tolist() for b in a]
    assert first != second
    b = GuidedBatchSampler(labels, 8, seed=1)
    assert [x.tolist() for x in b] == first


def test_relaxed_batches_spread_large_clusters():
    labels = np.array([0] * 40 + list(range(1, 11)))                      # one big cluster and ten singletons
    sampler = GuidedBatchSampler(labels, 10, seed=0)
    batches = list(sampler)
    assert sorted(np.concatenate(batches).tolist()) == list(range(50))
    assert sampler.relaxed_images == 40
    assert max(_max_count(labels, b) for b in batches) == 10              # only label 0 remains at the end


def test_random_sampler_and_errors():
    sampler = RandomBatchSampler(10, 4, seed=0)
    batches = list(sampler)
    assert [len(b) for b in batches] == [4, 4, 2] and len(sampler) == 3
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="larger than the dataset"):
        RandomBatchSampler(3, 4)
    with pytest.raises(ValueError):
        GuidedBatchSampler([0, 1], 2, tail="bogus")


@pytest.mark.parametrize("world", [2, 4])
def test_rank_slices_are_disjoint_and_cover_the_global_batches(world):
    labels = np.repeat(np.arange(32), 4)
    per_rank = [list(GuidedBatchSampler(labels, 16, seed=2, rank=r, world_size=world)) for r in range(world)]
    assert len({len(p) for p in per_rank}) == 1
    for step in zip(*per_rank):
        merged = np.concatenate(step)
        assert len(set(merged.tolist())) == len(merged) == 16
        assert len(set(labels[merged].tolist())) == 16                     # the constraint holds globally
    assert sorted(np.concatenate([np.concatenate(p) for p in per_rank]).tolist()) == list(range(128))
