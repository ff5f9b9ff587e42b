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
import re
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


_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def os_errno(exc: BaseException) -> int | None:
    """The operating-system error number behind ``exc``: its ``errno``, or the ``(os error N)`` that Rust
    libraries (safetensors) put in their messages; None for anything else.

    Example:
        >>> os_errno(RuntimeError("I/O error: No space left on device (os error 28)"))
        28
    """
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    if isinstance(exc, Exception) and not isinstance(exc, UserError):
        match = _OS_ERROR.search(str(exc))
        if match:
            return int(match.group(1))
    return None


def check_output(path: str | os.PathLike, what: str = "--output", folder: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written: an existing ``path`` is a folder when
    ``folder`` (else not a folder), and the nearest existing folder above it is a folder this
    process may write into (not a file, not read-only). A one-line UserError naming ``what`` otherwise.

    Example:
        >>> import tempfile, os
        >>> base = tempfile.mkdtemp()
        >>> open(os.path.join(base, "f"), "w").close()
        >>> check_output(os.path.join(base, "f", "out"), "--out", folder=True)
        Traceback (most recent call last):
        ...
        gsimclr.errors.UserError: --out .../f/out: .../f is a file, not a folder
    """
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise UserError(f"{what} {path} is a file, not a folder")
        if not folder and path.is_dir():
            raise UserError(f"{what} {path} is a folder; give a file")
    parent = path if folder and path.is_dir() else path.parent
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        parent = parent.parent
    if parent.is_symlink() and not parent.exists():
        raise UserError(f"{what} {path}: {parent} is a broken symbolic link")
    if not parent.is_dir():
        raise UserError(f"{what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only_fs(parent) else "permission denied"
        raise UserError(f"{what} {path}: cannot write into {parent} ({reason})")
    return path


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def same_or_inside(path: str | os.PathLike, other: str | os.PathLike) -> bool:
    """Whether ``path`` is ``other`` or lies inside it, symbolic links resolved (neither need exist).

    Example:
        >>> same_or_inside("/a/b/c", "/a/b"), same_or_inside("/a/b", "/a/b/c"), same_or_inside("/a/bc", "/a/b")
        (True, False, False)
    """
    a, b = Path(path).resolve(), Path(other).resolve()
    return a == b or b in a.parents


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` (not atomically: for files inside a temporary folder that is renamed
    into place); an operating-system error (no space left, read-only) is a UserError naming ``path``."""
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise write_error(path, exc) from None


def normal_permissions(root: str | os.PathLike) -> None:
    """Give ``root`` and everything under it the ordinary permissions of new files and folders (``0666``
    and ``0777`` less the umask), e.g. after ``tempfile.mkdtemp`` (``0700``) or safetensors (``0600``)."""
    mask = current_umask()
    root = Path(root)
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


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
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        code = os_errno(exc)
        if code is not None:  # a library's own error for an OS one (safetensors: "... (os error 28)")
            raise write_error(path, OSError(code, os.strerror(code))) from None
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
