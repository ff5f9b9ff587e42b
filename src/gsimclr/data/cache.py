"""On-disk cache of decoded images, so a data set is decoded once.

Each entry is a folder named by the source's fingerprint under the cache root (``cache_dir``, else the
``GSIMCLR_CACHE`` environment variable, else ``~/.cache/gsimclr/decoded``)::

    <root>/<fingerprint>/images.npy   uint8 (N, S, S, 3)
    <root>/<fingerprint>/labels.npy   int64 (N,), only for labelled data
    <root>/<fingerprint>/blocks.npy   CRC-32 of every MiB of images.npy
    <root>/<fingerprint>/meta.json    name, classes, skipped count, paths, every file's size and
                                      checksums; written last

Every file is written to a temporary file in the same folder and moved into place with
``os.replace``, and ``meta.json`` goes last, so an interrupted run never leaves an entry that loads.
Writers hold a lock (``<root>/.<fingerprint>.lock``); temporary files left by a killed writer are
removed by the next load or save. Every load verifies the entry against its checksums
(:mod:`gsimclr.data.checksums`; ``full=True`` reads every byte) and checks that its labels index its
classes: a damaged entry is removed, with a warning, and the data decoded again.
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
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from gsimclr.data.checksums import (Damaged, entry_lock, full_check_requested, read_sealed, remove_stale, seal, set_aside,
                                    verify, write_manifest)
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


def load(key: str, cache_dir: str | os.PathLike | None = None, full: bool | None = None) -> ImageData | None:
    """The entry stored under fingerprint ``key``, or None when there is none, or it was damaged (then it
    is removed, with a warning). ``full`` verifies every byte (else sizes, hashes and sampled blocks;
    None: as ``$GSIMCLR_VERIFY`` says).

    The images are memory-mapped copy-on-write (``mmap_mode="c"``): nothing is read until used, and
    every process on a node that loads the same entry shares one copy of its pages through the page
    cache, while the array stays writable for ``torch.from_numpy`` (a write would stay private).
    """
    entry = cache_root(cache_dir) / key
    full = full_check_requested(full)
    if not entry.is_dir():
        return None
    if any(entry.glob(".*.tmp")):
        with entry_lock(entry, wait=False) as held:
            if held:  # no writer now: the temporary files are a killed writer's
                remove_stale(entry, ".*.tmp")
    problem = _problem(entry, full)
    if problem is None:
        return _open(entry, key)
    with entry_lock(entry) as _:
        problem = _problem(entry, full)  # a writer may have finished it meanwhile
        if problem is None:
            return _open(entry, key)
        if problem != "meta.json is missing":  # else: never completed (an interrupted write), not damage
            warnings.warn(f"the decoded-image cache entry {entry} is damaged ({problem}): decoding again",
                          stacklevel=3)
        try:
            set_aside(entry)
        except OSError:  # a read-only cache: decoded again every time, and not written (see save)
            pass
    return None


def verify_all(cache_dir: str | os.PathLike | None = None, full: bool = True) -> dict[str, str | None]:
    """Check every entry under the cache root (decoded entries and JPEG stores alike, every byte unless
    ``full`` is False): entry folder name -> what is wrong, or None when intact. Nothing is removed."""
    root = cache_root(cache_dir)
    found = {}
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        if entry.is_dir() and not entry.name.startswith("."):
            found[entry.name] = _problem(entry, full)
    return found


def _problem(entry: Path, full: bool) -> str | None:
    """What is wrong with the entry in folder ``entry``, or None when it is complete and intact."""
    try:
        meta = read_sealed(entry / "meta.json")
    except FileNotFoundError:
        return "meta.json is missing"
    except Damaged as damage:
        return str(damage)
    problem = verify(entry, meta["manifest"], full)
    if problem is None and meta.get("labelled"):
        try:
            labels = np.load(entry / "labels.npy")
        except (OSError, ValueError) as exc:
            return f"labels.npy is unreadable ({type(exc).__name__})"
        top = len(meta["classes"]) if meta.get("classes") is not None else np.iinfo(np.int64).max
        if labels.dtype.kind not in "iu" or (labels < -1).any() or (labels >= top).any():
            return "labels.npy holds labels outside the classes"
    return problem


def _open(entry: Path, key: str) -> ImageData | None:
    try:
        meta = json.loads((entry / "meta.json").read_text())
        images = np.load(entry / "images.npy", mmap_mode="c")
        labels = np.load(entry / "labels.npy") if meta["labelled"] else None
        data = ImageData(images, labels, meta["classes"], meta["name"], key, meta["skipped"], meta["paths"])
        if isinstance(meta.get("content_id"), str):   # computed when stored (gsimclr.data.identity)
            from gsimclr.data.identity import remember

            remember(data, meta["content_id"])
        return data
    except (OSError, ValueError, KeyError, TypeError):  # changed between the check and the open
        return None


def save(data: ImageData, cache_dir: str | os.PathLike | None = None) -> None:
    """Store ``data`` under ``data.fingerprint``, replacing any entry there."""
    from gsimclr.data.identity import content_id

    entry = ensure_folder(cache_root(cache_dir) / data.fingerprint, "decoded-image cache folder")
    with entry_lock(entry):
        remove_stale(entry, ".*.tmp")
        (entry / "meta.json").unlink(missing_ok=True)  # the entry does not load while it is rewritten
        _write_atomic(entry / "images.npy", lambda f: np.save(f, data.images))
        if data.labels is not None:
            _write_atomic(entry / "labels.npy", lambda f: np.save(f, data.labels))
        meta = {
            "name": data.name,
            "classes": data.classes,
            "skipped": data.skipped,
            "paths": data.paths,
            "labelled": data.labels is not None,
            "content_id": content_id(data),   # what resume compares, computed once here (gsimclr.data.identity)
            "manifest": write_manifest(entry, small=["labels.npy"] if data.labels is not None else [],
                                       large=["images.npy"]),
        }
        _write_atomic(entry / "meta.json", lambda f: f.write(json.dumps(seal(meta)).encode()))


def _write_atomic(path: Path, write: Callable) -> None:
    """Call ``write`` on a temporary binary file next to ``path``, then move it onto ``path``
    (:func:`gsimclr.io.atomic_path`: ordinary permissions; an OS error is a UserError naming the path)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
