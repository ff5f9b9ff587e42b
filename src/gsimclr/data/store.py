"""Encoded image store: a data set written once as JPEG bytes, memory-mapped, read by index.

For data sets whose decoded pixels do not fit in memory (ImageNet: 252 GB at 256 px). Each image is
kept as JPEG bytes whose shorter side is at most ``stored_size`` (aspect ratio kept, so random
resized crops still see the whole image); a JPEG that is already RGB, upright and small enough is
stored byte for byte, anything else is decoded (EXIF orientation applied, transparency on black)
and re-encoded at quality :data:`DEFAULT_QUALITY`. An entry is a folder under the cache root
(:func:`gsimclr.data.cache.cache_root`)::

    <root>/store-<fingerprint>/images.bin      every image's JPEG bytes, back to back
    <root>/store-<fingerprint>/offsets.npy     int64 (N + 1,): image i is images.bin[offsets[i]:offsets[i + 1]]
    <root>/store-<fingerprint>/sizes.npy       int32 (N, 2): stored (height, width)
    <root>/store-<fingerprint>/original_sizes.npy  int32 (N, 2): upright (height, width) before capping
    <root>/store-<fingerprint>/labels.npy      int64 (N,), only for labelled data
    <root>/store-<fingerprint>/blocks.npy      CRC-32 of every MiB of images.bin
    <root>/store-<fingerprint>/meta.json       name, classes, count, stored size, quality, skipped files,
                                               the build's on-corrupt mode, every file's size and checksums

The entry is written in a temporary folder next to it and renamed into place when complete, so an
interrupted or concurrent build never leaves an entry that opens; ``images.bin`` is opened with
``np.memmap`` (read-only), so every process on a node shares one copy through the page cache.

Every open verifies the entry (:mod:`gsimclr.data.checksums`: file sizes, the index and label files'
hashes, a sample of ``images.bin``'s blocks, all of them for a store up to 64 MiB; ``full_check=True``
or ``GSIMCLR_VERIFY=full`` reads every block); labels must index the classes. A damaged entry is set aside and rebuilt (with a
warning); an image that fails to decode while training is a one-line error that removes the entry,
so the next run rebuilds it. A store built with ``on_corrupt="skip"`` that skipped files is not
reused by ``on_corrupt="error"``: that names the first unreadable file, as a fresh build would.
Temporary folders of killed builds are removed by the next build.

Example:
    >>> import numpy as np, tempfile
    >>> from gsimclr.data.sources import list_encoded
    >>> store = build_store(list_encoded("digits", "test"), stored_size=32, cache_dir=tempfile.mkdtemp())
    >>> len(store), store.sizes[0].tolist(), store.classes[:2]
    (360, [32, 32], ['0', '1'])
    >>> store.subset(np.array([5, 0])).labels.tolist() == store.labels[[5, 0]].tolist()
    True
"""

from __future__ import annotations

import io
import json
import mmap
import os
import shutil
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from gsimclr.data import cache as decoded_cache
from gsimclr.data.checksums import (Damaged, entry_lock, full_check_requested, read_sealed, remove_stale, seal,
                                    set_aside, verify, write_manifest)
from gsimclr.data.dataset import Labelled, index_chunks
from gsimclr.data.decode import BatchDecoder, default_backend
from gsimclr.data.prefetch import Prefetcher
from gsimclr.data.sources.base import EncodedListing
from gsimclr.data.sources.decoding import decode_error, to_rgb
from gsimclr.errors import UserError, printable

STORE_VERSION = 1
"""Bump when the stored bytes change for the same source and options."""
DEFAULT_QUALITY = 90
_CHUNK = 512  # images per encoding round (bounded memory while writing)
RELEASE_BYTES = 256 * 2**20
"""Readers unmap the store pages they have read after this many bytes (see ``release_pages``)."""
_ORIENTATION_TAG = 0x0112
_SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees


