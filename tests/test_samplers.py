"""Sampler invariants, checked with hypothesis: spread's optimality, coverage, the paper's batches,
the greedy cap, and the rank slices of the global batch."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gsimclr.errors import UserError
from gsimclr.guidance.diagnostics import random_pairs, same_label_pairs, spread_floor_pairs
from gsimclr.guidance.samplers import (SAMPLERS, GreedyBatchSampler, PaperBatchSampler, RandomBatchSampler,
                                       SpreadBatchSampler, make_batch_sampler)

labels_st = st.lists(st.integers(0, 11), min_size=8, max_size=120).map(np.array)
# any label vector: few or many labels, skewed sizes, labels that are not 0..k-1
skewed_st = st.lists(st.sampled_from([0, 0, 0, 0, 1, 1, 2, 3, 5, 8, 13, 40, 41, 42, 43, 44, 99]),
                     min_size=2, max_size=200).map(np.array)


def _max_count(labels, batch):
    return np.bincount(labels[batch]).max()


@settings(max_examples=300, deadline=None)
@given(labels=st.one_of(labels_st, skewed_st), batch_size=st.integers(1, 40), seed=st.integers(0, 5),
       epoch=st.integers(0, 3))
def test_spread_is_near_the_floor_never_worse_than_random_and_covers_every_image(labels, batch_size, seed, epoch):
    if batch_size > len(labels):
        return
    sampler = SpreadBatchSampler(labels, batch_size, seed=seed)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(labels)))    # every image once
    sizes = [len(b) for b in batches]
    assert sizes[:-1] == [batch_size] * (len(batches) - 1) and 0 < sizes[-1] <= batch_size  # short batch last
    pairs = same_label_pairs(batches, labels)
    assert pairs <= random_pairs(labels, sizes) + 1e-9
    floor = spread_floor_pairs(labels, sizes)
    assert pairs == pytest.approx(floor)                                           # the lower bound itself
    # one image per label per batch wherever the label has no more images than there are full batches
    full = len(labels) // batch_size
    for value, count in zip(*np.unique(labels, return_counts=True)):
        if count <= full:
            assert all((labels[b] == value).sum() <= 1 for b in batches[:full])


def _brute_force_floor(labels, sizes):
    """The least same-label pairs over every assignment of the images to batches of ``sizes``."""
    best = math.inf
    for assignment in itertools.product(range(len(sizes)), repeat=len(labels)):
        if np.bincount(assignment, minlength=len(sizes)).tolist() == list(sizes):
            best = min(best, same_label_pairs([np.flatnonzero(np.array(assignment) == b) for b in range(len(sizes))],
                                              labels))
    return best


@pytest.mark.parametrize("labels,sizes", [([0, 0, 0, 0, 0, 0, 1, 2], [5, 3]), ([0] * 8, [6, 2]),
                                          ([0, 0, 0, 1, 1, 2, 3], [3, 3, 1]), ([0, 0, 1, 1, 1, 1, 2], [4, 3]),
                                          ([0, 1, 1, 1, 2, 2, 2], [2, 2, 2, 1])])
def test_floor_is_the_brute_force_minimum_and_spread_reaches_it(labels, sizes):
    labels = np.array(labels)
    floor = spread_floor_pairs(labels, sizes)
    assert floor == pytest.approx(_brute_force_floor(labels, sizes))
    for seed in range(4):
        batches = SpreadBatchSampler(labels, sizes[0], seed=seed).epoch_batches()
        assert [len(b) for b in batches] == sizes
        assert same_label_pairs(batches, labels) == pytest.approx(floor)
    assert random_pairs(labels, sizes) >= floor


def test_spread_reshuffles_every_epoch_and_is_deterministic_per_seed():
    labels = np.repeat(np.arange(16), 8)
    a = SpreadBatchSampler(labels, 16, seed=1)
    first = [b.tolist() for b in a]
    a.set_epoch(1)
    assert [b.tolist() for b in a] != first
    assert [b.tolist() for b in SpreadBatchSampler(labels, 16, seed=1)] == first
    assert all(len(set(labels[b].tolist())) == 16 for b in first)                  # one per cluster


def test_spread_beats_random_paper_and_greedy_on_skewed_clusters():
    """The issue's case in small: k = batch size with very unequal clusters."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(16), rng.integers(3, 60, 16))
    pairs = {}
    for name in SAMPLERS:
        sampler = make_batch_sampler(name, len(labels), 16, labels, seed=0)
        pairs[name] = same_label_pairs(sampler.epoch_batches(), labels)
    sizes = [16] * (len(labels) // 16) + [len(labels) % 16]
    assert pairs["spread"] == pytest.approx(spread_floor_pairs(labels, sizes))
    assert pairs["spread"] < min(pairs["random"], pairs["paper"], pairs["greedy"])


def test_paper_batches_rank_within_cluster_drop_the_remainder_and_repeat():
    labels = np.array([2, 0, 1, 0, 2, 2, 1, 0, 2, 2])   # cluster 0: 1,3,7; 1: 2,6; 2: 0,4,5,8,9
    sampler = PaperBatchSampler(labels, 3)
    batches = [b.tolist() for b in sampler]
    # rank 0: images 1, 2, 0 (clusters 0, 1, 2); rank 1: 3, 6, 4; rank 2: 7, 5; rank 3: 8; rank 4: 9
    assert batches == [[1, 2, 0], [3, 6, 4], [7, 5, 8]]                            # image 9 dropped
    sampler.set_epoch(5)
    assert [b.tolist() for b in sampler] == batches and len(sampler) == 3


@settings(max_examples=60, deadline=None)
@given(labels=labels_st, batch_size=st.integers(1, 16))
def test_paper_one_per_cluster_while_every_cluster_has_images(labels, batch_size):
    if batch_size > len(labels):
        return
    _, labels = np.unique(labels, return_inverse=True)
    batches = PaperBatchSampler(labels, batch_size).epoch_batches()
    flat = np.concatenate(batches) if batches else np.array([], int)
    assert len(flat) == len(labels) // batch_size * batch_size and len(set(flat.tolist())) == len(flat)
    k, smallest = labels.max() + 1, np.bincount(labels).min()
    if k == batch_size:
        assert all(len(set(labels[b].tolist())) == k for b in batches[:smallest])


@settings(max_examples=60, deadline=None)
@given(labels=labels_st, batch_size=st.integers(1, 16), seed=st.integers(0, 5), epoch=st.integers(0, 3))
def test_greedy_relax_covers_every_image_once_and_keeps_cap_while_possible(labels, batch_size, seed, epoch):
    if batch_size > len(labels):
        return
    sampler = GreedyBatchSampler(labels, batch_size, seed=seed)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(labels)))            # each image exactly once
    assert all(len(b) <= batch_size for b in batches)
    cap = math.ceil(batch_size / len(np.unique(labels)))
    strict = [b for b in batches if _max_count(labels, b) <= cap]
    assert len(flat) - sum(len(b) for b in strict) <= sampler.relaxed_images  # violations are all reported
    if sampler.relaxed_images == 0:
        assert len(strict) == len(batches)


