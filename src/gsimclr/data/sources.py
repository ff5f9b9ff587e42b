"""Load a data set split from a short spec string into an :class:`ImageData`.

Spec forms (see :func:`describe_sources`):

- ``digits``: scikit-learn's bundled 8x8 digits, upsampled to 32x32 RGB; no files needed.
- ``PATH.parquet`` or a folder of ``*.parquet``: a Hugging Face-style parquet data set.
- ``FOLDER``: an image folder, with class sub-folders or flat (unlabelled), optionally split into
  ``train/`` and ``test/`` (or ``val/``).
- ``cifar10[:ROOT]``, ``cifar100[:ROOT]``, ``stl10[:ROOT]``, ``stl10-unlabeled[:ROOT]``: torchvision
  data sets under ROOT (default ``~/.cache/gsimclr/datasets``), downloaded when missing.

Images always come out as upright RGB uint8 arrays of one square size: ``image_size`` if given,
else the shorter side of the images when they all share one size, else 256. Each image is resized
(bicubic) so that its shorter side is that size, then centre-cropped; with ``resize="stretch"`` (image
files only) both sides are resized to that size ignoring the aspect ratio, bilinearly without an
antialiasing filter from the full decoded image, as the ImageNet notebooks' ``cv2.resize(image,
(224, 224))``. EXIF orientation is applied; transparent pixels are composited onto black; every mode
Pillow opens becomes RGB, 16-bit and 32-bit grey levels scaled to 8 bits (not clipped). Image folders
follow symlinks safely (each file and folder once; dangling and looping links are skipped and
counted); images lying beside class folders are left out with a warning. Parquet labels may be
integers (or whole-number floats) or strings (mapped to class indices in the sorted names of every split);
a null, -1 or out-of-range label is an error naming its row, and decoded data and the encoded store read
labels through the same code. Decoded parquet and image-folder data is cached on disk
(:mod:`gsimclr.data.cache`), so only the first load decodes. scikit-learn, pyarrow and torchvision
are imported only by the sources that need them.

Example:
    >>> train = load_split("digits")
    >>> train.images.shape, train.classes[:3]
    ((1437, 32, 32, 3), ['0', '1', '2'])
    >>> load_split("digits", "test", image_size=16).images.shape
    (360, 16, 16, 3)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from gsimclr.data import cache as decoded_cache
from gsimclr.data.dataset import ImageData
from gsimclr.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_IMAGE_SIZE = 256
DEFAULT_TORCHVISION_ROOT = "~/.cache/gsimclr/datasets"
ON_CORRUPT = ("skip", "error")
RESIZES = ("crop", "stretch")
KNOWN_NAMES = "digits, cifar10[:ROOT], cifar100[:ROOT], stl10[:ROOT], stl10-unlabeled[:ROOT]"

# Folder names (image folders) or file-name prefixes (parquet) that hold each split, in preference order.
SPLIT_ALIASES = {"train": ("train",), "test": ("test", "val", "valid", "validation")}

_TORCHVISION_SPEC = re.compile(r"^(cifar10|cifar100|stl10|stl10-unlabeled)(?::(.+))?$", re.IGNORECASE)

_DECODE_CHUNK = 256  # images per thread-pool task
_SMALL_FILE_BYTES = 16_384  # below this mean encoded size, decoding is Python-bound: threads only contend


def describe_sources() -> str:
    """A short help text listing the accepted spec forms."""
    return (
        "Data sources (--data SPEC):\n"
        "  digits                   scikit-learn's 8x8 digits upsampled to 32x32 (built in, 80/20 split)\n"
        "  PATH.parquet | FOLDER    Hugging Face parquet: train-*/test-* files; image column a struct with "
        "'bytes', labels in 'label'\n"
        "  FOLDER                   image folder: FOLDER/<class>/*.jpg, or flat (unlabelled); "
        "train/ and test/ (or val/) sub-folders give the splits\n"
        "  cifar10[:ROOT]           torchvision CIFAR-10 (also cifar100, stl10, stl10-unlabeled); "
        f"ROOT defaults to {DEFAULT_TORCHVISION_ROOT}, downloaded when missing\n"
        "  hf:NAME[:CONFIG]         a Hugging Face dataset by id (downloaded by `datasets`) or a local folder "
        "(save_to_disk or a data folder); image column: its Image feature, labels: its ClassLabel"
    )


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

    ``image_size`` is the square output size (default: see the module docstring). ``on_corrupt`` is
    ``"skip"`` (drop unreadable images, count them in ``ImageData.skipped`` and warn) or ``"error"``
    (raise :class:`UserError` naming the file). ``cache`` and ``cache_dir`` control the decoded-image
    cache. ``resize`` is ``"crop"`` or ``"stretch"`` (see the module docstring). Raises
    :class:`UserError` for a missing path, an unknown spec or a source without images.
    """
    _check_options(image_size, on_corrupt)
    if resize not in RESIZES:
        raise UserError(f"resize must be one of {', '.join(RESIZES)}, got {resize!r}")
    data = _load(spec, split, image_size, on_corrupt, cache, cache_dir, resize)
    if data is not None and data.skipped:
        warnings.warn(f"skipped {data.skipped} unreadable image(s) or broken link(s) in {spec} ({split})", stacklevel=2)
    return data


