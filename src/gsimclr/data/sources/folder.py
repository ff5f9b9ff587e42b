"""Image folders: ``FOLDER/<class>/*.jpg`` (labelled by class sub-folder) or flat (unlabelled),
optionally split into ``train/`` and ``test/`` (or ``val/``) sub-folders (a folder of only ``test/`` or
``val/`` has no training split; it is not one class named "val"). Class folders without images are named in
a warning. Symlinks are followed safely
(each file and folder once; dangling and looping links are skipped and counted); images lying beside
class folders are left out with a warning."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np

from gsimclr.data import cache as decoded_cache
from gsimclr.data.dataset import ImageData
from gsimclr.data.sources.base import SPLIT_ALIASES, EncodedListing, Plan, split_aliases
from gsimclr.data.sources.decoding import decode_images
from gsimclr.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def plan_folder(root: Path, options: dict) -> Plan | None:
    """An image folder: split sub-folders if there is a ``train/``, class sub-folders give labels."""
    found = _folder_split(root, options["split"])
    if found is None:
        return None
    files, bad_links, labels, classes = found
    stats = decoded_cache.file_stats(files)
    key = decoded_cache.fingerprint(kind="folder", files=stats, classes=classes, **options)
    return Plan(key, lambda: _decode_folder(files, labels, classes, root.name, key, options, bad_links))


def _folder_split(root: Path, split: str) -> tuple[list[str], int, np.ndarray | None, list[str] | None] | None:
    """(image files, dangling or looping links skipped, labels or None, class names or None) of ``split``
    of an image folder, or None when it has no such split. With a ``train/`` sub-folder the splits are
    its sub-folders, and the class names the union of theirs (so every split maps a name to the same
    index). Images lying beside class folders have no class: they are left out, with a warning; a
    folder whose images all lie outside sub-folders is flat (unlabelled)."""
    split_dirs = _split_dirs(root)
    if split_dirs is None:
        folder = root if split == "train" else None
        classes = _class_dirs(root)
    else:
        folder = next((split_dirs[a] for a in split_aliases(split) if a in split_dirs), None)
        classes = sorted({c for d in split_dirs.values() for c in _class_dirs(d)})
    if folder is None:
        return None
    files, bad_links, not_files = _scan_images(folder)
    if bad_links:
        warnings.warn(f"skipped {bad_links} dangling or looping symlink(s) in {folder}", stacklevel=5)
    if not_files:
        warnings.warn(f"skipped {len(not_files)} image name(s) in {folder} that are not regular files (a FIFO, "
                      f"socket or device), e.g. {not_files[0]}", stacklevel=5)
    bad_links += len(not_files)
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {folder}")
    labels = _folder_labels(folder, files, classes) if classes else None
    if labels is not None and (labels < 0).all():
        labels, classes = None, None  # no image in any sub-folder: a flat folder
    elif labels is not None and (labels < 0).any():
        loose = np.flatnonzero(labels < 0)
        warnings.warn(f"left out {len(loose)} image(s) lying in {folder} beside its class folders (they have no "
                      f"class), e.g. {Path(files[loose[0]]).name}", stacklevel=5)
        keep = np.flatnonzero(labels >= 0)
        files, labels = [files[i] for i in keep], labels[keep]
    if labels is not None:
        counts = np.bincount(labels, minlength=len(classes))
        empty = [c for c in _class_dirs(folder) if counts[classes.index(c)] == 0]
        if empty:
            warnings.warn(f"{len(empty)} class folder(s) in {folder} hold no images ({', '.join(IMAGE_EXTENSIONS)}): "
                          f"{', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''}", stacklevel=5)
    return files, bad_links, labels, classes or None


def _split_dirs(root: Path) -> dict[str, Path] | None:
    """Sub-folders by lower-case name when ``root`` has a ``train/`` sub-folder, or only evaluation split
    folders (``test/``, ``val/`` ...: a data set without its training split, not one class named "val"),
    else None."""
    subdirs = {d.name.lower(): d for d in _subdirs(root)}
    evaluation = {a for s, aliases in SPLIT_ALIASES.items() if s != "train" for a in aliases}
    return subdirs if "train" in subdirs or (subdirs and set(subdirs) <= evaluation) else None


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in _subdirs(folder))


def _subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders of ``folder``, following symlinks, but neither a link back to ``folder`` or
    one of its ancestors (a loop) nor a second link to a folder already listed."""
    top = os.path.realpath(folder)
    seen: set[str] = set()
    found = []
    for d in sorted(folder.iterdir()):
        if d.name.startswith(".") or not d.is_dir():  # is_dir is False for dangling and looping links
            continue
        real = os.path.realpath(d)
        if _is_within(top, real) or real in seen:
            continue
        seen.add(real)
        found.append(d)
    return found


