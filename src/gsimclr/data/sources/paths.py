"""Files and folders: every spec that is not a registered prefix is a path, to a parquet file, a folder
of parquet files, or an image folder (:mod:`~gsimclr.data.sources.parquet`,
:mod:`~gsimclr.data.sources.folder`); decoded data goes through the decoded-image cache."""

from __future__ import annotations

import os
from pathlib import Path

from gsimclr.data.dataset import ImageData
from gsimclr.data.sources.base import SPLIT_ALIASES, DataSource, EncodedListing, Plan, Request, known_names, register_source
from gsimclr.data.sources.folder import list_folder, plan_folder
from gsimclr.data.sources.parquet import list_parquet, parquet_split_files, plan_parquet
from gsimclr.errors import UserError


def _plan_path(spec: str, split: str, image_size: int | None, on_corrupt: str, resize: str = "crop") -> Plan | None:
    """Resolve a path spec to a parquet or image-folder plan for ``split``."""
    options = {"split": split, "image_size": image_size, "on_corrupt": on_corrupt}
    if resize != "crop":  # only then, so that the caches of crop-decoded data keep their keys
        options["resize"] = resize
    found = _locate_path(spec, split)
    if found is None:
        return None
    kind, where, name, siblings = found
    return plan_parquet(where, name, options, siblings) if kind == "parquet" else plan_folder(where, options)


def check_path(spec: str) -> Path:
    """The resolved path of a path spec; a UserError when it names nothing readable (a missing path, a
    file that is not parquet). It lists no folder, so the command line checks ``--data`` and
    ``--test-data`` with it before any work, at no cost even for ImageNet's folders."""
    path = Path(spec).expanduser()
    if not path.exists():
        if "/" in spec or os.sep in spec or path.suffix:
            raise UserError(f"data path does not exist: {spec}")
        raise UserError(f"unknown data source {spec!r}: not a file or folder, nor one of {known_names()}")
    path = path.resolve()
    if path.is_file() and path.suffix.lower() != ".parquet":
        raise UserError(f"not a parquet file or an image folder: {spec}")
    return path


def _locate_path(spec: str, split: str) -> tuple[str, list[Path] | Path, str, list[Path] | None] | None:
    """What a path spec holds for ``split``: ("parquet", files, name, every parquet file of the data set),
    ("folder", root, name, None), or None when a parquet set has no such split; a missing path or a file
    that is not parquet is a UserError."""
    path = check_path(spec)
    if path.is_file():
        return ("parquet", [path], path.stem, [path]) if split == "train" else None
    parquet_files = sorted(path.glob("*.parquet")) + sorted(path.glob("*/*.parquet"))
    if not parquet_files:  # the Hub's parquet conversion, CONFIG/SPLIT/0000.parquet (split folders only: cheap)
        aliases = dict.fromkeys(a for names in SPLIT_ALIASES.values() for a in names)
        parquet_files = sorted(f for a in aliases for f in path.glob(f"*/{a}/*.parquet"))
    if parquet_files:
        files = parquet_split_files(parquet_files, split, path)
        return ("parquet", files, path.name, parquet_files) if files else None
    return "folder", path, path.name, None


def _load(spec: str, request: Request) -> ImageData | None:
    plan = _plan_path(spec, request.split, request.image_size, request.on_corrupt, request.resize)
    return None if plan is None else plan.load(request)


def _listing(spec: str, split: str) -> EncodedListing | None:
    found = _locate_path(spec, split)
    if found is None:
        return None
    kind, where, name, siblings = found
    return list_parquet(where, name, split, siblings) if kind == "parquet" else list_folder(where, split)


register_source("path", DataSource(
    "FOLDER | PATH.parquet", "an image folder (FOLDER/<class>/*.jpg, or flat: unlabelled; train/, test/ or val/ "
    "sub-folders are splits) or Hugging Face parquet (files train-*/test-*; images in a struct with 'bytes' or 'path', "
    "labels in 'label')", _load, _listing, in_memory=False, prefix=False))
