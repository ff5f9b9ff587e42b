"""What every data source shares: the registry that dispatches a ``--data`` spec by its prefix, the
request a source answers, the decoded-image cache plan, and the undecoded listing a store is written from.

A source registers a :class:`DataSource` under its prefix (``digits``, ``cifar10``, ``hf`` ...): a spec
``PREFIX`` or ``PREFIX:ARGUMENT`` goes to it, with ``ARGUMENT`` (or None); any other spec is a path,
answered by the one source registered with ``prefix=False`` (files and folders). :func:`source_for`
does the dispatch that :func:`gsimclr.data.sources.load_split`, :func:`~gsimclr.data.sources.list_encoded`,
the store's path choice and the help all read.

Example:
    >>> import gsimclr.data.sources  # registers the sources
    >>> source, argument = source_for("cifar10:/data/cifar")
    >>> source.form, argument, source.in_memory
    ('cifar10[:ROOT]', '/data/cifar', True)
    >>> source_for("path/to/folder")[0].form
    'FOLDER | PATH.parquet'
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from gsimclr.data import cache as decoded_cache
from gsimclr.data.dataset import ImageData
from gsimclr.errors import UserError
from gsimclr.options import Declares
from gsimclr.registry import Registry

ON_CORRUPT = ("skip", "error")
RESIZES = ("crop", "stretch")

# Folder names (image folders) or file-name prefixes (parquet) that hold each split, in preference order.
SPLIT_ALIASES = {"train": ("train",), "test": ("test", "val", "valid", "validation")}


def split_aliases(split: str) -> tuple[str, ...]:
    return SPLIT_ALIASES.get(split, (split,))


@dataclass(frozen=True)
class Request:
    """What is asked of a source: one ``split`` decoded at ``image_size`` (None: the source's own size),
    unreadable images skipped or an error (``on_corrupt``), through the decoded-image cache or not,
    resized by centre crop or stretch."""

    split: str = "train"
    image_size: int | None = None
    on_corrupt: str = "skip"
    cache: bool = True
    cache_dir: str | None = None
    resize: str = "crop"


@dataclass
class EncodedListing:
    """A split as undecoded images, for writing an encoded store (:mod:`gsimclr.data.store`).

    ``chunks(n)`` yields lists of at most ``n`` ``(name, payload)`` pairs in order, where a payload
    is a file path (str), encoded bytes, or a decoded uint8 (H, W, 3) array; only one chunk is in
    memory at a time, so a sharded parquet set or an ImageNet folder is never read whole.
    ``source_key`` fingerprints the source files (paths, sizes, modification times) and the split.
    """

    name: str
    source_key: str
    count: int
    labels: np.ndarray | None
    classes: list[str] | None
    chunks: Callable[[int], Iterator[list[tuple[str, str | bytes | np.ndarray]]]]


@dataclass(frozen=True)
class DataSource:
    """A registered source. ``load(argument, request)`` gives an :class:`ImageData` or None (no such
    split); ``listing(argument, split)`` an :class:`EncodedListing` or None (default: the decoded arrays,
    listed); ``in_memory``: the source is arrays already, so ``--store auto`` keeps it in memory;
    ``form`` and ``help``: its line in :func:`gsimclr.data.sources.describe_sources`."""

    form: str
    help: str
    load: Callable[[str | None, Request], ImageData | None]
    listing: Callable[[str | None, str], EncodedListing | None] | None = None
    in_memory: bool = True
    prefix: bool = True


def _source_name(spec: str) -> str | None:
    """The registered name of the source ``spec`` goes to (``--data``'s entry)."""
    head, _, _ = spec.partition(":")
    if head and head.lower() in SOURCES and SOURCES[head.lower()].prefix:
        return head.lower()
    return next((name for name, s in SOURCES.items() if not s.prefix), None)


SOURCES = Registry("data source", option="data", pick=_source_name, section="data",
                   commands=("run", "pretrain", "pseudo-label", "supervised"))
"""Data sources by prefix; the entry registered as ``path`` (``prefix=False``) takes every other spec."""


def register_source(name: str, source: DataSource, declares: Declares | None = None) -> DataSource:
    """Register a data source; ``declares``: its options (section data; of the commands that train), checks
    against the rest of the configuration and titles (:class:`gsimclr.options.Declares`)."""
    return SOURCES.register(name, source, declares=declares)


def source_for(spec: str) -> tuple[DataSource, str | None]:
    """The source a spec goes to, and its argument: ``PREFIX[:ARGUMENT]`` by registered prefix (any
    case), anything else to the path source with the spec itself."""
    head, colon, rest = spec.partition(":")
    entry = SOURCES.get(head.lower(), False) if head else False
    if entry and entry.prefix:
        return entry, (rest if colon else None)
    fallback = next(s for s in SOURCES.values() if not s.prefix)
    return fallback, spec


def known_names() -> str:
    """The prefixed spec forms, for messages (``digits, cifar10[:ROOT], ...``)."""
    return ", ".join(s.form for s in SOURCES.values() if s.prefix)


def check_options(image_size: int | None, on_corrupt: str, resize: str = "crop") -> None:
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise UserError(f"image size must be a positive integer, got {image_size!r}")
    if on_corrupt not in ON_CORRUPT:
        raise UserError(f"on_corrupt must be one of {', '.join(ON_CORRUPT)}, got {on_corrupt!r}")
    if resize not in RESIZES:
        raise UserError(f"resize must be one of {', '.join(RESIZES)}, got {resize!r}")


@dataclass
class Plan:
    """What a file-based split needs: its cache key and how to decode it."""

    fingerprint: str
    decode: Callable[[], ImageData]

    def load(self, request: Request) -> ImageData:
        """The decode, through the decoded-image cache when ``request.cache``."""
        return load_through_cache(self, request.cache_dir) if request.cache else self.decode()


def load_through_cache(plan: Plan, cache_dir: str | None) -> ImageData:
    """The cached decode of ``plan`` if present, else decode it and store it."""
    data = decoded_cache.load(plan.fingerprint, cache_dir)
    if data is not None:
        return data
    data = plan.decode()
    try:
        decoded_cache.save(data, cache_dir)
    except (OSError, UserError) as exc:
        warnings.warn(f"could not write the decoded-image cache: {exc}", stacklevel=4)
    return data


def listing_from_arrays(data: ImageData) -> EncodedListing:
    """An in-memory set listed image by image (each payload a decoded array)."""

    def chunks(n: int):
        for start in range(0, len(data), n):
            yield [(f"{data.name} #{i}", data.images[i]) for i in range(start, min(start + n, len(data)))]

    return EncodedListing(data.name, data.fingerprint, len(data), data.labels, data.classes, chunks)
