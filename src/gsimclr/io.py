"""Atomic file writes: a file is written to a temporary name in the same folder and renamed into
place, so an interrupted run never leaves a half-written file behind.

Temporary files are named ``.<name>.<random>.tmp`` (:data:`TEMP_GLOB` finds them) and get the
ordinary permissions of a new file (``0666`` less the umask), not ``mkstemp``'s ``0600``. A write
that fails for a reason outside the program (no space left, a read-only or missing folder, a
folder path that runs through a file) is a :class:`~gsimclr.errors.UserError` naming the path.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.json")
    >>> write_json(path, {"x": 1})
    >>> oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~current_umask())
    True
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from gsimclr.errors import UserError

TEMP_GLOB = ".*.tmp"
"""The names of the temporary files :func:`atomic_path` writes (a killed run may leave them)."""

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def ensure_folder(path: str | os.PathLike, what: str = "folder") -> Path:
    """``path`` as a folder (created with its parents); a one-line error naming it when impossible."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc, f"cannot create the {what}") from None
    return path


def write_error(path: str | os.PathLike, exc: OSError, doing: str = "cannot write") -> UserError:
    """A one-line :class:`UserError` for an operating-system error while writing ``path``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return UserError(f"{doing} {path}: {reason}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.
    Operating-system errors while writing become a UserError naming ``path``."""
    path = Path(path)
    ensure_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # after the write: some writers (safetensors) recreate the file
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` to ``path`` (for logs); an operating-system error names the path."""
    try:
        with open(path, "a") as f:
            f.write(text)
    except OSError as exc:
        raise write_error(path, exc) from None


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Remove the temporary files (:data:`TEMP_GLOB`) under ``folder`` that a killed writer left;
    only safe while no one else writes there (e.g. under the run folder's lock). Returns how many."""
    removed = 0
    for tmp in Path(folder).rglob(TEMP_GLOB):
        if tmp.is_file() and not tmp.is_symlink():
            try:
                tmp.unlink()
                removed += 1
            except OSError:
                pass
    return removed


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, (np.ndarray,)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
