"""Hugging Face-style parquet data sets: ``PATH.parquet`` or a folder of ``*.parquet`` files (sharded,
``train-*``/``test-*`` name prefixes give the splits); the image column is a struct with ``bytes`` (or,
where those are null, a ``path`` to the image file: :func:`image_payloads`), the
labels ``label``/``labels`` (integers, whole-number floats, or strings mapped to class indices in the
sorted names of every split); a null, -1 or out-of-range label is an error naming its row. Decoded
data and the encoded store read labels through the same code."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from gsimclr.data import cache as decoded_cache
from gsimclr.data.dataset import ImageData
from gsimclr.data.sources.base import SPLIT_ALIASES, EncodedListing, Plan, split_aliases
from gsimclr.data.sources.decoding import decode_images
from gsimclr.errors import UserError


def parquet_split_files(files: list[Path], split: str, root: Path | None = None) -> list[Path]:
    """The files of ``split``, chosen by name prefix (``train-00000-of-00002.parquet``) or by the name of the
    sub-folder of ``root`` they lie in (``train/0000.parquet``, ``test/0000.parquet``: the test shards
    were read as training data); files without any split name are all "train"."""
    known = tuple(alias for aliases in SPLIT_ALIASES.values() for alias in aliases)

    def names(f: Path) -> list[str]:
        return [f.name.lower()] + ([f.parent.name.lower()] if root is not None and f.parent != root else [])

    if not any(n.startswith(known) for f in files for n in names(f)):
        return files if split == "train" else []
    for prefix in split_aliases(split):
        chosen = [f for f in files if any(n.startswith(prefix) for n in names(f))]
        if chosen:
            return chosen
    return []


def plan_parquet(files: list[Path], name: str, options: dict, siblings: list[Path]) -> Plan:
    key = decoded_cache.fingerprint(kind="parquet", files=decoded_cache.file_stats(files), **options,
                                    **_parquet_names_key(files, siblings), **_referenced_files_key(files))
    return Plan(key, lambda: _decode_parquet(files, name, key, options, siblings))


def _parquet_names_key(files: list[Path], siblings: list[Path]) -> dict:
    """Extra fingerprint parts for string labels, whose class names come from every split's files."""
    _, label_column, kind = _parquet_columns(files)
    if kind != "str":
        return {}
    return {"class_names_from": decoded_cache.file_stats(siblings), "string_labels": 2}


def _referenced_files_key(files: list[Path]) -> dict:
    """Extra fingerprint part for rows whose image is a ``path`` to a file (null ``bytes``): each such
    file's size and time, so that editing or replacing an image it points to is not served from the
    cache. Parquet files whose statistics show no null ``bytes`` (every image inside) are not read, and
    add nothing: their fingerprint is unchanged."""
    import pyarrow.parquet as pq

    image_column, _, _ = _parquet_columns(files)
    referenced: list[str] = []
    for f in files:
        meta = pq.ParquetFile(f).metadata
        nulls = []
        for group in range(meta.num_row_groups):
            for i in range(meta.num_columns):
                column = meta.row_group(group).column(i)
                if column.path_in_schema == f"{image_column}.bytes":
                    stats = column.statistics if column.is_stats_set else None
                    nulls.append(None if stats is None or not stats.has_null_count else stats.null_count)
        if nulls and all(n == 0 for n in nulls):
            continue
        table = _read_parquet_table(f, [image_column])
        referenced += [p for p in image_payloads(table.column(image_column), f) if isinstance(p, str)]
    existing = [p for p in referenced if Path(p).is_file()]
    return {"referenced_files": decoded_cache.file_stats(existing)} if referenced else {}


def _decode_parquet(files: list[Path], name: str, key: str, options: dict, siblings: list[Path]) -> ImageData:
    """Read the image bytes and labels of ``files`` and decode the images (columns and labels: see
    :func:`_parquet_columns` and :func:`_parquet_split_labels`)."""
    image_column, label_column, _ = _parquet_columns(files)
    tables = [_read_parquet_table(f, [image_column]) for f in files]
    if sum(t.num_rows for t in tables) == 0:
        raise UserError(f"no images (no rows) in {', '.join(map(str, files))}")
    labels, classes = _parquet_split_labels(files, siblings)
    encoded = [b for f, t in zip(files, tables) for b in image_payloads(t.column(image_column), f)]
    row_names = [f"{f} row {row}" for f, t in zip(files, tables) for row in range(t.num_rows)]
    images, kept = decode_images(encoded, row_names, options)
    return ImageData(images, None if labels is None else labels[kept], classes, name, key, len(encoded) - len(kept))