def _check_options(image_size: int | None, on_corrupt: str) -> None:
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise UserError(f"image size must be a positive integer, got {image_size!r}")
    if on_corrupt not in ON_CORRUPT:
        raise UserError(f"on_corrupt must be one of {', '.join(ON_CORRUPT)}, got {on_corrupt!r}")


def _load(spec, split, image_size, on_corrupt, cache, cache_dir, resize="crop") -> ImageData | None:
    """Dispatch ``spec`` to its source; file-based sources go through the decoded-image cache."""
    if spec.lower().startswith(HF_PREFIX):
        return _load_hf(spec[len(HF_PREFIX):], split, image_size, on_corrupt, cache, cache_dir)
    if spec.lower() == "digits":
        return _load_digits(split, image_size)
    match = _TORCHVISION_SPEC.match(spec)
    if match:
        return _load_torchvision(match.group(1).lower(), match.group(2), split, image_size)
    plan = _plan_path(spec, split, image_size, on_corrupt, resize)
    if plan is None:
        return None
    if not cache:
        return plan.decode()
    return _load_through_cache(plan, cache_dir)


# ---------------------------------------------------------------------------------------- digits


def _load_digits(split: str, image_size: int | None) -> ImageData | None:
    """scikit-learn's digits as RGB, stratified 80/20 train/test split (random_state=0)."""
    if split not in ("train", "test"):
        return None
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    train, test = train_test_split(index, test_size=0.2, random_state=0, stratify=digits.target)
    chosen = train if split == "train" else test
    gray = np.round(digits.images[chosen] * (255 / 16)).astype(np.uint8)
    size = image_size or 32
    images = np.repeat(_resize_square(gray, size)[..., None], 3, axis=-1)
    key = decoded_cache.fingerprint(kind="digits", split=split, image_size=size)
    return ImageData(images, digits.target[chosen], [str(c) for c in range(10)], "digits", key)


# ------------------------------------------------------------------------------------ torchvision


def _load_torchvision(name: str, root: str | None, split: str, image_size: int | None) -> ImageData | None:
    """CIFAR-10/100 or STL-10 through torchvision, read from its numpy arrays (no per-image loop)."""
    root = str(Path(root or DEFAULT_TORCHVISION_ROOT).expanduser().resolve())
    kwargs = _torchvision_split(name, split)
    if kwargs is None:
        return None
    dataset = _open_torchvision(name, root, kwargs)
    if name.startswith("stl10"):
        images = np.ascontiguousarray(dataset.data.transpose(0, 2, 3, 1))  # NCHW -> NHWC
        labels = None if kwargs["split"] == "unlabeled" else dataset.labels
    else:
        images, labels = dataset.data, dataset.targets
    if image_size is not None and image_size != images.shape[1]:
        images = _resize_square(images, image_size)
    classes = None if labels is None else getattr(dataset, "classes", None)
    key = decoded_cache.fingerprint(kind=name, root=root, split=split, image_size=image_size)
    return ImageData(images, labels, classes, name, key)


def _torchvision_split(name: str, split: str) -> dict | None:
    """Constructor arguments selecting ``split``, or None when the data set has no such split.

    ``stl10-unlabeled`` is STL-10 with the 100,000 unlabelled images as its train split.
    """
    if name in ("cifar10", "cifar100"):
        return {"train": split == "train"} if split in ("train", "test") else None
    train = "unlabeled" if name == "stl10-unlabeled" else "train"
    stl_split = {"train": train, "test": "test", "unlabeled": "unlabeled"}.get(split)
    return None if stl_split is None else {"split": stl_split}


def _open_torchvision(name: str, root: str, kwargs: dict):
    """The torchvision data set, downloaded only when its files are missing or damaged."""
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}.get(name, datasets.STL10)
    try:
        return cls(root, download=False, **kwargs)
    except RuntimeError:  # not found or corrupted: try downloading
        pass
    try:
        return cls(root, download=True, **kwargs)
    except Exception as exc:  # network, checksum or archive failure
        detail = " ".join(str(exc).split())
        raise UserError(f"{name} is not at {root} and the download failed: {detail}") from exc


# ----------------------------------------------------------------------------- files and folders


@dataclass
class _Plan:
    """What a file-based split needs: its cache key and how to decode it."""

    fingerprint: str
    decode: Callable[[], ImageData]


