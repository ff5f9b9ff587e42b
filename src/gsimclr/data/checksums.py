"""Checksums that let every stored artefact (JPEG store entries, decoded-cache entries) verify itself.

A manifest, written into the entry's ``meta.json`` when the entry is complete, records every file's
size and checksums: a SHA-256 of each small file (indices, labels) and a CRC-32 of every
:data:`BLOCK` bytes of each large one (``images.bin``, ``images.npy``), kept in ``blocks.npy``.
:func:`verify` checks an entry against its manifest:

- ``full=False`` (on every open, cheap): the sizes, the small files' hashes, and a sample of the
  large files' blocks (the first, the last and :data:`SAMPLED_BLOCKS` spread between them); every
  block when a large file is at most :data:`FULL_CHECK_BYTES`.
- ``full=True`` (on demand): every block.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "small.bin").write_bytes(b"abc"); _ = (folder / "big.bin").write_bytes(bytes(3000))
    >>> manifest = write_manifest(folder, small=["small.bin"], large=["big.bin"])
    >>> verify(folder, manifest) is None
    True
    >>> _ = (folder / "big.bin").write_bytes(bytes(2999) + b"x")
    >>> verify(folder, manifest)
    'big.bin differs from its checksum (block 0)'
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

BLOCK = 2**20
"""Bytes per CRC-32 block of a large file."""
SAMPLED_BLOCKS = 32
"""Blocks (besides the first and the last) a cheap check reads of a large file."""
FULL_CHECK_BYTES = 64 * 2**20
"""A large file up to this size is checked whole even by the cheap check."""
BLOCKS_FILE = "blocks.npy"
VERIFY_ENV = "GSIMCLR_VERIFY"
"""``GSIMCLR_VERIFY=full``: every open of a store or decoded-cache entry reads and checks every byte."""


def full_check_requested(full: bool | None = None) -> bool:
    """``full`` itself when given, else whether ``$GSIMCLR_VERIFY`` asks for full checks (``full``;
    ``sampled`` or unset: the cheap check); any other value is a one-line error."""
    if full is not None:
        return full
    mode = os.environ.get(VERIFY_ENV, "sampled").strip().lower() or "sampled"
    if mode not in ("sampled", "full"):
        from gsimclr.errors import UserError

        raise UserError(f"{VERIFY_ENV} must be sampled or full, got {os.environ[VERIFY_ENV]!r}")
    return mode == "full"


class Damaged(Exception):
    """A stored entry that is incomplete or differs from its checksums; the message says how (one line)."""


def set_aside(entry: Path) -> None:
    """Move a damaged entry out of the way (renamed to a hidden ``.<name>-damaged-*.tmp`` beside it, which
    the next writer's clean-up removes, then deleted): processes that still map its files keep them."""
    import shutil
    import tempfile

    entry = Path(entry)
    if not entry.exists():
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{entry.name}-damaged-", suffix=".tmp", dir=entry.parent))
    os.rename(entry, aside / entry.name)
    shutil.rmtree(aside, ignore_errors=True)


def remove_stale(folder: Path, pattern: str) -> None:
    """Delete what matches ``pattern`` in ``folder`` (temporary files and folders of killed writers);
    call it only while holding the lock that every writer of those files holds."""
    import shutil

    for stale in Path(folder).glob(pattern):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            try:
                stale.unlink(missing_ok=True)
            except OSError:  # a read-only cache: left for a writer that can
                pass


def seal(meta: dict) -> dict:
    """``meta`` with a ``checksum`` of its own content, so that an edited ``meta.json`` does not verify."""
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return {**body, "checksum": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()}


def read_sealed(path: Path) -> dict:
    """The ``meta.json`` at ``path`` (written through :func:`seal`), or :class:`Damaged` saying why not:
    missing (FileNotFoundError passes through), not JSON, or edited since it was sealed."""
    try:
        meta = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise Damaged(f"meta.json is unreadable ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or "manifest" not in meta or "checksum" not in meta:
        raise Damaged("it has no checksums (written by an older gsimclr)")
    if seal(meta)["checksum"] != meta["checksum"]:
        raise Damaged("meta.json differs from its checksum")
    return meta


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(BLOCK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def block_crcs(path: Path) -> np.ndarray:
    """CRC-32 of every :data:`BLOCK` bytes of ``path`` (uint32, one per block; the last may be short)."""
    crcs = []
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(BLOCK), b""):
            crcs.append(zlib.crc32(chunk))
    return np.asarray(crcs, np.uint32)


def write_manifest(folder: Path, small: list[str], large: list[str]) -> dict:
    """Checksum the files of a complete entry in ``folder`` (``small``: hashed whole; ``large``: by
    block, the CRCs written to ``blocks.npy``, itself hashed). Returns the manifest for ``meta.json``."""
    folder = Path(folder)
    offsets, crcs = {}, []
    for name in large:
        blocks = block_crcs(folder / name)
        offsets[name] = [len(crcs), len(crcs) + len(blocks)]
        crcs.extend(blocks.tolist())
    np.save(folder / BLOCKS_FILE, np.asarray(crcs, np.uint32))
    names = [*small, *large, BLOCKS_FILE]
    return {"sizes": {name: os.path.getsize(folder / name) for name in names},
            "sha256": {name: sha256(folder / name) for name in [*small, BLOCKS_FILE]},
            "blocks": offsets}


def verify(folder: Path, manifest: dict, full: bool = False) -> str | None:
    """None when the files in ``folder`` match ``manifest``, else what is wrong (one line)."""
    folder = Path(folder)
    try:
        for name, size in manifest["sizes"].items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size} bytes, {size} when written"
        for name, digest in manifest["sha256"].items():
            if sha256(folder / name) != digest:
                return f"{name} differs from its checksum"
        crcs = np.load(folder / BLOCKS_FILE)
        for name, (start, stop) in manifest["blocks"].items():
            bad = _check_blocks(folder / name, crcs[start:stop], full)
            if bad is not None:
                return f"{name} differs from its checksum (block {bad})"
    except (KeyError, TypeError, ValueError) as exc:
        return f"its manifest is unreadable ({type(exc).__name__})"
    except OSError as exc:
        return f"{exc.filename or 'a file'} is unreadable ({exc.strerror or exc})"
    return None


def _check_blocks(path: Path, crcs: np.ndarray, full: bool) -> int | None:
    """The first block of ``path`` whose CRC differs from ``crcs`` among those checked, else None."""
    count = len(crcs)
    if full or count * BLOCK <= FULL_CHECK_BYTES:
        chosen = range(count)
    else:
        chosen = sorted({0, count - 1, *np.linspace(0, count - 1, SAMPLED_BLOCKS + 2).round().astype(int).tolist()})
    with open(path, "rb") as f:
        for i in chosen:
            f.seek(i * BLOCK)
            if zlib.crc32(f.read(BLOCK)) != int(crcs[i]):
                return i
    return None


@contextmanager
def entry_lock(entry: Path, wait: bool = True):
    """Hold the lock that every writer of the entry in folder ``entry`` holds (a file beside it, released
    when its holder dies) and yield True; with ``wait=False``, yield False at once when another process
    holds it. Where no lock file can be made (a read-only cache), yield True without a lock."""
    try:
        handle = open(entry.parent / f".{entry.name}.lock", "a")
    except OSError:
        yield True
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
