"""On-disk cache of decoded images, so a data set is decoded once.

Each entry is a folder named by the source's fingerprint under the cache root (``cache_dir``, else the
``GSIMCLR_CACHE`` environment variable, else ``~/.cache/gsimclr/decoded``)::

    <root>/<fingerprint>/images.npy   uint8 (N, S, S, 3)
    <root>/<fingerprint>/labels.npy   int64 (N,), only for labelled data
    <root>/<fingerprint>/meta.json    name, classes, skipped count, paths; written last

Every file is written to a temporary file in the same folder and moved into place with
``os.replace``, and ``meta.json`` goes last, so an interrupted run never leaves an entry that loads.
The fingerprint covers everything the decoded pixels depend on: absolute paths, file sizes and
modification times, the split, the decoding options and :data:`FORMAT_VERSION`.

Example:
    >>> import numpy as np, tempfile
    >>> from gsimclr.data.dataset import ImageData
    >>> root = tempfile.mkdtemp()
    >>> key = fingerprint(kind="example", split="train")
    >>> save(ImageData(np.zeros((2, 8, 8, 3), np.uint8), name="toy", fingerprint=key), root)
    >>> load(key, root).name
    'toy'
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from gsimclr.data.dataset import ImageData
from gsimclr.io import atomic_path, ensure_folder

FORMAT_VERSION = 2
"""Bump when decoding changes, so entries written by older code are no longer found."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$GSIMCLR_CACHE``, else ``~/.cache/gsimclr/decoded``."""
    chosen = cache_dir or os.environ.get("GSIMCLR_CACHE") or Path.home() / ".cache" / "gsimclr" / "decoded"
    return Path(chosen).expanduser()


def file_stats(paths: Iterable[str | os.PathLike]) -> list[tuple[str, int, int]]:
    """(absolute path, size in bytes, modification time in ns) of each file, for a fingerprint."""
    stats = []
    for path in paths:
        info = os.stat(path)
        stats.append((os.path.abspath(path), info.st_size, info.st_mtime_ns))
    return stats


def fingerprint(**parts: object) -> str:
    """A short hex digest of ``parts`` (JSON-serialisable) and :data:`FORMAT_VERSION`."""
    text = json.dumps({"format_version": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def load(key: str, cache_dir: str | os.PathLike | None = None) -> ImageData | None:
    """The entry stored under fingerprint ``key``, or None when there is none (or it is unreadable).

    The images are memory-mapped copy-on-write (``mmap_mode="c"``): nothing is read until used, and
    every process on a node that loads the same entry shares one copy of its pages through the page
    cache, while the array stays writable for ``torch.from_numpy`` (a write would stay private).
    """
    entry = cache_root(cache_dir) / key
    try:
        meta = json.loads((entry / "meta.json").read_text())
        images = np.load(entry / "images.npy", mmap_mode="c")
        labels = np.load(entry / "labels.npy") if meta["labelled"] else None
    except (OSError, ValueError, KeyError):
        return None
    return ImageData(images, labels, meta["classes"], meta["name"], key, meta["skipped"], meta["paths"])


def save(data: ImageData, cache_dir: str | os.PathLike | None = None) -> None:
    """Store ``data`` under ``data.fingerprint``, replacing any entry there."""
    entry = ensure_folder(cache_root(cache_dir) / data.fingerprint, "decoded-image cache folder")
    _write_atomic(entry / "images.npy", lambda f: np.save(f, data.images))
    if data.labels is not None:
        _write_atomic(entry / "labels.npy", lambda f: np.save(f, data.labels))
    meta = {
        "name": data.name,
        "classes": data.classes,
        "skipped": data.skipped,
        "paths": data.paths,
        "labelled": data.labels is not None,
    }
    _write_atomic(entry / "meta.json", lambda f: f.write(json.dumps(meta).encode()))


def _write_atomic(path: Path, write: Callable) -> None:
    """Call ``write`` on a temporary binary file next to ``path``, then move it onto ``path``
    (:func:`gsimclr.io.atomic_path`: ordinary permissions; an OS error is a UserError naming the path)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
