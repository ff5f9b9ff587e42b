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
(bicubic) so that its shorter side is that size, then centre-cropped. EXIF orientation is applied;
transparent pixels are composited onto black. Decoded parquet and image-folder data is cached on disk
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

import io
import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from gsimclr.data import cache as decoded_cache
from gsimclr.data.dataset import ImageData
from gsimclr.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
DEFAULT_IMAGE_SIZE = 256
DEFAULT_TORCHVISION_ROOT = "~/.cache/gsimclr/datasets"
ON_CORRUPT = ("skip", "error")
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
) -> ImageData | None:
    """Load one split of the data set named by ``spec``; None when the source has no such split.

    ``image_size`` is the square output size (default: see the module docstring). ``on_corrupt`` is
    ``"skip"`` (drop unreadable images, count them in ``ImageData.skipped`` and warn) or ``"error"``
    (raise :class:`UserError` naming the file). ``cache`` and ``cache_dir`` control the decoded-image
    cache. Raises :class:`UserError` for a missing path, an unknown spec or a source without images.
    """
    _check_options(image_size, on_corrupt)
    data = _load(spec, split, image_size, on_corrupt, cache, cache_dir)
    if data is not None and data.skipped:
        warnings.warn(f"skipped {data.skipped} unreadable image(s) in {spec} ({split})", stacklevel=2)
    return data


def _check_options(image_size: int | None, on_corrupt: str) -> None:
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise UserError(f"image size must be a positive integer, got {image_size!r}")
    if on_corrupt not in ON_CORRUPT:
        raise UserError(f"on_corrupt must be one of {', '.join(ON_CORRUPT)}, got {on_corrupt!r}")


def _load(spec, split, image_size, on_corrupt, cache, cache_dir) -> ImageData | None:
    """Dispatch ``spec`` to its source; file-based sources go through the decoded-image cache."""
    if spec.lower().startswith(HF_PREFIX):
        return _load_hf(spec[len(HF_PREFIX):], split, image_size, on_corrupt, cache, cache_dir)
    if spec.lower() == "digits":
        return _load_digits(split, image_size)
    match = _TORCHVISION_SPEC.match(spec)
    if match:
        return _load_torchvision(match.group(1).lower(), match.group(2), split, image_size)
    plan = _plan_path(spec, split, image_size, on_corrupt)
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
    except OSError as exc:
        warnings.warn(f"could not write the decoded-image cache: {exc}", stacklevel=4)
    return data


def _plan_path(spec: str, split: str, image_size: int | None, on_corrupt: str) -> _Plan | None:
    """Resolve a path spec to a parquet or image-folder plan for ``split``."""
    path = Path(spec).expanduser()
    if not path.exists():
        if "/" in spec or os.sep in spec or path.suffix:
            raise UserError(f"data path does not exist: {spec}")
        raise UserError(f"unknown data source {spec!r}: not a file or folder, nor one of {KNOWN_NAMES}")
    path = path.resolve()
    options = {"split": split, "image_size": image_size, "on_corrupt": on_corrupt}
    if path.is_file():
        if path.suffix.lower() != ".parquet":
            raise UserError(f"not a parquet file or an image folder: {spec}")
        return _plan_parquet([path], path.stem, options) if split == "train" else None
    parquet_files = sorted(path.glob("*.parquet")) + sorted(path.glob("*/*.parquet"))
    if parquet_files:
        files = _parquet_split_files(parquet_files, split)
        return _plan_parquet(files, path.name, options) if files else None
    return _plan_folder(path, options)


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


def _plan_parquet(files: list[Path], name: str, options: dict) -> _Plan:
    key = decoded_cache.fingerprint(kind="parquet", files=decoded_cache.file_stats(files), **options)
    return _Plan(key, lambda: _decode_parquet(files, name, key, options))


