"""Hugging Face data sets: ``hf:NAME[:CONFIG]``, a hub id (downloaded by ``datasets``) or a local folder
(``save_to_disk`` or a data folder); the image column is the first Image feature, the labels the first
ClassLabel (else a ``label``/``labels`` column of numbers or strings), read by the rules of parquet
labels (:func:`~gsimclr.data.sources.parquet.numeric_labels`). Decoded like parquet images (``resize`` too), through the
decoded-image cache keyed by the data set's own fingerprint and files. Without network a hub id is
read from the local cache alone, or fails at once (:func:`hub_reachable`)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from gsimclr.data import cache as decoded_cache
from gsimclr.data.dataset import ImageData
from gsimclr.data.sources.base import DataSource, Plan, Request, register_source, split_aliases
from gsimclr.data.sources.decoding import decode_images
from gsimclr.data.sources.parquet import numeric_labels, string_labels
from gsimclr.errors import UserError


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
    return next((dataset[names[a]] for a in split_aliases(split) if a in names), None)


def _hf_columns(features, name: str) -> tuple[str, str | None, str | None]:
    """(image column: the first Image feature, label column: the first ClassLabel, else a ``label``/``labels``
    column of integers, floats or strings, else None; its kind: "class", "number", "str" or None). A
    ``label``/``labels`` column of another type is an error, as for parquet (not a set silently unlabelled)."""
    datasets = _import_datasets()
    image = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
    if image is None:
        raise UserError(f"--data hf:{name}: no Image column among {', '.join(features)}")
    label = next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    if label is not None:
        return image, label, "class"
    label = next((c for c in ("label", "labels") if c in features), None)
    if label is None:
        return image, None, None
    dtype = getattr(features[label], "dtype", None) if isinstance(features[label], datasets.Value) else None
    if dtype and dtype.startswith(("int", "uint", "float")):
        return image, label, "number"
    if dtype in ("string", "large_string"):
        return image, label, "str"
    raise UserError(f"--data hf:{name}: label column {label!r} is {features[label]}; labels must be integers or "
                    "strings (or a ClassLabel)")


def _load_hf(rest: str | None, request: Request) -> ImageData | None:
    """A Hugging Face data set split, decoded like parquet images (same resizing, corrupt-image
    handling and decoded-image cache, keyed by the data set's own fingerprint and files)."""
    name, config = _split_hf_spec(rest or "")
    dataset = _open_hf(name, config)
    part = _hf_split(dataset, request.split)
    if part is None:
        return None
    options = {"split": request.split, "image_size": request.image_size, "on_corrupt": request.on_corrupt}
    if request.resize != "crop":  # only then, so that the caches of crop-decoded data keep their keys
        options["resize"] = request.resize
    files = [f["filename"] for f in part.cache_files if os.path.exists(f["filename"])]
    others = [p for p in (dataset.values() if hasattr(dataset, "keys") else ()) if p is not part]
    _, label_column, kind = _hf_columns(part.features, name)
    names_from = {"names_from": sorted(p._fingerprint for p in others)} if kind == "str" else {}
    key = decoded_cache.fingerprint(kind="hf", name=name, config=config, dataset=part._fingerprint,
                                    files=decoded_cache.file_stats(files), labels=2, **names_from, **options)
    label = Path(name).name if Path(name).expanduser().exists() else name
    return Plan(key, lambda: _decode_hf(part, others, name, label, key, options)).load(request)


def _decode_hf(part, others, name: str, label_name: str, key: str, options: dict) -> ImageData:
    datasets = _import_datasets()
    image_column, label_column, kind = _hf_columns(part.features, name)
    if len(part) == 0:
        raise UserError(f"--data hf:{name}: the {options['split']} split has no rows")
    raw = part.cast_column(image_column, datasets.Image(decode=False))[image_column]
    sources = [r["bytes"] if r.get("bytes") else r.get("path") for r in raw]
    row_names = [f"hf:{name} {options['split']} row {i}" for i in range(len(sources))]
    missing = [i for i, s in enumerate(sources) if not s]
    for i in missing:  # neither bytes nor a path: an unreadable image, reported like a corrupt one
        sources[i] = b""
    labels, classes = _hf_labels(part, others, label_column, kind, row_names.__getitem__)
    images, kept = decode_images(sources, row_names, options)
    return ImageData(images, None if labels is None else labels[kept], classes, label_name, key,
                     len(sources) - len(kept))


def _hf_labels(part, others, column: str | None, kind: str | None, row):
    """(int64 labels or None, class names or None) of a split, by the rules of parquet labels
    (:func:`~gsimclr.data.sources.parquet.numeric_labels`: some null or -1 labels are an error naming the row,
    all of them an unlabelled set; string labels index the sorted names of every split)."""
    if column is None:
        return None, None
    values = part[column]
    if kind == "str":
        def other_names():
            for other in others:
                if column in other.features:
                    yield from other[column]

        return string_labels(np.array(values, dtype=object), row, column, other_names)
    feature = part.features[column]
    classes = [str(n) for n in feature.names] if kind == "class" else None
    numbers = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    labels = numeric_labels(numbers, row, column, classes)
    return (None, None) if labels is None else (labels, classes)


register_source("hf", DataSource("hf:NAME[:CONFIG]", "a Hugging Face dataset by id (downloaded by `datasets`) or a "
                                 "local folder (save_to_disk or a data folder); image column: its Image feature, "
                                 "labels: its ClassLabel", _load_hf))
