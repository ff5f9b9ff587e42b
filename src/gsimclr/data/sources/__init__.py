"""Load a data set split from a short spec string into an :class:`ImageData`, or list it undecoded
for the encoded store.

One module per kind of source, each registering itself by prefix in :data:`SOURCES`
(:mod:`~gsimclr.data.sources.base`): ``digits`` (:mod:`.digits`), ``cifar10[:ROOT]`` and the other
torchvision sets (:mod:`.torchvision_sets`), ``hf:NAME[:CONFIG]`` (:mod:`.hf`), and every other spec
a path (:mod:`.paths`: :mod:`.parquet` files or an image :mod:`.folder`). :func:`load_split`,
:func:`list_encoded`, :func:`describe_sources`, the store's choice of path (:func:`in_memory_source`)
and error messages all read that registry; adding a source is one module and one registration
(imported below).

Images always come out as upright RGB uint8 arrays of one square size (:mod:`.decoding`). Decoded
parquet, image-folder and Hugging Face data is cached on disk (:mod:`gsimclr.data.cache`), so only
the first load decodes. scikit-learn, pyarrow, torchvision and datasets are imported only by the
sources that need them.

Example:
    >>> train = load_split("digits")
    >>> train.images.shape, train.classes[:3]
    ((1437, 32, 32, 3), ['0', '1', '2'])
    >>> load_split("digits", "test", image_size=16).images.shape
    (360, 16, 16, 3)
"""

from __future__ import annotations

import warnings

from gsimclr.data.dataset import ImageData
# the sources register themselves on import, in this order (the help's)
from gsimclr.data.sources import digits, paths, torchvision_sets, hf  # noqa: F401, I001
from gsimclr.data.sources.base import (ON_CORRUPT, RESIZES, SOURCES, SPLIT_ALIASES, DataSource, EncodedListing,
                                           Request, check_options, known_names, listing_from_arrays,
                                           register_source, source_for)
from gsimclr.data.sources.decoding import DEFAULT_IMAGE_SIZE
from gsimclr.data.sources.folder import IMAGE_EXTENSIONS
from gsimclr.data.sources.hf import HUB_PROBE_SECONDS, hub_reachable
from gsimclr.data.sources.torchvision_sets import DEFAULT_TORCHVISION_ROOT

__all__ = ["check_spec", "DEFAULT_IMAGE_SIZE", "DEFAULT_TORCHVISION_ROOT", "HUB_PROBE_SECONDS", "IMAGE_EXTENSIONS", "ON_CORRUPT",
           "RESIZES", "SOURCES", "SPLIT_ALIASES", "DataSource", "EncodedListing", "Request", "describe_sources",
           "hub_reachable", "in_memory_source", "known_names", "list_encoded", "load_split", "register_source",
           "source_for"]


def describe_sources() -> str:
    """A short help text listing the accepted spec forms (one line per registered source)."""
    width = max(len(s.form) for s in SOURCES.values()) + 2
    return "Data sources (--data SPEC):\n" + "\n".join(f"  {s.form:<{width}} {s.help}" for s in SOURCES.values())


def load_split(
    spec: str,
    split: str = "train",
    image_size: int | None = None,
    on_corrupt: str = "skip",
    cache: bool = True,
    cache_dir: str | None = None,
    resize: str = "crop",
) -> ImageData | None:
    """Load one split of the data set named by ``spec``; None when the source has no such split.

    ``image_size`` is the square output size (default: see :mod:`.decoding`). ``on_corrupt`` is
    ``"skip"`` (drop unreadable images, count them in ``ImageData.skipped`` and warn) or ``"error"``
    (raise :class:`UserError` naming the file). ``cache`` and ``cache_dir`` control the decoded-image
    cache. ``resize`` is ``"crop"`` or ``"stretch"`` (image files only: both sides resized, ignoring the
    aspect ratio, as the ImageNet notebooks' ``cv2.resize``). Raises :class:`UserError` for a missing
    path, an unknown spec or a source without images.
    """
    check_options(image_size, on_corrupt, resize)
    source, argument = source_for(spec)
    data = source.load(argument, Request(split, image_size, on_corrupt, cache, cache_dir, resize))
    if data is not None and data.skipped:
        warnings.warn(f"skipped {data.skipped} unreadable image(s) or broken link(s) in {spec} ({split}); "
                      "--on-corrupt error stops at the first, naming it", stacklevel=2)
    return data


def list_encoded(spec: str, split: str = "train") -> EncodedListing | None:
    """The images of one split of ``spec`` without decoding them; None when there is no such split.

    Image folders (ImageNet-style ``train/<wnid>/*.JPEG`` and ``val/<wnid>/...``) and parquet files or
    sharded parquet folders (``train-00000-of-00004.parquet`` ...) are listed file by file and row
    group by row group; the sources that are arrays already (digits, CIFAR, STL-10, ``hf:``) are read
    as their decoded arrays.
    """
    source, argument = source_for(spec)
    if source.listing is not None:
        return source.listing(argument, split)
    data = source.load(argument, Request(split, None, "error", cache=False))
    return None if data is None else listing_from_arrays(data)


def in_memory_source(spec: str) -> bool:
    """Whether ``spec``'s source is arrays in memory already (``--store auto`` keeps them there)."""
    return source_for(spec)[0].in_memory


def check_spec(spec: str) -> None:
    """A UserError when ``spec`` cannot name data: a path that does not exist or is not parquet nor a
    folder, or an unknown name. Only local facts are checked (nothing is read or downloaded), so that a
    typo fails before any heavy import or work."""
    source, _ = source_for(spec)
    if not source.prefix:
        paths.check_path(spec)
