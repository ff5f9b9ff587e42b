"""Tiny data sets for ``--smoke`` (and the parquet writer ``scripts/pack_for_device.py`` uses): the Hugging
Face parquet layout that gsimclr's parquet source reads, as the real data travels to the GPU machine."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path


def make_smoke_data(folder: Path) -> dict[str, str]:
    """Tiny CIFAR-10-like and imagenet5-like data sets in the Hugging Face parquet layout (the same reader
    as the real data), made of shapes and colours that differ by class."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)

    def images(n, classes, size):
        rows = []
        for i in range(n):
            label = i % classes
            arr = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)
            arr[..., label % 3] += np.uint8(120 + 10 * label)
            h = size[1] // 2
            arr[h - 2 - label:h + 2 + label, :, (label + 1) % 3] = 255
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            rows.append((buf.getvalue(), label))
        return rows

    out = {}
    for name, classes, size, n_train, n_test in (("cifar10", 10, (32, 32), 160, 60), ("imagenet5", 5, (40, 30), 100, 40)):
        d = folder / name
        d.mkdir(parents=True, exist_ok=True)
        names = [f"class{i}" for i in range(classes)]
        for split, n in (("train", n_train), ("test", n_test)):
            rows = images(n, classes, size)
            write_parquet(d / f"{split}-00000-of-00001.parquet", [r[0] for r in rows], [r[1] for r in rows], names,
                          [f"{i}.png" for i in range(n)])
        out[name] = str(d)
    del pa, pq
    return out


def write_parquet(path: Path, blobs: list[bytes], labels: list[int], class_names: list[str], paths: list[str]) -> None:
    """A Hugging Face ``datasets`` parquet file: ``image`` {bytes, path} and a ClassLabel ``label``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "image": pa.array([{"bytes": b, "path": p} for b, p in zip(blobs, paths)],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "label": pa.array(labels, pa.int64()),
    })
    features = {"image": {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": class_names}}
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