def _is_within(path: str, folder: str) -> bool:
    """Whether real path ``path`` is ``folder`` or inside it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _scan_images(folder: Path) -> tuple[list[str], int, list[str]]:
    """(image files under ``folder``, count of dangling or looping symlinks skipped, the image names that
    are not regular files: FIFOs, sockets, devices, which would block or never end when read), files in
    sorted order with hidden names skipped. Symlinks are followed safely: each file and each folder is
    taken once, by its first path in sorted order (compared by real path; a top-level folder by its
    own name), a link to ``folder`` or one of its ancestors is a loop and is skipped, as are links
    that lead nowhere."""
    top = os.path.realpath(folder)
    visited = {top}
    # the top-level folders (classes) are reached first by their own name, never through a link elsewhere
    classes = {os.path.realpath(d) for d in _subdirs(folder)}
    seen_files: set[str] = set()
    found: list[str] = []
    bad_links = 0
    not_files: list[str] = []
    for parent, dirs, names in os.walk(folder, followlinks=True):
        kept = []
        for d in sorted(x for x in dirs if not x.startswith(".")):
            path = os.path.join(parent, d)
            real = os.path.realpath(path)
            if not os.path.isdir(path):  # a broken link os.walk listed as a folder
                bad_links += 1
            elif _is_within(os.path.realpath(parent), real):
                bad_links += 1  # a link to this folder or one above it: a loop
            elif real in visited or (real in classes and os.path.realpath(parent) != top):
                continue  # a second name for a folder taken already (or to come, by its own class name)
            else:
                visited.add(real)
                kept.append(d)
        dirs[:] = kept
        for n in sorted(names):
            if n.startswith(".") or not n.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(parent, n)
            try:
                info = os.stat(path)  # follows the link: a dangling or looping one raises
            except OSError:
                bad_links += 1
                continue
            if not stat.S_ISREG(info.st_mode):  # a FIFO named x.jpg blocks its reader forever
                not_files.append(path)
                continue
            real = os.path.realpath(path)
            if real not in seen_files:
                seen_files.add(real)
                found.append(path)
    return found, bad_links, not_files


def _folder_labels(folder: Path, files: list[str], classes: list[str]) -> np.ndarray:
    """Label of each file: the index of its top-level sub-folder in ``classes``; -1 for loose files."""
    index = {c: i for i, c in enumerate(classes)}
    parts = (Path(f).relative_to(folder).parts for f in files)
    return np.array([index[p[0]] if len(p) > 1 else -1 for p in parts], dtype=np.int64)


def _decode_folder(files, labels, classes, name, key, options, bad_links: int = 0) -> ImageData:
    images, kept = decode_images(files, files, options)
    return ImageData(
        images,
        None if labels is None else labels[kept],
        classes,
        name,
        key,
        len(files) - len(kept) + bad_links,
        [files[i] for i in kept],
    )


def list_folder(root: Path, split: str) -> EncodedListing | None:
    found = _folder_split(root, split)
    if found is None:
        return None
    files, _, labels, classes = found
    key = decoded_cache.fingerprint(kind="folder-files", files=decoded_cache.file_stats(files), classes=classes,
                                    split=split)

    def chunks(n: int):
        for start in range(0, len(files), n):
            yield [(f, f) for f in files[start:start + n]]

    return EncodedListing(root.name, key, len(files), labels, classes, chunks)