def image_payloads(column, parquet_file: Path) -> list[bytes | str | None]:
    """Each row's image: its encoded ``bytes``, else the file at its ``path`` (a Hugging Face Image column
    written from local files, e.g. by ``Dataset.to_parquet``, holds ``{"bytes": null, "path": ...}``), a
    relative path taken from the parquet file's folder when the file is there, else as given; None
    (unreadable, counted or named like a corrupt image) when a row has neither."""
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.struct_field(column, "bytes").to_pylist()
    index = column.type.get_field_index("path")
    if index < 0 or not pa.types.is_string(column.type.field(index).type) or all(b is not None for b in encoded):
        return encoded
    paths = pc.struct_field(column, "path").to_pylist()
    return [b if b is not None or not p else _image_path(p, parquet_file) for b, p in zip(encoded, paths)]


def _image_path(path: str, parquet_file: Path) -> str:
    beside = Path(parquet_file).parent / Path(path).expanduser()
    return str(beside) if beside.is_file() else str(Path(path).expanduser())


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
        schema = _read_parquet_schema(files[0])
        alike = [c for c in schema.names if any(w in c.lower() for w in ("label", "class", "target"))
                 and _label_kind(schema, c) in ("int", "str")]
        if alike:
            warnings.warn(f"{files[0]} has no 'label' or 'labels' column: the data is read as unlabelled (its column(s) "
                          f"{', '.join(map(repr, alike))} look like labels: rename one to 'label')", stacklevel=5)
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
    classes = _parquet_class_names(_read_parquet_schema(files[0]), column, files[0])
    labels = numeric_labels(values, row, column, classes)
    return (None, None) if labels is None else (labels, classes)


MAX_CLASSES = 1_000_000
"""Integer labels without class names must be below this: a classifier has one output per index up to the
largest label, so an id such as 10**12 asked for terabytes (an "out of memory" blaming the options)."""


def numeric_labels(values: np.ndarray, row, column: str, classes: list[str] | None) -> np.ndarray | None:
    """Numeric labels (float64, NaN for null) as int64 class indices, or None (with a warning) when all
    are null or -1 (an unlabelled set). Some null or -1 labels, a negative label, a fraction, or a label
    past ``classes`` is an error naming its row (``row(i)``); the rule of parquet and Hugging Face data."""
    missing = np.isnan(values) | (values == -1)
    if missing.all():
        warnings.warn(f"label column {column!r} holds only nulls (or -1): the data is unlabelled", stacklevel=5)
        return None
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise UserError(f"{row(first)}: null label in column {column!r} ({int(missing.sum())} of {len(values)} rows "
                        "null or -1); fill or remove those rows")
    bad = (values < 0) | (values != np.round(values)) | (values >= (len(classes) if classes else MAX_CLASSES))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        allowed = (f"0 to {len(classes) - 1} (the schema's {len(classes)} class names)" if classes else
                   f"0 to {MAX_CLASSES - 1:,} (ids of another kind can be strings: each distinct one becomes a class)")
        raise UserError(f"{row(first)}: label {values[first]:.15g} in column {column!r} is not a class index: labels "
                        f"must be whole numbers {allowed}")
    return values.astype(np.int64)


def _label_values(values, kind: str) -> np.ndarray:
    """A label column as numbers (float64, NaN for null) or, for string labels, as an object array (None for null)."""
    import pyarrow as pa

    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if kind == "str":
        return np.array(values.to_pylist(), dtype=object)
    return values.cast(pa.float64()).to_numpy(zero_copy_only=False)


def _string_labels(values: np.ndarray, row, column: str, files: list[Path], siblings: list[Path]):
    def other_names():  # the other splits' names, so that every split maps a name to the same index
        for f in siblings:
            if f in files:
                continue
            schema = _read_parquet_schema(f)
            if column in schema.names and _label_kind(schema, column) == "str":
                yield from _label_values(_read_parquet_table(f, [column]).column(column), "str").tolist()

    return string_labels(values, row, column, other_names)