class EncodedStore(Labelled):
    """A memory-mapped encoded store, or an index view of one (:meth:`subset`).

    ``payload(i)`` is image ``i``'s JPEG bytes (a read-only view into the mapped file), ``sizes`` the
    stored (height, width), ``original_sizes`` the upright size before capping, ``labels`` int64 or
    None, ``fingerprint`` identifies the entry (and the subset).
    """

    def __init__(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray, sizes: np.ndarray,
                 original_sizes: np.ndarray, labels: np.ndarray | None, meta: dict, fingerprint: str,
                 path: Path | None = None, inode: int | None = None):
        self._data, self._starts, self._ends = data, starts, ends
        self.sizes, self.original_sizes, self.labels = sizes, original_sizes, labels
        self.meta, self.fingerprint, self.path = meta, fingerprint, path
        self._inode = inode  # of the images.bin mapped: tells this entry from a rebuilt one

    @classmethod
    def open(cls, entry: str | os.PathLike, full: bool = False) -> "EncodedStore":
        """Map the store in folder ``entry`` after verifying it (``full``: every block of ``images.bin``);
        FileNotFoundError when there is no entry, :class:`~gsimclr.data.checksums.Damaged` when it is
        incomplete, damaged or written by another version."""
        entry = Path(entry)
        if not entry.is_dir():
            raise FileNotFoundError(entry)
        try:
            meta = read_sealed(entry / "meta.json")
        except FileNotFoundError:
            raise Damaged("meta.json is missing") from None
        if meta.get("version") != STORE_VERSION:
            raise Damaged("meta.json is not this version's")
        problem = verify(entry, meta["manifest"], full)
        if problem is not None:
            raise Damaged(problem)
        try:
            count = int(meta["count"])
            offsets = np.load(entry / "offsets.npy")
            sizes, original_sizes = np.load(entry / "sizes.npy"), np.load(entry / "original_sizes.npy")
            labels = np.load(entry / "labels.npy") if meta["labelled"] else None
            inode = os.stat(entry / "images.bin").st_ino
            data = np.memmap(entry / "images.bin", dtype=np.uint8, mode="r")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise Damaged(f"its files are unreadable ({type(exc).__name__})") from None
        _check_index(offsets, sizes, original_sizes, labels, count, len(data), meta.get("classes"))
        return cls(data, offsets[:-1], offsets[1:], sizes, original_sizes, labels, meta, meta["fingerprint"], entry,
                   inode)

    def __len__(self) -> int:
        return len(self._starts)

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def classes(self) -> list[str] | None:
        return self.meta["classes"]

    @property
    def skipped(self) -> int:
        return int(self.meta["skipped"])

    @property
    def stored_size(self) -> int:
        return int(self.meta["stored_size"])

    @property
    def image_size(self) -> int:
        """The capped shorter side (images keep their own aspect ratio)."""
        return self.stored_size

    @property
    def encoded_bytes(self) -> int:
        """Bytes of JPEG data of the images in this store (or view)."""
        return int((self._ends - self._starts).sum())

    def release_pages(self) -> None:
        """Unmap the pages of ``images.bin`` this process has touched (``MADV_DONTNEED``): they stay in
        the page cache for every process, but no longer count in this process's resident memory, so a
        store larger than memory does not show up as resident after an epoch. Reads stay valid."""
        mapping = getattr(self._data, "_mmap", None)
        if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mapping.madvise(mmap.MADV_DONTNEED)

    def payload(self, i: int) -> memoryview:
        """Image ``i``'s JPEG bytes, read through the memory map (no copy)."""
        return memoryview(self._data[int(self._starts[i]):int(self._ends[i])])

    def payloads(self, index) -> list[memoryview]:
        """The JPEG bytes of the images at ``index`` (in that order)."""
        return [self.payload(i) for i in np.asarray(index).reshape(-1)]

    def read(self, index, size: int):
        """The centred square of each image at ``index`` decoded and resized to ``size``: uint8
        ``(len(index), size, size, 3)`` CPU tensor (see :class:`gsimclr.data.dataset.Labelled`)."""
        index = np.asarray(index, np.int64).reshape(-1)
        decoder = BatchDecoder(int(size), views=1, crop=False, workers=1 if len(index) < 64 else None)
        try:
            return self.decode(index, decoder)[0]
        finally:
            decoder.close()

    def batches(self, index=None, size: int | None = None, device="cpu", batch_size: int = 256):
        """As :meth:`gsimclr.data.dataset.Labelled.batches`; the next chunks are decoded in a background
        thread while the caller works on the current one (nvJPEG on a CUDA ``device``)."""
        size = self.image_size if size is None else int(size)
        chunks = index_chunks(len(self), index, batch_size)
        decoder = BatchDecoder(size, views=1, crop=False, backend=default_backend(device))
        try:
            for idx, images in Prefetcher(chunks, lambda step, idx: self.decode(idx, decoder)[0]):
                yield idx, images.to(device, non_blocking=True)
        finally:
            decoder.close()

    def decode(self, index, decoder: BatchDecoder, rng: np.random.Generator | None = None):
        """``decoder``'s crops ``(views, len(index), size, size, 3)`` of the images at ``index``; after
        every :data:`RELEASE_BYTES` read, the pages this process mapped are released (bounded memory)."""
        index = np.asarray(index, np.int64).reshape(-1)
        payloads = self.payloads(index)
        try:
            crops = decoder(payloads, self.sizes[index], np.random.default_rng(0) if rng is None else rng)
        except Exception as exc:  # a damaged image fails in many ways (OSError, SyntaxError, RuntimeError...)
            self._raise_if_damaged(exc)
            raise
        self._read_bytes = getattr(self, "_read_bytes", 0) + sum(len(p) for p in payloads)
        if self._read_bytes > RELEASE_BYTES:
            self.release_pages()
            self._read_bytes = 0
        return crops

    def _raise_if_damaged(self, exc: BaseException) -> None:
        """After a decoding error: when the entry no longer matches its checksums, set it aside (so the
        next run rebuilds it) and raise a one-line :class:`UserError`; otherwise return (not damage)."""
        if self.path is None:
            return
        problem = verify(self.path, self.meta["manifest"], full=True)
        if problem is None:
            return
        outcome = "it was removed: run the command again to rebuild it"
        with entry_lock(self.path):
            try:
                current = os.stat(self.path / "images.bin").st_ino
            except OSError:  # already set aside by another process
                current = None
            if current == self._inode:  # not replaced by a rebuild meanwhile
                try:
                    set_aside(self.path)
                except OSError:
                    outcome = "remove it (the cache folder is not writable) and run the command again"
        raise UserError(f"the JPEG store {self.path} is damaged ({problem}; decoding failed: "
                        f"{' '.join(str(exc).split())[:120]}); {outcome}")

    def content_parts(self) -> list[np.ndarray]:
        """What :func:`gsimclr.data.identity.content_id` hashes (beside the labels and classes): the CRC-32
        of every MiB of ``images.bin`` (written with the store; its bytes themselves when the store has no
        folder), where each image lies in it, and the stored sizes. No image is read."""
        blocks = None
        if self.path is not None:
            try:
                blocks = np.load(self.path / "blocks.npy")
            except (OSError, ValueError):
                blocks = None
        if blocks is None:
            blocks = np.asarray(self._data)
        return [blocks, np.asarray(self._starts), np.asarray(self._ends), np.asarray(self.sizes)]

    def with_classes(self, labels: np.ndarray, classes: list[str]) -> "EncodedStore":
        """The same images with new ``labels`` indexing ``classes`` (see :func:`gsimclr.data.dataset.align_classes`)."""
        digest = decoded_cache.fingerprint(labels=np.asarray(labels, np.int64).tobytes().hex(), classes=classes)[:12]
        return EncodedStore(self._data, self._starts, self._ends, self.sizes, self.original_sizes,
                            np.asarray(labels, np.int64), {**self.meta, "classes": list(classes)},
                            f"{self.fingerprint}:classes-{digest}", self.path, self._inode)

    def subset(self, index) -> "EncodedStore":
        """An index view: the images at ``index`` in that order, sharing the mapped file (no image copy)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        digest = decoded_cache.fingerprint(index=index.tobytes().hex())[:12]
        return EncodedStore(self._data, self._starts[index], self._ends[index], self.sizes[index],
                            self.original_sizes[index], None if self.labels is None else self.labels[index],
                            self.meta, f"{self.fingerprint}:subset-{digest}", self.path, self._inode)


def store_fingerprint(listing: EncodedListing, stored_size: int, quality: int = DEFAULT_QUALITY) -> str:
    """The key of the store of ``listing`` at ``stored_size`` and ``quality``."""
    return decoded_cache.fingerprint(kind="jpeg-store", version=STORE_VERSION, source=listing.source_key,
                                     stored_size=stored_size, quality=quality)


def store_path(key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    return decoded_cache.cache_root(cache_dir) / f"store-{key}"


def build_store(listing: EncodedListing, stored_size: int, cache_dir: str | os.PathLike | None = None,
                quality: int = DEFAULT_QUALITY, on_corrupt: str = "skip", workers: int | None = None,
                rebuild: bool = False, full_check: bool | None = None) -> EncodedStore:
    """The store of ``listing`` (shorter sides capped at ``stored_size``): opened if present and intact
    (``full_check``: read every byte, else the cheap check; None: as ``$GSIMCLR_VERIFY`` says), else
    (re)written.

    Unreadable images are skipped (counted in ``skipped``, with a warning) or, with
    ``on_corrupt="error"``, raise :class:`UserError` naming the first one.
    """
    if not isinstance(stored_size, int) or stored_size < 1:
        raise UserError(f"stored image size must be a positive integer, got {stored_size!r}")
    full = full_check_requested(full_check)
    key = store_fingerprint(listing, stored_size, quality)
    entry = store_path(key, cache_dir)
    if not rebuild:
        try:
            store = _reusable(EncodedStore.open(entry, full), on_corrupt)
        except (OSError, Damaged):
            pass  # absent or damaged: settled under the lock
        else:
            if any(entry.parent.glob(f".{entry.name}-*.tmp")):
                with entry_lock(entry, wait=False) as held:
                    if held:  # no writer now: a killed writer's leftovers
                        remove_stale(entry.parent, f".{entry.name}-*.tmp")
            return store
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        # one writer per entry: the other processes of a node (torchrun) wait here, then open its result
        with entry_lock(entry):
            remove_stale(entry.parent, f".{entry.name}-*.tmp")  # left by a writer that was killed
            if not rebuild:
                try:
                    return _reusable(EncodedStore.open(entry, full), on_corrupt)
                except FileNotFoundError:
                    pass
                except Damaged as damage:
                    warnings.warn(f"the JPEG store {entry} is damaged ({damage}): rebuilding it", stacklevel=2)
            set_aside(entry)
            return _build_entry(entry, listing, key, stored_size, quality, on_corrupt, workers)
    except OSError as exc:  # unreadable images are handled one by one: this is the cache folder, mostly
        where = f"{exc.filename}: " if exc.filename else ""
        raise UserError(f"cannot build the JPEG store {entry}: {where}{exc.strerror or exc} (the cache folder must "
                        "be writable, with room for the store: set GSIMCLR_CACHE)") from None


def _reusable(store: EncodedStore, on_corrupt: str) -> EncodedStore:
    """``store`` when it is what a build with ``on_corrupt`` gives: a store that skipped unreadable files
    is refused under ``on_corrupt="error"``, naming the first one as that build would."""
    if on_corrupt == "error" and store.skipped:
        first = store.meta.get("first_unreadable") or ["an image", "unreadable"]
        raise UserError(f"cannot read image {printable(first[0])} ({first[1]})")
    return store


def _check_index(offsets, sizes, original_sizes, labels, count: int, data_bytes: int, classes) -> None:
    """Raise :class:`Damaged` unless the index arrays describe ``count`` images in ``data_bytes`` bytes
    and the labels (if any) index ``classes`` (or are -1: unlabelled)."""
    if count < 1 or offsets.shape != (count + 1,) or sizes.shape != (count, 2) or original_sizes.shape != (count, 2):
        raise Damaged(f"its index does not describe {count} images")
    if offsets[0] != 0 or int(offsets[-1]) != data_bytes or (np.diff(offsets) <= 0).any() or (sizes < 1).any():
        raise Damaged("its index does not match images.bin")
    if labels is not None:
        top = len(classes) if classes is not None else np.iinfo(np.int64).max
        if labels.shape != (count,) or labels.dtype.kind not in "iu" or (labels < -1).any() or (labels >= top).any():
            raise Damaged("labels.npy holds labels outside the classes")


def _build_entry(entry: Path, listing: EncodedListing, key: str, stored_size: int, quality: int, on_corrupt: str,
                 workers: int | None) -> EncodedStore:
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", suffix=".tmp", dir=entry.parent))
    try:
        _write_entry(tmp, listing, key, stored_size, quality, on_corrupt, workers)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; give it ordinary permissions
        try:
            os.rename(tmp, entry)
        except OSError:  # another process finished the same entry first: use theirs
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        store = _reusable(EncodedStore.open(entry), on_corrupt)
    except Damaged as damage:  # written just now: the disk or another writer changed it
        raise UserError(f"the JPEG store {entry} just written does not verify ({damage}): check the disk") from None
    if store.skipped:
        first = store.meta.get("first_unreadable") or ["an image", "unreadable"]
        warnings.warn(f"skipped {store.skipped} unreadable image(s) in {listing.name}, e.g. {printable(first[0])} "
                      f"({first[1]})", stacklevel=2)
    return store


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_entry(folder: Path, listing: EncodedListing, key: str, stored_size: int, quality: int,
                 on_corrupt: str, workers: int | None) -> None:
    """Encode every image of ``listing`` into ``folder``, in order, a chunk at a time."""
    offsets, sizes, original_sizes, kept = [0], [], [], []
    first_error = None
    position = 0
    with open(folder / "images.bin", "wb") as out, ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for chunk in listing.chunks(_CHUNK):
            results = pool.map(lambda item: _encode_or_error(item[1], stored_size, quality), chunk)
            for (name, _), result in zip(chunk, results):
                if isinstance(result, str):
                    if on_corrupt == "error":
                        raise UserError(f"cannot read image {printable(name)} ({' '.join(result.split())})")
                    first_error = first_error or [str(name), " ".join(result.split())]
                else:
                    data, size, original = result
                    out.write(data)
                    offsets.append(offsets[-1] + len(data))
                    sizes.append(size)
                    original_sizes.append(original)
                    kept.append(position)
                position += 1
        out.flush()
        os.fsync(out.fileno())
    if not kept:
        raise UserError(f"none of the {position} images of {listing.name} could be read, "
                        f"e.g. {printable(first_error[0])}")
    np.save(folder / "offsets.npy", np.asarray(offsets, np.int64))
    np.save(folder / "sizes.npy", np.asarray(sizes, np.int32).reshape(-1, 2))
    np.save(folder / "original_sizes.npy", np.asarray(original_sizes, np.int32).reshape(-1, 2))
    if listing.labels is not None:
        np.save(folder / "labels.npy", np.asarray(listing.labels, np.int64)[np.asarray(kept)])
    small = ["offsets.npy", "sizes.npy", "original_sizes.npy"] + (["labels.npy"] if listing.labels is not None else [])
    meta = {"name": listing.name, "classes": listing.classes, "count": len(kept), "skipped": position - len(kept),
            "first_unreadable": first_error, "on_corrupt": on_corrupt, "stored_size": stored_size,
            "quality": quality, "labelled": listing.labels is not None, "fingerprint": key, "version": STORE_VERSION,
            "manifest": write_manifest(folder, small=small, large=["images.bin"])}
    (folder / "meta.json").write_text(json.dumps(seal(meta)))


def _encode_or_error(payload, stored_size: int, quality: int):
    try:
        return encode_capped(payload, stored_size, quality)
    except Exception as exc:  # corrupt files fail in many ways: OSError, SyntaxError, ValueError...
        return decode_error(exc)


def encode_capped(payload: str | bytes | np.ndarray, stored_size: int, quality: int = DEFAULT_QUALITY):
    """``(jpeg_bytes, (height, width), (original_height, original_width))`` of one image, its shorter
    side capped at ``stored_size``. ``payload`` is a file path, encoded bytes or a uint8 (H, W, 3) array."""
    if isinstance(payload, np.ndarray):
        return _encode_image(Image.fromarray(np.ascontiguousarray(payload)).convert("RGB"), stored_size, quality)
    raw = Path(payload).read_bytes() if isinstance(payload, str) else bytes(payload)
    with Image.open(io.BytesIO(raw)) as img:
        orientation = img.getexif().get(_ORIENTATION_TAG, 1) if hasattr(img, "getexif") else 1
        width, height = img.size
        original = (width, height) if orientation in _SWAPS_SIDES else (height, width)
        if img.format == "JPEG" and img.mode == "RGB" and orientation == 1 and min(height, width) <= stored_size:
            img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            img.load()  # a cheap 1/8-scale decode that still reads every byte: truncated files fail here
            return raw, (height, width), original
        img.draft("RGB", _draft_request(width, height, stored_size))
        upright = to_rgb(ImageOps.exif_transpose(img))
    data, size, _ = _encode_image(upright, stored_size, quality)
    return data, size, original


def _draft_request(width: int, height: int, stored_size: int) -> tuple[int, int]:
    """The size to ask :meth:`PIL.Image.Image.draft` for: its shorter side still at least ``stored_size``."""
    shorter = min(width, height)
    if shorter <= stored_size:
        return width, height
    return max(1, -(-width * stored_size // shorter)), max(1, -(-height * stored_size // shorter))


JPEG_MAX_SIDE = 65_500
"""libjpeg's largest side: a longer image (a 2 x 70,000 strip) is stored scaled down to it, thinner."""


def _encode_image(img: Image.Image, stored_size: int, quality: int):
    width, height = img.size
    original = (height, width)
    target = (width, height)
    if min(width, height) > stored_size:
        scale = stored_size / min(width, height)
        target = (max(stored_size, round(width * scale)), max(stored_size, round(height * scale)))
    if max(target) > JPEG_MAX_SIDE:  # was skipped as unreadable, libjpeg printing its own line
        scale = JPEG_MAX_SIDE / max(target)
        target = (max(1, min(JPEG_MAX_SIDE, round(target[0] * scale))),
                  max(1, min(JPEG_MAX_SIDE, round(target[1] * scale))))
    if target != (width, height):
        width, height = target
        img = img.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue(), (height, width), original
