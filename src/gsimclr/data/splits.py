"""Index subsets of a labelled data set: the stratified hold-out split that stands in for a missing
test split, and the stratified label fraction used for fine-tuning.

Example:
    >>> import numpy as np
    >>> labels = np.array([0] * 10 + [1] * 5 + [2])
    >>> keep, held = holdout_split(labels, 0.2, seed=0)
    >>> sorted(set(labels[keep].tolist())), len(held)
    ([0, 1, 2], 3)
    >>> idx = label_subset(np.repeat(np.arange(3), 10), 0.2, seed=0)
    >>> len(idx)
    6
"""

from __future__ import annotations

import numpy as np


def label_subset(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A stratified ``fraction`` of the indices, at least one per class, sorted."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picks.append(rng.choice(idx, max(1, round(fraction * len(idx))), replace=False))
    return np.sort(np.concatenate(picks))


def holdout_split(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices, both sorted: a stratified ``fraction`` of each class is held out, at
    least one image of a class with two or more, and never a class's last image (a class with one
    image stays in training). The same draws as :func:`label_subset` for classes of two or more."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue
        held.append(rng.choice(idx, min(len(idx) - 1, max(1, round(fraction * len(idx)))), replace=False))
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(labels)), held_idx), held_idx
