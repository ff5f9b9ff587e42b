"""Batches of an encoded store, decoded and cropped in the background, and the choice of path.

The training loop either indexes one decoded uint8 array (the in-memory path, fastest while the
decoded set fits) or reads an :class:`~gsimclr.data.store.EncodedStore`: :func:`store_views` walks
the loop's batch sampler in a background thread (:class:`~gsimclr.data.prefetch.Prefetcher`), gathers
each batch's JPEG bytes through the memory map and decodes them into random resized crops
(:class:`~gsimclr.data.decode.BatchDecoder`) while the current step runs. Each batch's crops come from
its own random stream, seeded by (seed, epoch, rank, step), so they do not depend on thread timing.
:func:`choose_store` picks the path for ``store: auto``.

Example:
    >>> import tempfile
    >>> from gsimclr.data.decode import BatchDecoder
    >>> from gsimclr.data.sources import list_encoded
    >>> from gsimclr.data.store import build_store
    >>> store = build_store(list_encoded("digits", "test"), 32, cache_dir=tempfile.mkdtemp())
    >>> batches = [[0, 1, 2], [3, 4, 5]]
    >>> [tuple(v.shape) for _, v in store_views(store, BatchDecoder(16), batches, seed=0, epoch=0)]
    [(2, 3, 16, 16, 3), (2, 3, 16, 16, 3)]
    >>> choose_store("auto", count=1_281_167, image_size=224, budget_bytes=24 * 2**30)
    'jpeg'
"""

from __future__ import annotations

import os

import numpy as np

from gsimclr.data.dataset import ImageData
from gsimclr.data.decode import BatchDecoder
from gsimclr.data.prefetch import Prefetcher
from gsimclr.data.sources import in_memory_source, list_encoded, load_split
from gsimclr.data.store import EncodedStore, build_store
from gsimclr.config import choices_of
from gsimclr.errors import UserError

STORE_MODES = tuple(choices_of("store"))  # the --store option owns the names
MEMORY_FRACTION = 0.5
"""``store: auto`` keeps decoded images in memory while they take at most this share of the RAM."""


def memory_budget() -> int:
    """Bytes of decoded images ``store: auto`` keeps in memory: half of this machine's physical memory
    (one decoded copy per node: the decoded cache is memory-mapped and shared by its processes)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 * 2**30
    return int(total * MEMORY_FRACTION)


def choose_store(mode: str, count: int, image_size: int, budget_bytes: int | None = None) -> str:
    """``"memory"`` or ``"jpeg"``: ``mode`` itself unless ``"auto"``, which picks memory while
    ``count`` decoded ``image_size`` x ``image_size`` RGB images fit in ``budget_bytes``."""
    if mode not in STORE_MODES:
        raise UserError(f"store must be one of {', '.join(STORE_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    budget = memory_budget() if budget_bytes is None else budget_bytes
    return "memory" if count * image_size * image_size * 3 <= budget else "jpeg"


def store_views(store: EncodedStore, decoder: BatchDecoder, batches, seed: int, epoch: int, rank: int = 0,
                depth: int = 2, pin: bool = False) -> Prefetcher:
    """Iterate ``(indices, crops)`` over ``batches`` (a batch sampler), ``crops`` uint8
    ``(views, len(indices), size, size, 3)``, decoded ``depth`` batches ahead in a background thread;
    ``pin`` puts them in pinned memory for an asynchronous copy to the GPU."""

    def load(step: int, indices) -> object:
        crops = store.decode(indices, decoder, np.random.default_rng([seed, epoch, rank, step]))
        return crops.pin_memory() if pin and crops.device.type == "cpu" else crops

    return Prefetcher(batches, load, depth)


def sequential_batches(count: int, batch_size: int) -> list[np.ndarray]:
    """``range(count)`` in batches of ``batch_size``, in order (for feature extraction)."""
    return [np.arange(s, min(s + batch_size, count)) for s in range(0, count, batch_size)]


def open_split(spec: str, split: str, stored_size: int, store: str = "auto", on_corrupt: str = "skip",
               budget_bytes: int | None = None, cache_dir: str | None = None,
               resize: str = "crop") -> ImageData | EncodedStore | None:
    """One split of ``spec`` on the path ``store`` picks (:func:`choose_store`): an :class:`ImageData`
    decoded at ``stored_size`` (memory) or an :class:`EncodedStore` with shorter sides capped at
    ``stored_size`` (jpeg); None when the source has no such split. Built-in and torchvision sources
    (digits, CIFAR, STL-10) and Hugging Face data sets are arrays in memory already, so ``auto`` keeps
    them there. ``resize`` (crop or stretch) applies to decoded images; a store keeps each image's aspect
    ratio and crops from it."""
    if store == "memory" or (store == "auto" and in_memory_source(spec)):
        return load_split(spec, split, image_size=stored_size, on_corrupt=on_corrupt, cache_dir=cache_dir,
                          resize=resize)
    listing = list_encoded(spec, split)
    if listing is None:
        return None
    if choose_store(store, listing.count, stored_size, budget_bytes) == "memory":
        return load_split(spec, split, image_size=stored_size, on_corrupt=on_corrupt, cache_dir=cache_dir,
                          resize=resize)
    return build_store(listing, stored_size, cache_dir, on_corrupt=on_corrupt)


def decoded(data: ImageData | EncodedStore, size: int, purpose: str, budget_bytes: int | None = None,
            batch_size: int = 256) -> ImageData:
    """``data`` as decoded images: itself for an :class:`ImageData`; for a store, the centred square of
    every image resized to ``size`` (what the evaluation transform sees), when that fits the memory
    budget, else a :class:`UserError` saying that ``purpose`` needs it."""
    if not isinstance(data, EncodedStore):
        return data
    need = len(data) * size * size * 3
    budget = memory_budget() if budget_bytes is None else budget_bytes
    if need > budget:
        raise UserError(f"{purpose} needs the {len(data)} images decoded ({need / 1e9:.1f} GB at {size} px), more "
                        f"than the memory budget ({budget / 1e9:.1f} GB): raise --memory-budget-gb, lower "
                        "--image-size or --train-limit/--test-limit, or use the linear and kNN evaluations alone")
    images = np.empty((len(data), size, size, 3), np.uint8)
    for indices, batch in data.batches(None, size, "cpu", batch_size):
        images[indices] = batch.numpy()
    return ImageData(images, data.labels, data.classes, data.name, f"{data.fingerprint}:decoded-{size}", data.skipped)