def _load_through_cache(plan: _Plan, cache_dir: str | None) -> ImageData:
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


def _plan_path(spec: str, split: str, image_size: int | None, on_corrupt: str, resize: str = "crop") -> _Plan | None:
    """Resolve a path spec to a parquet or image-folder plan for ``split``."""
    options = {"split": split, "image_size": image_size, "on_corrupt": on_corrupt}
    if resize != "crop":  # only then, so that the caches of crop-decoded data keep their keys
        options["resize"] = resize
    found = _locate_path(spec, split)
    if found is None:
        return None
    kind, where, name, siblings = found
    return _plan_parquet(where, name, options, siblings) if kind == "parquet" else _plan_folder(where, options)


def _locate_path(spec: str, split: str) -> tuple[str, list[Path] | Path, str, list[Path] | None] | None:
    """What a path spec holds for ``split``: ("parquet", files, name, every parquet file of the data set),
    ("folder", root, name, None), or None when a parquet set has no such split; a missing path or a file
    that is not parquet is a UserError."""
    path = Path(spec).expanduser()
    if not path.exists():
        if "/" in spec or os.sep in spec or path.suffix:
            raise UserError(f"data path does not exist: {spec}")
        raise UserError(f"unknown data source {spec!r}: not a file or folder, nor one of {KNOWN_NAMES}")
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() != ".parquet":
            raise UserError(f"not a parquet file or an image folder: {spec}")
        return ("parquet", [path], path.stem, [path]) if split == "train" else None
    parquet_files = sorted(path.glob("*.parquet")) + sorted(path.glob("*/*.parquet"))
    if parquet_files:
        files = _parquet_split_files(parquet_files, split)
        return ("parquet", files, path.name, parquet_files) if files else None
    return "folder", path, path.name, None


# ---------------------------------------------------------------------------------------- parquet


def _split_aliases(split: str) -> tuple[str, ...]:
    return SPLIT_ALIASES.get(split, (split,))


def _parquet_split_files(files: list[Path], split: str) -> list[Path]:
    """The files of ``split``, chosen by name prefix; files without any split prefix are all "train"."""
    known = tuple(alias for aliases in SPLIT_ALIASES.values() for alias in aliases)
    if not any(f.name.lower().startswith(known) for f in files):
        return files if split == "train" else []
    for prefix in _split_aliases(split):
        chosen = [f for f in files if f.name.lower().startswith(prefix)]
        if chosen:
            return chosen
    return []


def _plan_parquet(files: list[Path], name: str, options: dict, siblings: list[Path]) -> _Plan:
    key = decoded_cache.fingerprint(kind="parquet", files=decoded_cache.file_stats(files), **options,
                                    **_parquet_names_key(files, siblings))
    return _Plan(key, lambda: _decode_parquet(files, name, key, options, siblings))


def _parquet_names_key(files: list[Path], siblings: list[Path]) -> dict:
    """Extra fingerprint parts for string labels, whose class names come from every split's files."""
    _, label_column, kind = _parquet_columns(files)
    if kind != "str":
        return {}
    return {"class_names_from": decoded_cache.file_stats(siblings), "string_labels": 2}


def _decode_parquet(files: list[Path], name: str, key: str, options: dict, siblings: list[Path]) -> ImageData:
    """Read the image bytes and labels of ``files`` and decode the images (columns and labels: see
    :func:`_parquet_columns` and :func:`_parquet_split_labels`)."""
    import pyarrow.compute as pc

    image_column, label_column, _ = _parquet_columns(files)
    tables = [_read_parquet_table(f, [image_column]) for f in files]
    if sum(t.num_rows for t in tables) == 0:
        raise UserError(f"no images (no rows) in {', '.join(map(str, files))}")
    labels, classes = _parquet_split_labels(files, siblings)
    encoded = [b for t in tables for b in pc.struct_field(t.column(image_column), "bytes").to_pylist()]
    row_names = [f"{f} row {row}" for f, t in zip(files, tables) for row in range(t.num_rows)]
    images, kept = _decode_images(encoded, row_names, options)
    return ImageData(images, None if labels is None else labels[kept], classes, name, key, len(encoded) - len(kept))


def _parquet_columns(files: list[Path]) -> tuple[str, str | None, str | None]:
    """(image column, label column or None, label kind) shared by every shard of ``files``; a one-line
    error names a shard that differs, one that is not parquet or is damaged, or a label column of a
    type that cannot be labels (see :func:`_label_kind`)."""
    schemas = [_read_parquet_schema(f) for f in files]
    image_column = _parquet_image_column(schemas[0], files[0])
    label_column = _parquet_label_column(schemas[0], files[0])
    for f, schema in zip(files[1:], schemas[1:]):
        if _parquet_image_column(schema, f, required=False) != image_column:
            raise UserError(f"parquet shards differ: {files[0].name} has image column {image_column!r}, {f} does not")
        other = _parquet_label_column(schema, f)
        if other != label_column or (label_column and _label_kind(schema, other) != _label_kind(schemas[0], label_column)):
            raise UserError(f"parquet shards differ: {files[0].name} has label column {label_column!r} "
                            f"({_label_kind(schemas[0], label_column)}), {f} has {other!r} ({_label_kind(schema, other)})")
    return image_column, label_column, _label_kind(schemas[0], label_column)