def string_labels(values: np.ndarray, row, column: str, other_names=None):
    """String labels (an object array, None for null) as int64 indices into the sorted names found in
    ``values`` and ``other_names()`` (the other splits' labels, read only when needed), and those names;
    (None, None) with a warning when all are null; some null is an error naming the first row."""
    nulls = np.array([v is None for v in values], bool)
    if nulls.all():
        warnings.warn(f"label column {column!r} holds only nulls: the data is unlabelled", stacklevel=6)
        return None, None
    if nulls.any():
        first = int(np.flatnonzero(nulls)[0])
        raise UserError(f"{row(first)}: null label in column {column!r} ({int(nulls.sum())} of {len(values)} rows); "
                        "fill or remove those rows")
    names = set(values.tolist())
    if other_names is not None:
        names.update(v for v in other_names() if v is not None)
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
    """The first of ``label``/``labels``, else the first ClassLabel of the schema metadata
    (:func:`_class_label_column`), else None (unlabelled); one holding neither numbers nor strings
    is an error (rather than a set silently read as unlabelled)."""
    column = next((c for c in ("label", "labels") if c in schema.names), None) or _class_label_column(schema)
    if column is not None and _label_kind(schema, column) is None:
        raise UserError(f"parquet file {path}: label column {column!r} has type {schema.field(column).type}; "
                        "labels must be integers or strings")
    return column


def _class_label_column(schema) -> str | None:
    """The first column that the ``huggingface`` schema metadata calls a ClassLabel (CIFAR-100's
    ``fine_label``, as ``hf:`` data picks it); None when there is none or the metadata cannot be read (an
    unlabelled set does not fail on metadata it never needed)."""
    try:
        features = json.loads((schema.metadata or {}).get(b"huggingface", b"null"))["info"]["features"]
        return next((c for c, f in features.items() if c in schema.names and isinstance(f, dict)
                     and f.get("_type") == "ClassLabel"), None)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _parquet_image_column(schema, path: Path, required: bool = True) -> str | None:
    """The first column whose type is a struct with a ``bytes`` field (Hugging Face's Image feature)."""
    import pyarrow as pa

    wrong = None
    for field in schema:
        if pa.types.is_struct(field.type) and field.type.get_field_index("bytes") >= 0:
            kind = field.type.field("bytes").type
            if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
                return field.name
            wrong = wrong or (field.name, kind)   # a str "bytes" was read as a file path, an int failed deep inside
    if not required:
        return None
    if wrong:
        raise UserError(f"parquet file {path}: column {wrong[0]!r} has a 'bytes' field of type {wrong[1]}, not binary; "
                        "the image column's 'bytes' must hold the encoded image files")
    raise UserError(f"no image column (a struct with a 'bytes' field) in parquet file {path}")


def _parquet_class_names(schema, label_column: str, path: Path | None = None) -> list[str] | None:
    """Class names from the ``huggingface`` schema metadata (a ClassLabel feature), if present. Metadata
    that is not JSON, or a ClassLabel whose names are not a list, is an error naming ``path``; metadata of
    another shape (no ``info.features`` mapping) holds no class names."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except ValueError as exc:   # JSONDecodeError, UnicodeDecodeError
        raise UserError(f"parquet file {path}: its 'huggingface' schema metadata is not valid JSON ({_first_line(exc)}); "
                        "fix or remove it") from None
    info = meta.get("info") if isinstance(meta, dict) else None
    features = info.get("features") if isinstance(info, dict) else None
    feature = features.get(label_column) if isinstance(features, dict) else None
    if not isinstance(feature, dict) or feature.get("_type") != "ClassLabel" or "names" not in feature:
        return None
    names = feature["names"]
    if not isinstance(names, list) or any(isinstance(n, (dict, list)) or n is None for n in names):
        raise UserError(f"parquet file {path}: the 'huggingface' schema metadata gives label column {label_column!r} "
                        f"class names that are not a list of names ({_first_line(ValueError(names))}); fix or remove it")
    return [str(n) for n in names]


def list_parquet(files: list[Path], name: str, split: str, siblings: list[Path]) -> EncodedListing:
    import pyarrow.parquet as pq

    image_column, _, _ = _parquet_columns(files)
    counts = [pq.ParquetFile(f).metadata.num_rows for f in files]
    if sum(counts) == 0:
        raise UserError(f"no images (no rows) in {', '.join(map(str, files))}")
    labels, classes = _parquet_split_labels(files, siblings)
    key = decoded_cache.fingerprint(kind="parquet-files", files=decoded_cache.file_stats(files), split=split,
                                    **_parquet_names_key(files, siblings), **_referenced_files_key(files))

    def chunks(n: int):
        for f in files:
            row = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=n, columns=[image_column]):
                encoded = image_payloads(batch.column(0), f)
                yield [(f"{f} row {row + i}", b if b is not None else b"") for i, b in enumerate(encoded)]
                row += len(encoded)

    return EncodedListing(name, key, sum(counts), labels, classes, chunks)