@settings(max_examples=60, deadline=None)
@given(labels=labels_st, batch_size=st.integers(1, 16), seed=st.integers(0, 5))
def test_greedy_drop_never_violates_the_constraint(labels, batch_size, seed):
    if batch_size > len(labels):
        return
    sampler = GreedyBatchSampler(labels, batch_size, seed=seed, tail="drop")
    try:
        batches = list(sampler)
    except ValueError as exc:  # no batch keeps the cap: refused rather than an epoch of zero steps
        assert "leaves no batch" in str(exc)
        return
    assert batches
    cap = math.ceil(batch_size / len(np.unique(labels)))
    assert all(_max_count(labels, b) <= cap for b in batches)
    flat = np.concatenate(batches)
    assert len(set(flat.tolist())) == len(flat)                          # no image twice


def test_greedy_relaxed_batches_spread_large_clusters():
    labels = np.array([0] * 40 + list(range(1, 11)))                      # one big cluster and ten singletons
    sampler = GreedyBatchSampler(labels, 10, seed=0)
    batches = list(sampler)
    assert sorted(np.concatenate(batches).tolist()) == list(range(50))
    assert sampler.relaxed_images == 40
    assert max(_max_count(labels, b) for b in batches) == 10              # only label 0 remains at the end


def test_new_labels_take_effect_at_once():
    sampler = SpreadBatchSampler(np.zeros(32, int), 8, seed=0)
    assert same_label_pairs(sampler.epoch_batches(), np.zeros(32, int)) == 28
    labels = np.arange(32) % 8
    sampler.set_labels(labels)
    assert same_label_pairs(sampler.epoch_batches(), labels) == 0
    with pytest.raises(ValueError, match="expected 32 labels"):
        sampler.set_labels(np.zeros(5))