def _parquet_split_labels(files: list[Path], siblings: list[Path]) -> tuple[np.ndarray | None, list[str] | None]:
    """(labels as int64 or None, class names or None) of the rows of ``files``, read from the label column
    alone; the one reading of labels for decoded data and for the encoded store.

    Integer (or whole-number float) labels are used as they are, with the class names of the
    ``huggingface`` schema metadata; string labels become indices into the sorted names found in every
    file of the data set (``siblings``: all splits), so that train and test agree. A label column
    with some null (or -1, Hugging Face's "no label") labels is an error naming the first (fill or drop
    those rows); an all-null (or all -1) column means an unlabelled set, with a warning. A negative
    label, a fraction, or a label past the schema's class names is an error naming its row."""
    _, column, kind = _parquet_columns(files)
    if column is None:
        return None, None
    counts, chunks = [], []
    for f in files:
        values = _read_parquet_table(f, [column]).column(column)
        counts.append(len(values))
        chunks.append(_label_values(values, kind))
    values = np.concatenate(chunks) if chunks else np.zeros(0)
    starts = np.cumsum([0] + counts)

    def row(i: int) -> str:
        shard = int(np.searchsorted(starts, i, side="right")) - 1
        return f"{files[shard]} row {i - starts[shard]}"

    if kind == "str":
        return _string_labels(values, row, column, files, siblings)
    classes = _parquet_class_names(_read_parquet_schema(files[0]), column)
    missing = np.isnan(values) | (values == -1)
    if missing.all():
        warnings.warn(f"label column {column!r} holds only nulls (or -1): the data is unlabelled", stacklevel=5)
        return None, None
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise UserError(f"{row(first)}: null label in column {column!r} ({int(missing.sum())} of {len(values)} rows "
                        "null or -1); fill or remove those rows")
    bad = (values < 0) | (values != np.round(values)) | (values >= (len(classes) if classes else np.inf))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        allowed = f"0 to {len(classes) - 1} (the schema's {len(classes)} class names)" if classes else "0 or more"
        raise UserError(f"{row(first)}: label {values[first]:g} in column {column!r} is not a class index: labels "
                        f"must be whole numbers {allowed}")
    return values.astype(np.int64), classes


def _label_values(values, kind: str) -> np.ndarray:
    """A label column as numbers (float64, NaN for null) or, for string labels, as an object array (None for null)."""
    import pyarrow as pa

    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if kind == "str":
        return np.array(values.to_pylist(), dtype=object)
    return values.cast(pa.float64()).to_numpy(zero_copy_only=False)


def _string_labels(values: np.ndarray, row, column: str, files: list[Path], siblings: list[Path]):
    nulls = np.array([v is None for v in values], bool)
    if nulls.all():
        warnings.warn(f"label column {column!r} holds only nulls: the data is unlabelled", stacklevel=6)
        return None, None
    if nulls.any():
        first = int(np.flatnonzero(nulls)[0])
        raise UserError(f"{row(first)}: null label in column {column!r} ({int(nulls.sum())} of {len(values)} rows); "
                        "fill or remove those rows")
    names = set(values.tolist())
    for f in siblings:  # the other splits' names, so that every split maps a name to the same index
        if f in files:
            continue
        schema = _read_parquet_schema(f)
        if column in schema.names and _label_kind(schema, column) == "str":
            other = _label_values(_read_parquet_table(f, [column]).column(column), "str")
            names.update(v for v in other.tolist() if v is not None)
    names = sorted(names)
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[v] for v in values], dtype=np.int64), names


