"""Images as every evaluation reads them, whatever holds them: the in-memory
:class:`~gsimclr.data.dataset.ImageData` or the memory-mapped JPEG :class:`~gsimclr.data.store.EncodedStore`.

Every pixel an evaluation reads comes through :func:`_read`, which reads through the one image
interface both kinds of data provide (:meth:`gsimclr.data.dataset.Labelled.batches`): uint8
``(B, H, W, 3)`` batches on the device at the given indices, at the data's own stored size (the
evaluation transform or the augmentation resizes them to ``image_size``, the same for both kinds).
A store decodes the centred square of each image in a background thread while the model runs, so a
store larger than memory is read batch by batch and never decoded whole.

:class:`LabelledImages` is one labelled split as an evaluation sees it: its labels, its size, the
model inputs of a batch (:meth:`~LabelledImages.inputs`), its frozen features
(:meth:`~LabelledImages.embed`) and the batches of :func:`gsimclr.evaluation.fit.fit`.

Example:
    >>> import numpy as np
    >>> from gsimclr.data.dataset import ImageData
    >>> data = ImageData(np.zeros((5, 8, 8, 3), np.uint8), labels=np.array([0, 1, 0, 1, 1]))
    >>> images = LabelledImages(data, 4, torch.device("cpu"), "test")
    >>> [tuple(x.shape) for x, y in images.in_order(2)]
    [(2, 3, 4, 4), (2, 3, 4, 4), (1, 3, 4, 4)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from gsimclr.data.dataset import ImageData
from gsimclr.data.store import EncodedStore
from gsimclr.errors import UserError
from gsimclr.runtime import autocast, seed_epoch
from gsimclr.transforms.augment import IMAGENET_MEAN, IMAGENET_STD, eval_transform

Images = ImageData | EncodedStore


def _read(data: Images, batches: list[np.ndarray], device: torch.device) -> Iterator[torch.Tensor]:
    """uint8 ``(B, H, W, 3)`` images of ``data`` at each index array of ``batches`` (any sizes), on ``device``,
    read in order through ``data.batches`` (see the module docstring)."""
    if not batches:
        return
    flat = np.concatenate([np.asarray(b, np.int64).reshape(-1) for b in batches])
    chunks = (images for _, images in data.batches(flat, None, device, max(1, max(len(b) for b in batches))))
    pending: list[torch.Tensor] = []
    for index in batches:
        parts, need = [], len(index)
        while need:
            part = pending.pop() if pending else next(chunks)
            if len(part) > need:
                part, rest = part[:need], part[need:]
                pending.append(rest)
            parts.append(part)
            need -= len(part)
        yield parts[0] if len(parts) == 1 else torch.cat(parts)


def read_in_order(data: Images, device: torch.device, batch_size: int = 512) -> Iterator[torch.Tensor]:
    """Every image of ``data`` in order, in uint8 batches of ``batch_size`` on ``device`` (see :func:`_read`)."""
    return _read(data, [np.arange(i, min(i + batch_size, len(data))) for i in range(0, len(data), batch_size)],
                 device)


class LabelledImages:
    """A labelled split of an evaluation: ``data`` (in memory or a store) at ``image_size``, normalised
    with ``mean``/``std``, its batches on ``device``. ``role`` names the split in error messages
    ("training", "test", ...)."""

    def __init__(self, data: Images, image_size: int, device: torch.device, role: str,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        if data.labels is None or not data.has_labels:
            raise UserError(f"the evaluation needs labelled {role} images")
        if len(data) == 0:
            raise UserError(f"the evaluation has no {role} images")
        self.data, self.image_size, self.device, self.role = data, image_size, torch.device(device), role
        self.mean, self.std = tuple(mean), tuple(std)
        self.labels = torch.from_numpy(np.asarray(data.labels)).long()

    def __len__(self) -> int:
        return len(self.data)

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def subset(self, index: np.ndarray, role: str | None = None) -> "LabelledImages":
        """The images at ``index``, in that order (duplicates kept)."""
        return LabelledImages(self.data.subset(np.asarray(index)), self.image_size, self.device, role or self.role,
                              self.mean, self.std)

    def pixels(self, batches: Iterable[np.ndarray]) -> Iterator[torch.Tensor]:
        """uint8 images at each index array of ``batches``, on the device."""
        return _read(self.data, list(batches), self.device)

    def inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        """Model inputs of uint8 ``pixels``: the evaluation transform, channels last."""
        x = eval_transform(pixels, self.image_size, self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last)

    def in_order(self, batch_size: int, order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(inputs, labels) batches of every image, in order (or in ``order``)."""
        index = np.arange(len(self)) if order is None else np.asarray(order)
        batches = [index[i:i + batch_size] for i in range(0, len(index), batch_size)]
        for idx, pixels in zip(batches, self.pixels(batches)):
            yield self.inputs(pixels), self.labels[torch.from_numpy(idx)].to(self.device)

    @torch.no_grad()
    def embed(self, fn: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 512,
              precision: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
        """(``fn`` of every image as float32, labels), both on the device: frozen features, computed once."""
        parts, labels = [], []
        for x, y in self.in_order(batch_size):
            with autocast(self.device, precision):
                parts.append(fn(x).float())
            labels.append(y)
        return torch.cat(parts), torch.cat(labels)

    def training(self, augment: Callable[[torch.Tensor], torch.Tensor] | None = None, seed: int = 0,
                 stream: int = 0) -> "AugmentedBatches":
        """The batch source of :func:`gsimclr.evaluation.fit.fit`: each batch augmented by ``augment`` (its
        random draws seeded per epoch by (``seed``, ``stream`` + epoch)), or only the evaluation transform."""
        return AugmentedBatches(self, augment, seed, stream)


class AugmentedBatches:
    """(inputs, labels) training batches of :class:`LabelledImages` (see :meth:`LabelledImages.training`)."""

    def __init__(self, images: LabelledImages, augment, seed: int, stream: int):
        self.images, self.augment, self.seed, self.stream = images, augment, seed, stream

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, order: list[torch.Tensor], epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images = self.images
        if self.augment is None:
            transform = images.inputs
        else:
            seed_epoch(self.seed, self.stream + epoch)
            def transform(pixels):
                return self.augment(pixels).contiguous(memory_format=torch.channels_last)
        index = [idx.cpu().numpy() for idx in order]
        for idx, pixels in zip(order, images.pixels(index)):
            yield transform(pixels), images.labels[idx.cpu()].to(images.device, non_blocking=True)


class TensorBatches:
    """(features, labels) training batches of tensors already on the device (a head on frozen features)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, order: list[torch.Tensor], epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in order:
            idx = idx.to(self.x.device)
            yield self.x[idx], self.y[idx]