def test_random_sampler_factory_and_errors():
    sampler = RandomBatchSampler(10, 4, seed=0)
    batches = list(sampler)
    assert [len(b) for b in batches] == [4, 4, 2] and len(sampler) == 3
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="larger than the dataset"):
        RandomBatchSampler(3, 4)
    with pytest.raises(ValueError):
        GreedyBatchSampler([0, 1], 2, tail="bogus")
    with pytest.raises(UserError, match="unknown sampler 'bogus'; choose one of spread, random, paper, greedy"):
        make_batch_sampler("bogus", 10, 2)
    assert isinstance(make_batch_sampler("spread", 10, 2), RandomBatchSampler)       # no labels: SimCLR
    assert isinstance(make_batch_sampler("spread", 10, 2, np.arange(10) % 3), SpreadBatchSampler)


@pytest.mark.parametrize("name", ["spread", "greedy", "paper", "random"])
@pytest.mark.parametrize("world", [2, 4])
def test_rank_slices_are_disjoint_and_cover_the_global_batches(name, world):
    labels = np.repeat(np.arange(32), 4)
    per_rank = [list(make_batch_sampler(name, 128, 16, labels, seed=2, rank=r, world_size=world))
                for r in range(world)]
    assert len({len(p) for p in per_rank}) == 1
    for step in zip(*per_rank):
        merged = np.concatenate(step)
        assert len(set(merged.tolist())) == len(merged) == 16
        if name != "random":
            assert len(set(labels[merged].tolist())) == 16                 # the rule holds globally
    assert sorted(np.concatenate([np.concatenate(p) for p in per_rank]).tolist()) == list(range(128))


@pytest.mark.parametrize("labels", [None, np.arange(40) % 3])
@pytest.mark.parametrize("name", ["spread", "greedy", "paper", "random"])
def test_drop_last_holds_for_every_sampler_make_batch_sampler_builds(name, labels):
    """40 images in batches of 32 with drop_last: one batch of 32, never the short one of 8; random
    shuffling (asked for, or standing in without labels) ignored drop_last."""
    sampler = make_batch_sampler(name, 40, 32, labels, seed=0, drop_last=True)
    batches = list(sampler)
    assert [len(b) for b in batches] == [32] and len(sampler) == 1
    assert len(set(np.concatenate(batches).tolist())) == 32


def test_greedy_tail_drop_that_keeps_no_batch_is_an_error_not_an_empty_epoch(tmp_path, tiny_overrides):
    """95 images of one label and 5 of another, batches of 32 with at most 16 a label: tail 'drop' kept
    no batch, and pretraining 'trained' epochs of no steps (loss 0.0). The sampler says so, and
    pretraining stops with a one-line error."""
    from gsimclr.config import load_config
    from gsimclr.data.sources import load_split
    from gsimclr.training.pretrain import pretrain

    labels = np.array([0] * 95 + [1] * 5)
    with pytest.raises(ValueError, match="leaves no batch"):
        len(GreedyBatchSampler(labels, 32, tail="drop"))
    assert len(GreedyBatchSampler(labels, 32, tail="relax")) == 4
    data = load_split("digits", image_size=16).subset(np.arange(100))
    cfg = load_config(None, {**tiny_overrides, "epochs": 1, "batch_size": 32, "sampler": "greedy",
                             "sampler_tail": "drop"})
    with pytest.raises(UserError, match="--sampler greedy --sampler-tail drop leaves no batch"):
        pretrain(cfg, data, tmp_path / "run", pseudo_labels=labels, method="gsimclr")


def test_greedy_tail_drop_without_a_batch_after_reclustering_is_a_one_line_error(tmp_path, tiny_overrides,
                                                                                 monkeypatch):
    """The same when a re-clustering during training brings the labels that leave no batch."""
    from gsimclr.config import load_config
    from gsimclr.data.sources import load_split
    from gsimclr.guidance.sources import PseudoLabels
    from gsimclr.training import pretrain as pretrain_module
    from gsimclr.training import reclustering

    skewed = np.array([0] * 95 + [1] * 5)
    monkeypatch.setattr(reclustering, "encoder_pseudo_labels",
                        lambda *args, **kwargs: PseudoLabels(skewed, None, {"k": 2}))
    data = load_split("digits", image_size=16).subset(np.arange(100))
    cfg = load_config(None, {**tiny_overrides, "epochs": 2, "batch_size": 32, "sampler": "greedy",
                             "sampler_tail": "drop", "pseudo_labels": "encoder", "recluster_warmup": 1, "k": 2})
    with pytest.raises(UserError, match="leaves no batch"):
        pretrain_module.pretrain(cfg, data, tmp_path / "run", method="gsimclr")
