"""The in-memory image dataset every source produces.

Example:
    >>> import numpy as np
    >>> data = ImageData(np.zeros((4, 32, 32, 3), np.uint8), labels=np.array([0, 1, 0, 1]),
    ...                  classes=["a", "b"], name="toy")
    >>> len(data), data.image_size, data.num_classes
    (4, 32, 2)
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from dataclasses import dataclass, field

import numpy as np


class Labelled:
    """What every image set says of its labels (``labels``: int64 with -1 for unlabelled, or None;
    ``classes``: names or None): :class:`ImageData` and the encoded store share it."""

    @property
    def has_labels(self) -> bool:
        return self.labels is not None and bool((self.labels >= 0).all())

    @property
    def num_classes(self) -> int:
        if self.classes is not None:
            return len(self.classes)
        return int(self.labels.max()) + 1 if self.labels is not None and len(self.labels) else 0

    def with_classes(self, labels: np.ndarray, classes: list[str]) -> "Labelled":
        """The same images with new ``labels`` indexing ``classes`` (see :func:`align_classes`)."""
        raise NotImplementedError


def align_classes(train: Labelled, test: Labelled | None) -> Labelled | None:
    """``test`` with its labels indexing ``train``'s class names, when both name their classes and the
    names differ (a separate test set whose folders or string labels hold other classes): a class name
    the training set lacks is appended after the training set's own, with a warning. Otherwise
    ``test`` itself: a label means the same class in both splits.

    >>> import numpy as np
    >>> train = ImageData(np.zeros((3, 2, 2, 3), np.uint8), np.array([0, 1, 2]), ["a", "b", "c"])
    >>> test = ImageData(np.zeros((2, 2, 2, 3), np.uint8), np.array([0, 1]), ["b", "c"])
    >>> aligned = align_classes(train, test)
    >>> aligned.labels.tolist(), aligned.classes
    ([1, 2], ['a', 'b', 'c'])
    """
    if test is None or train.classes is None or test.classes is None or test.labels is None:
        return test
    if list(test.classes) == list(train.classes):
        return test
    extra = [c for c in test.classes if c not in train.classes]
    if extra:
        warnings.warn(f"the test set has {len(extra)} class(es) the training set lacks: {', '.join(extra[:5])}"
                      f"{', ...' if len(extra) > 5 else ''}", stacklevel=2)
    merged = list(train.classes) + extra
    index = np.array([merged.index(c) for c in test.classes], np.int64)
    labels = np.where(test.labels >= 0, index[np.clip(test.labels, 0, len(index) - 1)], test.labels)
    return test.with_classes(labels, merged)


@dataclass
class ImageData(Labelled):
    """Decoded images as one uint8 array (N, H, W, 3), with optional integer labels.

    ``fingerprint`` identifies the source (path, size, modification time, decoding options) and keys
    the decoded-image cache. ``skipped`` counts unreadable files that were skipped while decoding.
    """

    images: np.ndarray
    labels: np.ndarray | None = None
    classes: list[str] | None = None
    name: str = ""
    fingerprint: str = ""
    skipped: int = 0
    paths: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if len(self.labels) != len(self.images):
                raise ValueError("labels and images differ in length")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def with_classes(self, labels: np.ndarray, classes: list[str]) -> "ImageData":
        digest = hashlib.sha1(repr((np.asarray(labels).tobytes(), classes)).encode()).hexdigest()[:12]
        return dataclasses.replace(self, labels=labels, classes=list(classes),
                                   fingerprint=f"{self.fingerprint}:classes-{digest}")

    def subset(self, index: np.ndarray) -> "ImageData":
        """The images at ``index``, in that order. A run of consecutive indices is a view of the same
        array (no copy, so a memory-mapped cache stays mapped); any other index copies its images."""
        index = np.asarray(index)
        start = int(index[0]) if index.ndim == 1 and index.dtype.kind in "iu" and len(index) else -1
        if start >= 0 and np.array_equal(index, np.arange(start, start + len(index))):
            images = self.images[start:start + len(index)]
        else:
            images = self.images[index]
        return ImageData(
            images,
            None if self.labels is None else self.labels[index],
            self.classes,
            self.name,
            f"{self.fingerprint}:subset-{hashlib.sha1(np.ascontiguousarray(index).tobytes()).hexdigest()[:12]}",
            self.skipped,
        )