def _decode_parquet(files: list[Path], name: str, key: str, options: dict) -> ImageData:
    """Read the image bytes and labels of ``files`` and decode the images."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = pq.read_schema(files[0])
    image_column = _parquet_image_column(schema, files[0])
    label_column = next(
        (c for c in ("label", "labels") if c in schema.names and pa.types.is_integer(schema.field(c).type)), None
    )
    tables = [pq.read_table(f, columns=[image_column] + ([label_column] if label_column else [])) for f in files]
    table = pa.concat_tables(tables)
    if table.num_rows == 0:
        raise UserError(f"no images (no rows) in {', '.join(map(str, files))}")
    encoded = pc.struct_field(table.column(image_column), "bytes").to_pylist()
    row_names = [f"{f} row {row}" for f, t in zip(files, tables) for row in range(t.num_rows)]
    images, kept = _decode_images(encoded, row_names, options)
    labels, classes = None, None
    if label_column:
        labels = table.column(label_column).fill_null(-1).to_numpy()[kept]
        classes = _parquet_class_names(schema, label_column)
    return ImageData(images, labels, classes, name, key, len(encoded) - len(kept))


def _parquet_image_column(schema, path: Path) -> str:
    """The first column whose type is a struct with a ``bytes`` field (Hugging Face's Image feature)."""
    import pyarrow as pa

    for field in schema:
        if pa.types.is_struct(field.type) and field.type.get_field_index("bytes") >= 0:
            return field.name
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
    split_dirs = _split_dirs(root)
    if split_dirs is None:
        folder = root if options["split"] == "train" else None
        classes = _class_dirs(root)
    else:
        folder = next((split_dirs[a] for a in _split_aliases(options["split"]) if a in split_dirs), None)
        classes = sorted({c for d in split_dirs.values() for c in _class_dirs(d)})
    if folder is None:
        return None
    files = _image_files(folder)
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {folder}")
    labels = _folder_labels(folder, files, classes) if classes else None
    stats = decoded_cache.file_stats(files)
    key = decoded_cache.fingerprint(kind="folder", files=stats, classes=classes, **options)
    return _Plan(key, lambda: _decode_folder(files, labels, classes or None, root.name, key, options))


def _split_dirs(root: Path) -> dict[str, Path] | None:
    """Sub-folders by lower-case name when ``root`` has a ``train/`` sub-folder, else None."""
    subdirs = {d.name.lower(): d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")}
    return subdirs if "train" in subdirs else None


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _image_files(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursively, hidden names skipped), in sorted order."""
    found = []
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            os.path.join(parent, n)
            for n in sorted(names)
            if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return found


def _folder_labels(folder: Path, files: list[str], classes: list[str]) -> np.ndarray:
    """Label of each file: the index of its top-level sub-folder in ``classes``; -1 for loose files."""
    index = {c: i for i, c in enumerate(classes)}
    parts = (Path(f).relative_to(folder).parts for f in files)
    return np.array([index[p[0]] if len(p) > 1 else -1 for p in parts], dtype=np.int64)


def _decode_folder(files, labels, classes, name, key, options) -> ImageData:
    images, kept = _decode_images(files, files, options)
    return ImageData(
        images,
        None if labels is None else labels[kept],
        classes,
        name,
        key,
        len(files) - len(kept),
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
            images[i] = _decode_one(sources[i], size)
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


def _decode_one(source: str | bytes, size: int) -> np.ndarray:
    """Decode one image file or encoded bytes to upright RGB, shorter side resized to ``size``, centre-cropped."""
    with Image.open(_openable(source)) as img:
        img.draft(None, (size, size))  # JPEG: decode at a reduced scale when much larger than needed
        upright = _to_rgb(ImageOps.exif_transpose(img))
        if upright.size != (size, size):
            upright = ImageOps.fit(upright, (size, size), Image.Resampling.BICUBIC)
        return np.asarray(upright)


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB version of ``img``; transparent pixels are composited onto black."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return img.convert("RGB")


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


def _open_hf(name: str, config: str | None):
    """The DatasetDict (or Dataset) for ``name``: ``load_from_disk`` for a folder written by
    ``save_to_disk``, else ``load_dataset`` (a hub id, or a local data folder or script)."""
    datasets = _import_datasets()
    path = Path(name).expanduser()
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            return datasets.load_from_disk(str(path))
        return datasets.load_dataset(str(path) if path.exists() else name, config)
    except Exception as exc:  # not found, offline, bad config, corrupt files: all "cannot load this data set"
        detail = " ".join(str(exc).split())[:300]
        raise UserError(f"--data hf:{name}{':' + config if config else ''}: cannot load it with datasets: "
                        f"{type(exc).__name__}: {detail}") from None


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
