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
    """What every image set provides, :class:`ImageData` (decoded, in memory) and the encoded store
    (:class:`gsimclr.data.store.EncodedStore`) alike: ``len()``, ``labels`` (int64 with -1 for
    unlabelled, or None), ``classes`` (names or None), ``name``, ``fingerprint``, ``subset(index)``,
    and the pixels through one interface, so no consumer asks which kind it holds:

    - :meth:`read` ``(index, size)``: uint8 ``(B, size, size, 3)`` CPU tensor of the images at
      ``index`` (in that order);
    - :meth:`batches` ``(index, size, device, batch_size)``: ``(idx, images)`` pairs over ``index``
      (None: every image in order) in chunks of ``batch_size``, ``images`` as :meth:`read` gives them
      but on ``device`` (a store decodes the next chunks in a background thread meanwhile).

    The pixels are the evaluation view of each image: an :class:`ImageData` gives its decoded images
    (already the centred square, or stretched, at load time), resized with the evaluation transform's
    antialiased bilinear filter only when ``size`` differs from its ``image_size`` (then rounded to
    uint8); a store gives the centred square of each image's shorter side decoded and resized to
    ``size``. Pass them through :func:`gsimclr.transforms.augment.eval_transform` (or any augmentation)
    on the device. Images at ``size`` in both give the same pixels (bit for bit when the store keeps
    the source JPEG bytes, else within JPEG's tolerance).
    """

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, index, size: int):
        """uint8 ``(len(index), size, size, 3)`` CPU tensor of the images at ``index`` (see the class)."""
        raise NotImplementedError

    def batches(self, index=None, size: int | None = None, device="cpu", batch_size: int = 256):
        """Iterate ``(idx, images)``: ``idx`` int64 (B,) positions in this set, taken from ``index`` (None:
        ``range(len(self))``) ``batch_size`` at a time in that order; ``images`` uint8 ``(B, size, size, 3)``
        on ``device`` (see the class). ``size`` None is the set's ``image_size``."""
        size = self.image_size if size is None else int(size)
        for idx in index_chunks(len(self), index, batch_size):
            yield idx, self.read(idx, size).to(device, non_blocking=True)

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


def index_chunks(count: int, index, batch_size: int) -> list[np.ndarray]:
    """``index`` (None: ``range(count)``) as int64 chunks of ``batch_size``, in order; an index outside
    ``[0, count)`` is an IndexError.

    >>> [c.tolist() for c in index_chunks(5, None, 2)]
    [[0, 1], [2, 3], [4]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = np.arange(count, dtype=np.int64) if index is None else np.asarray(index, np.int64).reshape(-1)
    if len(order) and (order.min() < 0 or order.max() >= count):
        raise IndexError(f"image index out of range [0, {count})")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


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

    def read(self, index, size: int):
        import torch

        index = np.asarray(index, np.int64).reshape(-1)
        start = int(index[0]) if len(index) else 0
        if len(index) and np.array_equal(index, np.arange(start, start + len(index))):
            images = torch.from_numpy(np.ascontiguousarray(self.images[start:start + len(index)]))
        else:
            images = torch.from_numpy(self.images[index])
        return resize_uint8(images, size)

    def batches(self, index=None, size: int | None = None, device="cpu", batch_size: int = 256):
        size = self.image_size if size is None else int(size)
        for idx in index_chunks(len(self), index, batch_size):
            images = self.read(idx, self.image_size).to(device, non_blocking=True)
            yield idx, resize_uint8(images, size)  # resized on the device

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


def resize_uint8(images, size: int):
    """uint8 ``(N, H, W, 3)`` images resized to ``size`` x ``size`` on their device with the evaluation
    transform's antialiased bilinear filter (:func:`gsimclr.transforms.augment.resize`), rounded back to
    uint8; the images themselves when they have that size already."""
    if tuple(images.shape[1:3]) == (size, size):
        return images
    from gsimclr.transforms.augment import resize, to_float

    out = resize(to_float(images), size).mul_(255).round_().clamp_(0, 255).to(images.dtype)
    return out.permute(0, 2, 3, 1).contiguous()