def _read_parquet_schema(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable parquet file ({_first_line(exc)})") from None


def _read_parquet_table(path: Path, columns: list[str]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UserError(f"parquet file {path} is damaged ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else text or type(exc).__name__


def _label_kind(schema, column: str | None) -> str | None:
    """"int", "float", "str" or None: how a label column's values are read."""
    import pyarrow as pa

    if column is None:
        return None
    kind = schema.field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_integer(kind):
        return "int"
    if pa.types.is_floating(kind):
        return "float"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "str"
    return None


def _parquet_label_column(schema, path: Path | None = None) -> str | None:
    """The first of ``label``/``labels``, else None (unlabelled); one holding neither numbers nor strings
    is an error (rather than a set silently read as unlabelled)."""
    column = next((c for c in ("label", "labels") if c in schema.names), None)
    if column is not None and _label_kind(schema, column) is None:
        raise UserError(f"parquet file {path}: label column {column!r} has type {schema.field(column).type}; "
                        "labels must be integers or strings")
    return column


def _parquet_image_column(schema, path: Path, required: bool = True) -> str | None:
    """The first column whose type is a struct with a ``bytes`` field (Hugging Face's Image feature)."""
    import pyarrow as pa

    for field in schema:
        if pa.types.is_struct(field.type) and field.type.get_field_index("bytes") >= 0:
            return field.name
    if not required:
        return None
    raise UserError(f"no image column (a struct with a 'bytes' field) in parquet file {path}")


def _parquet_class_names(schema, label_column: str) -> list[str] | None:
    """Class names from the ``huggingface`` schema metadata (a ClassLabel feature), if present."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        return None
    feature = json.loads(raw).get("info", {}).get("features", {}).get(label_column, {})
    if feature.get("_type") != "ClassLabel" or "names" not in feature:
        return None
    return [str(n) for n in feature["names"]]


# ----------------------------------------------------------------------------------- image folder


def _plan_folder(root: Path, options: dict) -> _Plan | None:
    """An image folder: split sub-folders if there is a ``train/``, class sub-folders give labels."""
    found = _folder_split(root, options["split"])
    if found is None:
        return None
    files, bad_links, labels, classes = found
    stats = decoded_cache.file_stats(files)
    key = decoded_cache.fingerprint(kind="folder", files=stats, classes=classes, **options)
    return _Plan(key, lambda: _decode_folder(files, labels, classes, root.name, key, options, bad_links))


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
        folder = next((split_dirs[a] for a in _split_aliases(split) if a in split_dirs), None)
        classes = sorted({c for d in split_dirs.values() for c in _class_dirs(d)})
    if folder is None:
        return None
    files, bad_links = _scan_images(folder)
    if bad_links:
        warnings.warn(f"skipped {bad_links} dangling or looping symlink(s) in {folder}", stacklevel=5)
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
    return files, bad_links, labels, classes or None


def _split_dirs(root: Path) -> dict[str, Path] | None:
    """Sub-folders by lower-case name when ``root`` has a ``train/`` sub-folder, else None."""
    subdirs = {d.name.lower(): d for d in _subdirs(root)}
    return subdirs if "train" in subdirs else None


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


def _scan_images(folder: Path) -> tuple[list[str], int]:
    """(image files under ``folder``, count of dangling or looping symlinks skipped), files in sorted
    order with hidden names skipped. Symlinks are followed safely: each file and each folder is
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
                os.stat(path)  # follows the link: a dangling or looping one raises
            except OSError:
                bad_links += 1
                continue
            real = os.path.realpath(path)
            if real not in seen_files:
                seen_files.add(real)
                found.append(path)
    return found, bad_links


def _folder_labels(folder: Path, files: list[str], classes: list[str]) -> np.ndarray:
    """Label of each file: the index of its top-level sub-folder in ``classes``; -1 for loose files."""
    index = {c: i for i, c in enumerate(classes)}
    parts = (Path(f).relative_to(folder).parts for f in files)
    return np.array([index[p[0]] if len(p) > 1 else -1 for p in parts], dtype=np.int64)


def _decode_folder(files, labels, classes, name, key, options, bad_links: int = 0) -> ImageData:
    images, kept = _decode_images(files, files, options)
    return ImageData(
        images,
        None if labels is None else labels[kept],
        classes,
        name,
        key,
        len(files) - len(kept) + bad_links,
        [files[i] for i in kept],
    )


# ---------------------------------------------------------------------------------------- decoding


def _decode_images(sources: Sequence[str | bytes], names: Sequence[str], options: dict):
    """Decode file paths or encoded bytes to (N, S, S, 3) uint8; returns (images, kept indices).

    Unreadable images are dropped, or raise :class:`UserError` naming the first one when
    ``options["on_corrupt"] == "error"``.
    """
    workers = _worker_count(sources)
    size = options["image_size"] or _common_size(sources, workers)
    images = np.empty((len(sources), size, size, 3), np.uint8)
    errors: dict[int, str] = {}

    def decode(i: int) -> None:
        try:
            images[i] = _decode_one(sources[i], size, options.get("resize", "crop"))
        except Exception as exc:  # corrupt files fail in many ways: OSError, SyntaxError, ValueError...
            errors[i] = f"{type(exc).__name__}: {exc}"

    _run_chunked(decode, len(sources), workers)
    if errors and options["on_corrupt"] == "error":
        first = min(errors)
        raise UserError(f"cannot read image {names[first]} ({' '.join(errors[first].split())})")
    if len(errors) == len(sources):
        raise UserError(f"none of the {len(sources)} images could be read, e.g. {names[min(errors)]}")
    kept = np.setdiff1d(np.arange(len(sources)), list(errors))
    return (images[kept] if errors else images), kept


def _decode_one(source: str | bytes, size: int, resize: str = "crop") -> np.ndarray:
    """Decode one image file or encoded bytes to upright RGB, shorter side resized to ``size``, centre-cropped
    (``resize="stretch"``: both sides resized to ``size``, see :func:`_stretch`)."""
    with Image.open(_openable(source)) as img:
        if resize == "stretch":
            return _stretch(np.asarray(_to_rgb(ImageOps.exif_transpose(img))), size)
        img.draft(None, (size, size))  # JPEG: decode at a reduced scale when much larger than needed
        upright = _to_rgb(ImageOps.exif_transpose(img))
        if upright.size != (size, size):
            upright = ImageOps.fit(upright, (size, size), Image.Resampling.BICUBIC)
        return np.asarray(upright)


def _stretch(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 to ``(size, size, 3)``: bilinear with half-pixel centres and no antialiasing,
    rounded to uint8, i.e. OpenCV's ``INTER_LINEAR`` as the notebooks' ``cv2.resize``."""
    import torch  # here: the other sources decode without it

    if image.shape[:2] == (size, size):
        return image
    x = torch.tensor(image).permute(2, 0, 1)[None].float()
    y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB version of ``img``; transparent pixels are composited onto black. Single-channel images
    wider than 8 bits (16-bit PNGs, 32-bit integer or float TIFFs) are scaled to 8 bits by their value
    range (:func:`_to_8bit`), where Pillow's own conversion clips them to black and white."""
    if img.mode == "RGB":
        return img
    if img.mode in _WIDE_MODES:
        return Image.fromarray(_to_8bit(np.asarray(img), img.mode)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA") if img.mode != "La" else img.convert("RGBa").convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def _to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """uint8 grey levels of a wide single-channel image: 16-bit modes by 255/65535; 32-bit integers as
    8-bit when they fit in 0-255, else as 16-bit when they fit in 0-65535; floats as 0-1 when they fit,
    else as 0-255 when they fit; anything else stretched from its minimum to its maximum.

    >>> _to_8bit(np.array([[0, 32896, 65535]], np.uint16), "I;16").tolist()
    [[0, 128, 255]]
    >>> _to_8bit(np.array([[0.0, 0.5, 1.0]], np.float32), "F").tolist()
    [[0, 128, 255]]
    """
    x = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        scale, offset = 255 / 65535, 0.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        scale, offset = 255.0, 0.0
    elif lo >= 0 and hi <= 255:
        scale, offset = 1.0, 0.0
    elif mode == "I" and lo >= 0 and hi <= 65535:
        scale, offset = 255 / 65535, 0.0
    else:
        scale, offset = 255 / max(hi - lo, 1e-12), lo
    return np.clip(np.round((x - offset) * scale), 0, 255).astype(np.uint8)


def _common_size(sources: Sequence[str | bytes], workers: int) -> int:
    """The shorter side of the images if they all share one size (read from headers), else 256."""
    sizes: list[tuple[int, int] | None] = [None] * len(sources)

    def probe(i: int) -> None:
        try:
            with Image.open(_openable(sources[i])) as img:
                sizes[i] = img.size
        except Exception:  # unreadable: reported when decoding
            pass

    _run_chunked(probe, len(sources), workers)
    distinct = set(sizes) - {None}
    return min(distinct.pop()) if len(distinct) == 1 else DEFAULT_IMAGE_SIZE


def _openable(source: str | bytes):
    """What :func:`PIL.Image.open` takes for a path or encoded bytes."""
    return source if isinstance(source, str) else io.BytesIO(source)


def _worker_count(sources: Sequence[str | bytes]) -> int:
    """Decoding threads: one for tiny images (Python-bound, threads only contend for the GIL), else all cores."""
    sample = sources[:: max(1, len(sources) // 64)]
    sizes = [os.path.getsize(s) if isinstance(s, str) else len(s or b"") for s in sample]
    return 1 if np.mean(sizes) < _SMALL_FILE_BYTES else os.cpu_count() or 1


def _run_chunked(work: Callable[[int], None], count: int, workers: int) -> None:
    """Call ``work(i)`` for i in range(count) on ``workers`` threads, in chunks of indices."""

    def run(start: int) -> None:
        for i in range(start, min(start + _DECODE_CHUNK, count)):
            work(i)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, range(0, count, _DECODE_CHUNK)))


def _resize_square(images: np.ndarray, size: int) -> np.ndarray:
    """Resize square images (N, H, H) or (N, H, H, 3) to ``size`` with bicubic filtering."""
    resized = np.empty((len(images), size, size, *images.shape[3:]), np.uint8)

    def resize(i: int) -> None:
        resized[i] = np.asarray(Image.fromarray(images[i]).resize((size, size), Image.Resampling.BICUBIC))

    _run_chunked(resize, len(images), 1 if images.shape[1] < 64 else os.cpu_count() or 1)
    return resized


# ----------------------------------------------------------------------- undecoded listing (stores)


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


def list_encoded(spec: str, split: str = "train") -> EncodedListing | None:
    """The images of one split of ``spec`` without decoding them; None when there is no such split.

    Image folders (ImageNet-style ``train/<wnid>/*.JPEG`` and ``val/<wnid>/...``) and parquet files or
    sharded parquet folders (``train-00000-of-00004.parquet`` ...) are listed file by file and row
    group by row group; built-in, torchvision and Hugging Face sources (digits, CIFAR, STL-10 and its
    unlabelled split, ``hf:``) are read as their decoded arrays.
    """
    if spec.lower() == "digits" or _TORCHVISION_SPEC.match(spec) or spec.lower().startswith(HF_PREFIX):
        data = _load(spec, split, None, "error", False, None)
        return None if data is None else _listing_from_arrays(data)
    found = _locate_path(spec, split)
    if found is None:
        return None
    kind, where, name, siblings = found
    return _listing_parquet(where, name, split, siblings) if kind == "parquet" else _listing_folder(where, split)


def _listing_from_arrays(data: ImageData) -> EncodedListing:
    def chunks(n: int):
        for start in range(0, len(data), n):
            yield [(f"{data.name} #{i}", data.images[i]) for i in range(start, min(start + n, len(data)))]

    return EncodedListing(data.name, data.fingerprint, len(data), data.labels, data.classes, chunks)


def _listing_folder(root: Path, split: str) -> EncodedListing | None:
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


def _listing_parquet(files: list[Path], name: str, split: str, siblings: list[Path]) -> EncodedListing:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    image_column, _, _ = _parquet_columns(files)
    counts = [pq.ParquetFile(f).metadata.num_rows for f in files]
    if sum(counts) == 0:
        raise UserError(f"no images (no rows) in {', '.join(map(str, files))}")
    labels, classes = _parquet_split_labels(files, siblings)
    key = decoded_cache.fingerprint(kind="parquet-files", files=decoded_cache.file_stats(files), split=split,
                                    **_parquet_names_key(files, siblings))

    def chunks(n: int):
        for f in files:
            row = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=n, columns=[image_column]):
                encoded = pc.struct_field(batch.column(0), "bytes").to_pylist()
                yield [(f"{f} row {row + i}", b if b is not None else b"") for i, b in enumerate(encoded)]
                row += len(encoded)

    return EncodedListing(name, key, sum(counts), labels, classes, chunks)


# ---------------------------------------------------------------------------------- Hugging Face

HF_PREFIX = "hf:"


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise UserError("--data hf:...: Hugging Face data needs datasets: pip install 'gsimclr[hf]'") from None
    return datasets


def _split_hf_spec(rest: str) -> tuple[str, str | None]:
    """(name or local path, config or None) from ``NAME[:CONFIG]``; an existing path is never split."""
    if not rest:
        raise UserError("--data hf:NAME[:CONFIG]: the dataset name is missing")
    if Path(rest).expanduser().exists() or ":" not in rest:
        return rest, None
    name, config = rest.rsplit(":", 1)
    return name, config or None


HUB_PROBE_SECONDS = 3.0
"""How long :func:`hub_reachable` waits for the Hugging Face Hub before calling it unreachable."""


def _open_hf(name: str, config: str | None):
    """The DatasetDict (or Dataset) for ``name``: ``load_from_disk`` for a folder written by
    ``save_to_disk``, else ``load_dataset`` (a hub id, or a local data folder or script). A hub id
    without network (offline mode set, or the Hub unreachable within :data:`HUB_PROBE_SECONDS`) is
    loaded from the local Hugging Face cache alone, failing at once when it is not there."""
    datasets = _import_datasets()
    path = Path(name).expanduser()
    spec = f"hf:{name}{':' + config if config else ''}"
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            return datasets.load_from_disk(str(path))
        if path.exists() or _hub_offline(datasets):
            return datasets.load_dataset(str(path) if path.exists() else name, config)
        endpoint = _hub_endpoint()
        if hub_reachable(endpoint):
            return datasets.load_dataset(name, config)
        with _offline_mode(datasets):
            try:
                return datasets.load_dataset(name, config)
            except Exception:
                raise UserError(f"--data {spec}: no network ({endpoint} is unreachable) and the data set is not in "
                                "the local Hugging Face cache: connect, or download it first (HF_HUB_OFFLINE=1 "
                                "then reads the cache alone)") from None
    except UserError:
        raise
    except Exception as exc:  # not found, offline, bad config, corrupt files: all "cannot load this data set"
        detail = " ".join(str(exc).split())[:300]
        raise UserError(f"--data {spec}: cannot load it with datasets: {type(exc).__name__}: {detail}") from None


def _hub_offline(datasets) -> bool:
    """Whether offline mode is on (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``, as datasets read them)."""
    return bool(getattr(datasets.config, "HF_HUB_OFFLINE", False) or getattr(datasets.config, "HF_DATASETS_OFFLINE",
                                                                               False))


def _hub_endpoint() -> str:
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except (ImportError, AttributeError):
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_reachable(endpoint: str, timeout: float | None = None) -> bool:
    """Whether ``endpoint`` answers an HTTP request (any status: the server is there) within ``timeout``
    seconds (default :data:`HUB_PROBE_SECONDS`), name resolution and proxies (``HTTPS_PROXY``) included."""
    import threading
    import urllib.error
    import urllib.request

    wait = timeout or HUB_PROBE_SECONDS
    result: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=wait).close()
            result.append(True)
        except urllib.error.HTTPError:  # an answer, if not a welcome one
            result.append(True)
        except (OSError, ValueError):  # no route, no name, refused, timed out, not a URL
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # name resolution has no timeout of its own
    thread.start()
    thread.join(wait)
    return bool(result and result[0])


@contextlib.contextmanager
def _offline_mode(datasets):
    """datasets and huggingface_hub in offline mode (the local cache only) for the duration."""
    import huggingface_hub.constants as hub

    targets = [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"), (hub, "HF_HUB_OFFLINE")]
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr in targets if hasattr(obj, attr)]
    for obj, attr, _ in saved:
        setattr(obj, attr, True)
    try:
        yield
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)


def _hf_split(dataset, split: str):
    """The split of a DatasetDict by :data:`SPLIT_ALIASES`; a lone Dataset is the train split."""
    if not hasattr(dataset, "keys"):
        return dataset if split == "train" else None
    names = {str(k).lower(): k for k in dataset.keys()}
    return next((dataset[names[a]] for a in _split_aliases(split) if a in names), None)


def _hf_columns(features, name: str) -> tuple[str, str | None]:
    """(image column: the first Image feature, label column: the first ClassLabel, else an integer
    ``label``/``labels`` column, else None)."""
    datasets = _import_datasets()
    image = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
    if image is None:
        raise UserError(f"--data hf:{name}: no Image column among {', '.join(features)}")
    label = next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    if label is None:
        label = next((c for c in ("label", "labels") if c in features and isinstance(features[c], datasets.Value)
                      and features[c].dtype.startswith("int")), None)
    return image, label


def _load_hf(rest: str, split: str, image_size, on_corrupt, cache, cache_dir) -> ImageData | None:
    """A Hugging Face data set split, decoded like parquet images (same resizing, corrupt-image
    handling and decoded-image cache, keyed by the data set's own fingerprint and files)."""
    name, config = _split_hf_spec(rest)
    part = _hf_split(_open_hf(name, config), split)
    if part is None:
        return None
    options = {"split": split, "image_size": image_size, "on_corrupt": on_corrupt}
    files = [f["filename"] for f in part.cache_files if os.path.exists(f["filename"])]
    key = decoded_cache.fingerprint(kind="hf", name=name, config=config, dataset=part._fingerprint,
                                    files=decoded_cache.file_stats(files), **options)
    label = Path(name).name if Path(name).expanduser().exists() else name
    plan = _Plan(key, lambda: _decode_hf(part, name, label, key, options))
    return plan.decode() if not cache else _load_through_cache(plan, cache_dir)


def _decode_hf(part, name: str, label_name: str, key: str, options: dict) -> ImageData:
    datasets = _import_datasets()
    image_column, label_column = _hf_columns(part.features, name)
    if len(part) == 0:
        raise UserError(f"--data hf:{name}: the {options['split']} split has no rows")
    raw = part.cast_column(image_column, datasets.Image(decode=False))[image_column]
    sources = [r["bytes"] if r.get("bytes") else r.get("path") for r in raw]
    row_names = [f"hf:{name} {options['split']} row {i}" for i in range(len(sources))]
    missing = [i for i, s in enumerate(sources) if not s]
    for i in missing:  # neither bytes nor a path: an unreadable image, reported like a corrupt one
        sources[i] = b""
    images, kept = _decode_images(sources, row_names, options)
    labels, classes = None, None
    if label_column:
        labels = np.array([-1 if v is None else v for v in part[label_column]], dtype=np.int64)[kept]
        feature = part.features[label_column]
        classes = [str(n) for n in feature.names] if isinstance(feature, datasets.ClassLabel) else None
    return ImageData(images, labels, classes, label_name, key, len(sources) - len(kept))
