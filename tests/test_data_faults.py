"""Bad and unusual input data: each case is a one-line error or a correct result (issue 9)."""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gsimclr.data import load_split
from gsimclr.data.splits import holdout_split
from gsimclr.errors import UserError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GSIMCLR_CACHE", str(tmp_path / "cache"))


def png(path, color=(200, 10, 10), size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def encoded(img: Image.Image, fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


def parquet(path, images: list[bytes], labels=None, label_type=None):
    columns = {"image": pa.array([{"bytes": b, "path": None} for b in images])}
    if labels is not None:
        columns["label"] = pa.array(labels, type=label_type)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


# --------------------------------------------------------------------------------- symlinks


def test_dangling_and_looping_file_links_are_skipped_and_counted(tmp_path):
    root = tmp_path / "imgs"
    png(root / "cat" / "a.png")
    png(root / "dog" / "b.png")
    os.symlink(root / "missing.png", root / "cat" / "dangling.png")
    os.symlink(root / "dog" / "loop2.png", root / "dog" / "loop1.png")
    os.symlink(root / "dog" / "loop1.png", root / "dog" / "loop2.png")
    with pytest.warns(UserWarning, match="3 dangling or looping"):
        data = load_split(str(root), image_size=8)
    assert len(data) == 2 and data.skipped == 3
    assert data.labels.tolist() == [0, 1] and data.classes == ["cat", "dog"]


def test_directory_symlink_loop_does_not_repeat_a_class_or_leak_the_test_split(tmp_path):
    root = tmp_path / "set"
    for split in ("train", "test"):
        for c in ("a", "b"):
            png(root / split / c / f"{split}-{c}.png")
    os.symlink(root, root / "train" / "a" / "loop")          # back to the top: a loop
    os.symlink(root / "train", root / "train" / "b" / "up")   # back to the split folder: a loop
    os.symlink(root / "train" / "a", root / "train" / "alias")  # a second name for class a
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = load_split(str(root), image_size=8)
        test = load_split(str(root), "test", image_size=8)
    assert train.classes == ["a", "b"] and train.labels.tolist() == [0, 1]
    assert [os.path.basename(p) for p in train.paths] == ["train-a.png", "train-b.png"]
    assert len(test) == 2


def test_class_folder_reached_through_a_link_keeps_its_own_label(tmp_path):
    root = tmp_path / "imgs"
    png(root / "a" / "x.png")
    png(root / "b" / "y.png")
    os.symlink(root / "b", root / "a" / "more")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second name for a folder is no broken link
        data = load_split(str(root), image_size=8)
    assert data.labels.tolist() == [0, 1] and data.skipped == 0


@pytest.mark.parametrize("store", ["memory", "jpeg"])
def test_a_fifo_or_device_with_an_image_name_is_skipped_not_read_forever(tmp_path, store):
    """Reading a FIFO named x.jpg blocks until something writes to it: the command hung forever."""
    from gsimclr.config import load_config
    from gsimclr.pipeline import load_data

    root = tmp_path / "imgs"
    for c, colour in (("a", (200, 0, 0)), ("b", (0, 0, 200))):
        for i in range(3):
            png(root / c / f"{i}.png", colour)
    os.mkfifo(root / "a" / "pipe.jpg")
    os.symlink("/dev/zero", root / "b" / "zeros.png")   # endless: decoding it would never end either
    cfg = load_config(None, {"data": str(root), "image_size": 8, "batch_size": 2, "store": store})
    with pytest.warns(UserWarning, match=r"2 image name\(s\) .* not regular files"):
        train, test = load_data(cfg)
    assert len(train) + len(test) == 6
    for c in ("a", "b"):
        for i in range(3):
            os.remove(root / c / f"{i}.png")
    with pytest.warns(UserWarning), pytest.raises(UserError, match="no images"):
        load_data(cfg)


# --------------------------------------------------------------------------------- parquet


def test_file_named_parquet_that_is_not_parquet(tmp_path):
    bad = tmp_path / "data.parquet"
    bad.write_text("not parquet at all")
    with pytest.raises(UserError, match="not a readable parquet file"):
        load_split(str(bad))


def test_corrupt_shard_is_named(tmp_path):
    good = encoded(Image.new("RGB", (8, 8)))
    parquet(tmp_path / "set" / "train-00000-of-00002.parquet", [good, good], [0, 1])
    shard = parquet(tmp_path / "set" / "train-00001-of-00002.parquet", [good, good], [0, 1])
    raw = bytearray(shard.read_bytes())
    raw[4:len(raw) // 2] = b"\xff" * (len(raw) // 2 - 4)
    shard.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="train-00001-of-00002.parquet"):
        load_split(str(tmp_path / "set"))


def test_shards_with_different_schemas_are_named(tmp_path):
    good = encoded(Image.new("RGB", (8, 8)))
    parquet(tmp_path / "set" / "train-0.parquet", [good], [0])
    parquet(tmp_path / "set" / "train-1.parquet", [good], ["cat"])
    with pytest.raises(UserError, match="shards differ.*train-1.parquet"):
        load_split(str(tmp_path / "set"))
    parquet(tmp_path / "set2" / "train-0.parquet", [good], [0])
    pq.write_table(pa.table({"pixels": [1]}), tmp_path / "set2" / "train-1.parquet")
    with pytest.raises(UserError, match="shards differ.*image column"):
        load_split(str(tmp_path / "set2"))


def test_integer_label_widths_may_differ_between_shards(tmp_path):
    good = encoded(Image.new("RGB", (8, 8)))
    parquet(tmp_path / "set" / "train-0.parquet", [good], [0], pa.int32())
    parquet(tmp_path / "set" / "train-1.parquet", [good], [1], pa.int64())
    assert load_split(str(tmp_path / "set"), image_size=8).labels.tolist() == [0, 1]


def test_string_labels_become_sorted_class_indices(tmp_path):
    img = encoded(Image.new("RGB", (8, 8)))
    path = parquet(tmp_path / "s.parquet", [img] * 4, ["dog", "cat", "dog", "bird"])
    data = load_split(str(path), image_size=8)
    assert data.has_labels and data.classes == ["bird", "cat", "dog"]
    assert data.labels.tolist() == [2, 1, 2, 0]


def test_a_null_label_is_a_named_error_and_all_null_is_unlabelled(tmp_path):
    img = encoded(Image.new("RGB", (8, 8)))
    path = parquet(tmp_path / "n.parquet", [img] * 3, [0, None, 1], pa.int64())
    with pytest.raises(UserError, match=r"row 1: null label in column 'label' \(1 of 3"):
        load_split(str(path), image_size=8)
    path = parquet(tmp_path / "all.parquet", [img] * 2, [None, None], pa.int64())
    with pytest.warns(UserWarning, match="only nulls"):
        assert load_split(str(path), image_size=8).labels is None


# --------------------------------------------------------------------------------- image modes


def _decode(tmp_path, img: Image.Image, fmt="PNG", **save) -> np.ndarray:
    path = tmp_path / f"x.{fmt.lower()}"
    img.save(path, format=fmt, **save)
    return load_split(str(tmp_path), image_size=4, cache=False).images[0]


def test_16_bit_png_keeps_its_real_values(tmp_path):
    values = np.full((4, 4), 32896, np.uint16)  # mid grey in 16 bits
    out = _decode(tmp_path, Image.fromarray(values))
    assert np.all(out == 128), out[0, 0]


@pytest.mark.parametrize("mode,make,expected", [
    ("I", lambda: Image.fromarray(np.full((4, 4), 40000, np.int32)), 156),   # 16-bit range in 32-bit ints
    ("I", lambda: Image.fromarray(np.full((4, 4), 100, np.int32)), 100),     # already 8-bit values
    ("F", lambda: Image.fromarray(np.full((4, 4), 0.5, np.float32)), 128),   # 0-1 floats
    ("CMYK", lambda: Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)),
    ("LA", lambda: Image.new("LA", (4, 4), (200, 255)), 200),
    ("1", lambda: Image.new("1", (4, 4), 1), 255),
])
def test_every_mode_decodes_to_sensible_rgb(tmp_path, mode, make, expected):
    img = make()
    assert img.mode == mode
    fmt = "TIFF" if mode in ("I", "F", "CMYK") else "PNG"
    path = tmp_path / f"x.{fmt.lower()}"
    img.save(path, format=fmt)
    from gsimclr.data.sources.decoding import decode_one

    out = decode_one(str(path), 4)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - np.asarray(expected)).max() <= 1, out[0, 0]


def test_palette_with_transparency_composites_onto_black(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 250, 20, 20] + [0] * 762)
    img.info["transparency"] = 1
    path = tmp_path / "p.png"
    img.save(path, transparency=1)
    from gsimclr.data.sources.decoding import decode_one

    assert np.all(decode_one(str(path), 4) == 0)


# --------------------------------------------------------------------------------- hold-out


def test_a_class_with_one_image_stays_in_training():
    labels = np.array([0] * 10 + [1] * 5 + [2])
    keep, held = holdout_split(labels, 0.2, seed=3)
    assert 15 in keep and 15 not in held
    assert sorted(set(labels[keep].tolist())) == [0, 1, 2]
    assert len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == len(labels)


def test_load_data_holds_out_no_singleton_class(tmp_path):
    from gsimclr.config import load_config
    from gsimclr.pipeline import load_data

    root = tmp_path / "imgs"
    for i in range(6):
        png(root / "many" / f"{i}.png", (10 * i, 0, 0))
    png(root / "one" / "only.png", (0, 200, 0))
    cfg = load_config(None, {"data": str(root), "image_size": 8, "batch_size": 2})
    train, test = load_data(cfg)
    assert 1 in train.labels.tolist() and 1 not in test.labels.tolist()


# ------------------------------------------------------- every input class through both data paths
# (probe-data: each of these gave a wrong result or a traceback on one of the paths)


def _both_paths(spec, split="train", tmp_path=None, **kwargs):
    """The split decoded in memory and as an encoded store: (ImageData, EncodedStore) or (None, None)."""
    from gsimclr.data.store_batches import open_split

    cache = str(tmp_path / "both-cache") if tmp_path else None
    return tuple(open_split(str(spec), split, 8, store, cache_dir=cache, **kwargs) for store in ("memory", "jpeg"))


@pytest.mark.parametrize("ext", [".tif", ".tiff", ".TIF"])
def test_tiff_files_are_images(tmp_path, ext):
    root = tmp_path / "imgs"
    for c, colour in (("blue", (0, 0, 200)), ("red", (200, 0, 0))):
        for i in range(2):
            root.joinpath(c).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), colour).save(root / c / f"{i}{ext}", format="TIFF")
    for data in _both_paths(root, tmp_path=tmp_path):
        assert len(data) == 4 and data.labels.tolist() == [0, 0, 1, 1] and data.classes == ["blue", "red"]


def test_images_beside_class_folders_are_left_out_not_unlabelling_the_set(tmp_path):
    root = tmp_path / "imgs"
    for c in ("cat", "dog"):
        for i in range(2):
            png(root / c / f"{i}.png")
    png(root / "stray.png")
    for data in _both_paths(root, tmp_path=tmp_path):
        assert len(data) == 4 and data.has_labels and data.labels.tolist() == [0, 0, 1, 1]
        assert data.classes == ["cat", "dog"]
    with pytest.warns(UserWarning, match="left out 1 image.*stray.png"):
        load_split(str(root), image_size=8)


def test_images_only_beside_empty_sub_folders_are_a_flat_set(tmp_path):
    root = tmp_path / "imgs"
    for i in range(3):
        png(root / f"{i}.png")
    (root / "thumbnails").mkdir()
    for data in _both_paths(root, tmp_path=tmp_path):
        assert len(data) == 3 and data.labels is None and data.classes is None


def test_parquet_labels_are_the_same_in_memory_and_in_the_store(tmp_path):
    img = encoded(Image.new("RGB", (8, 8)))
    cases = {
        "strings": (pa.array(["dog", "cat", "dog", "bird"]), [2, 1, 2, 0], ["bird", "cat", "dog"]),
        "dictionary": (pa.array(["dog", "cat", "dog", "bird"]).dictionary_encode(), [2, 1, 2, 0], ["bird", "cat", "dog"]),
        "floats": (pa.array([1.0, 0.0, 2.0, 1.0]), [1, 0, 2, 1], None),
        "int8": (pa.array([1, 0, 2, 1], pa.int8()), [1, 0, 2, 1], None),
    }
    for name, (labels, expected, classes) in cases.items():
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({"image": pa.array([{"bytes": img, "path": None}] * 4), "label": labels}), path)
        for data in _both_paths(path, tmp_path=tmp_path):
            assert data.labels.tolist() == expected and data.classes == classes, (name, type(data).__name__)


@pytest.mark.parametrize("labels,label_type,message", [
    ([0, None, 1], pa.int64(), r"row 1: null label"),
    (["a", None, "b"], pa.string(), r"row 1: null label"),
    ([0, -1, 1], pa.int64(), r"row 1: null label.*null or -1"),
    ([0, -3, 1], pa.int64(), r"row 1: label -3 in column 'label' is not a class index"),
    ([0, 0.5, 1], pa.float64(), r"row 1: label 0.5 .*whole numbers"),
    ([0, float("nan"), 1], pa.float64(), r"row 1: null label"),
    ([True, False, True], pa.bool_(), r"label column 'label' has type bool"),
    # an id, not a class index: the classifier's one output per index asked for terabytes ("out of memory")
    ([0, 10**12, 1], pa.int64(), r"row 1: label 1000000000000 .*0 to 999,999 \(ids of another kind can be strings"),
])
def test_bad_parquet_labels_are_a_named_error_on_both_paths(tmp_path, labels, label_type, message):
    img = encoded(Image.new("RGB", (8, 8)))
    path = parquet(tmp_path / "bad.parquet", [img] * 3, labels, label_type)
    for store in ("memory", "jpeg"):
        with pytest.raises(UserError, match=message):
            load_split(str(path), image_size=8) if store == "memory" else list_store(path, tmp_path)


def list_store(path, tmp_path):
    from gsimclr.data.sources import list_encoded
    from gsimclr.data.store import build_store

    return build_store(list_encoded(str(path)), 8, cache_dir=tmp_path / "store-cache")


def test_a_label_past_the_schema_class_names_is_an_error(tmp_path):
    import json

    img = encoded(Image.new("RGB", (8, 8)))
    table = pa.table({"image": pa.array([{"bytes": img, "path": None}] * 2), "label": [0, 5]})
    meta = {"info": {"features": {"label": {"_type": "ClassLabel", "names": ["a", "b"]}}}}
    pq.write_table(table.replace_schema_metadata({"huggingface": json.dumps(meta)}), tmp_path / "c.parquet")
    with pytest.raises(UserError, match=r"row 1: label 5 .*0 to 1 \(the schema's 2 class names\)"):
        load_split(str(tmp_path / "c.parquet"), image_size=8)
    with pytest.raises(UserError, match=r"row 1: label 5"):
        list_store(tmp_path / "c.parquet", tmp_path)


@pytest.mark.parametrize("metadata,message", [
    ("{not json", r"'huggingface' schema metadata is not valid JSON"),
    ('{"info": {"features": {"label": {"_type": "ClassLabel", "names": 5}}}}', r"class names that are not a list"),
    ('[1]', None),                                  # another shape: no class names, the labels as they are
    ('{"info": "x"}', None),
    ('{"info": {"features": [1, 2]}}', None),
])
def test_odd_huggingface_schema_metadata_is_named_or_ignored_on_both_paths(tmp_path, metadata, message):
    """Metadata that was not JSON, or not of the expected shape, ended in a JSONDecodeError, AttributeError
    or TypeError traceback."""
    img = encoded(Image.new("RGB", (8, 8)))
    table = pa.table({"image": pa.array([{"bytes": img, "path": None}] * 2), "label": [0, 1]})
    pq.write_table(table.replace_schema_metadata({"huggingface": metadata}), tmp_path / "m.parquet")
    for store in ("memory", "jpeg"):
        if message:
            with pytest.raises(UserError, match=r"m\.parquet: .*" + message):
                load_split(str(tmp_path / "m.parquet"), image_size=8) if store == "memory" else list_store(
                    tmp_path / "m.parquet", tmp_path)
        else:
            data = load_split(str(tmp_path / "m.parquet"), image_size=8) if store == "memory" else list_store(
                tmp_path / "m.parquet", tmp_path)
            assert data.labels.tolist() == [0, 1] and data.classes is None


@pytest.mark.parametrize("value,kind", [("abc", "string"), (7, "int64")])
def test_an_image_struct_whose_bytes_are_not_binary_is_named_on_both_paths(tmp_path, value, kind):
    """A str 'bytes' field was taken for a file path (a FileNotFoundError traceback, or another file read as the
    image); an int one failed with a TypeError traceback."""
    table = pa.table({"image": pa.array([{"bytes": value, "path": None}] * 2), "label": [0, 1]})
    pq.write_table(table, tmp_path / "s.parquet")
    message = rf"s\.parquet: column 'image' has a 'bytes' field of type {kind}, not binary"
    with pytest.raises(UserError, match=message):
        load_split(str(tmp_path / "s.parquet"), image_size=8)
    with pytest.raises(UserError, match=message):
        list_store(tmp_path / "s.parquet", tmp_path)


def test_all_null_or_minus_one_labels_are_unlabelled_on_both_paths(tmp_path):
    img = encoded(Image.new("RGB", (8, 8)))
    for name, labels in (("nulls", [None, None]), ("minus", [-1, -1])):
        path = parquet(tmp_path / f"{name}.parquet", [img] * 2, labels, pa.int64())
        with pytest.warns(UserWarning, match="only nulls"):
            for data in _both_paths(path, tmp_path=tmp_path):
                assert data.labels is None and not data.has_labels


def test_string_labels_map_to_the_same_index_in_every_split(tmp_path):
    img = encoded(Image.new("RGB", (8, 8)))
    root = tmp_path / "set"
    parquet(root / "train-00000-of-00002.parquet", [img] * 2, ["ant", "bee"])
    parquet(root / "train-00001-of-00002.parquet", [img] * 2, ["cow", "bee"])
    parquet(root / "test-00000-of-00001.parquet", [img] * 2, ["cow", "bee"])
    for split, expected in (("train", [0, 1, 2, 1]), ("test", [2, 1])):
        for data in _both_paths(root, split, tmp_path=tmp_path):
            assert data.classes == ["ant", "bee", "cow"] and data.labels.tolist() == expected, (split, data)


@pytest.mark.parametrize("store", ["memory", "jpeg"])
def test_a_separate_test_set_with_other_classes_keeps_label_meanings(tmp_path, store):
    from gsimclr.config import load_config
    from gsimclr.pipeline import load_data

    colours = {"ant": (200, 0, 0), "bee": (0, 200, 0), "cow": (0, 0, 200), "dog": (200, 200, 0)}
    for c in ("ant", "bee", "cow"):
        for i in range(2):
            png(tmp_path / "train" / c / f"{i}.png", colours[c])
    for c in ("cow", "dog"):
        png(tmp_path / "other" / c / "0.png", colours[c])
    cfg = load_config(None, {"data": str(tmp_path / "train"), "test_data": str(tmp_path / "other"),
                             "image_size": 8, "batch_size": 2, "store": store})
    with pytest.warns(UserWarning, match="1 class.*the training set lacks: dog"):
        train, test = load_data(cfg)
    assert train.classes == ["ant", "bee", "cow"]
    assert test.classes == ["ant", "bee", "cow", "dog"] and test.labels.tolist() == [2, 3]


@pytest.mark.parametrize("store", ["memory", "jpeg"])
def test_data_without_a_training_split_is_a_user_error(tmp_path, store):
    from gsimclr.config import load_config
    from gsimclr.pipeline import load_data

    img = encoded(Image.new("RGB", (8, 8)))
    parquet(tmp_path / "set" / "test-00000-of-00001.parquet", [img] * 2, [0, 1])
    cfg = load_config(None, {"data": str(tmp_path / "set"), "image_size": 8, "batch_size": 2, "store": store})
    with pytest.raises(UserError, match="has no training split"):
        load_data(cfg)


def test_parquet_images_given_by_path_are_read_from_their_files(tmp_path):
    """``Dataset.to_parquet`` of images from local files writes ``{"bytes": null, "path": ...}``: every image
    was unreadable ("none of the 3 images could be read"). A relative path is taken from the parquet file's
    folder; a path to no file is an unreadable image like a corrupt one, on both paths."""
    png(tmp_path / "set" / "imgs" / "blue.png", (0, 0, 200))
    png(tmp_path / "elsewhere" / "green.png", (0, 200, 0))
    rows = [{"bytes": None, "path": "imgs/blue.png"},
            {"bytes": None, "path": str(tmp_path / "elsewhere" / "green.png")},
            {"bytes": encoded(Image.new("RGB", (8, 8), (200, 0, 0))), "path": "ignored.png"},
            {"bytes": None, "path": str(tmp_path / "missing.png")}]
    path = tmp_path / "set" / "train.parquet"
    pq.write_table(pa.table({"image": pa.array(rows), "label": [0, 1, 2, 0]}), path)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        both = _both_paths(path, tmp_path=tmp_path)
    for data in both:
        assert len(data) == 3 and data.labels.tolist() == [0, 1, 2] and data.skipped == 1
        colours = data.read(np.arange(3), 8)[:, 4, 4].numpy()
        assert np.abs(colours.astype(int) - [[0, 0, 200], [0, 200, 0], [200, 0, 0]]).max() <= 8, type(data)
    with pytest.raises(UserError, match=r"train\.parquet row 3 \(FileNotFoundError"):
        load_split(str(path), image_size=8, on_corrupt="error", cache=False)


def test_an_image_file_a_parquet_row_points_to_is_read_anew_when_it_changes(tmp_path):
    """The cache keys of a parquet set covered the parquet files alone: replacing an image file that a
    ``path`` row points to served the old pixels from the cache, in memory and in the JPEG store. The
    files' sizes and times are now part of the key; a parquet file with every image inside keeps its key."""
    import os

    from gsimclr.data.sources.parquet import _referenced_files_key

    image = png(tmp_path / "set" / "imgs" / "a.png", (0, 0, 200))
    path = tmp_path / "set" / "train.parquet"
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = pa.array([{"bytes": None, "path": "imgs/a.png"}] * 2, type=kind)
    pq.write_table(pa.table({"image": rows, "label": [0, 1]}), path)
    for data in _both_paths(path, tmp_path=tmp_path):
        assert data.read(np.arange(2), 8)[:, 4, 4].numpy().tolist()[0][2] >= 190
    png(image, (200, 0, 0))
    os.utime(image, ns=(1, 10**18))  # a different time even where the clock is coarse
    for data in _both_paths(path, tmp_path=tmp_path):
        assert data.read(np.arange(2), 8)[:, 4, 4].numpy().tolist()[0][0] >= 190, type(data)
    inside = tmp_path / "inside.parquet"
    pq.write_table(pa.table({"image": pa.array([{"bytes": encoded(Image.new("RGB", (8, 8))), "path": "x.png"}]),
                             "label": [0]}), inside)
    assert _referenced_files_key([inside]) == {}


def test_a_label_column_named_otherwise_is_found_by_its_class_label_or_warned_about(tmp_path):
    """CIFAR-100's Hugging Face parquet (``img``, ``fine_label``, ``coarse_label``) was read as an unlabelled
    set, silently. The first ClassLabel of the schema metadata is the label column, as for ``hf:`` data;
    without metadata, a column that looks like labels is named in a warning."""
    import json

    img = encoded(Image.new("RGB", (8, 8)))
    table = pa.table({"img": pa.array([{"bytes": img, "path": None}] * 3), "fine_label": [2, 0, 1],
                      "coarse_label": [1, 1, 0]})
    features = {"img": {"_type": "Image"}, "fine_label": {"_type": "ClassLabel", "names": ["apple", "bee", "cup"]},
                "coarse_label": {"_type": "ClassLabel", "names": ["x", "y"]}}
    meta = {"huggingface": json.dumps({"info": {"features": features}})}
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "hf.parquet")
    for data in _both_paths(tmp_path / "hf.parquet", tmp_path=tmp_path):
        assert data.labels.tolist() == [2, 0, 1] and data.classes == ["apple", "bee", "cup"]
    pq.write_table(table, tmp_path / "plain.parquet")
    with pytest.warns(UserWarning, match=r"no 'label' or 'labels' column: .*'fine_label', 'coarse_label' look like "
                                         r"labels: rename one to 'label'"):
        for data in _both_paths(tmp_path / "plain.parquet", tmp_path=tmp_path):
            assert data.labels is None


@pytest.mark.parametrize("store", ["memory", "jpeg"])
def test_an_image_folder_with_only_evaluation_splits_has_no_training_split(tmp_path, store):
    """A folder holding only val/ (or test/) was read as one class named "val", its class folders nested
    inside it: every image labelled alike, accuracies a trivial 100%."""
    from gsimclr.config import load_config
    from gsimclr.pipeline import load_data

    for c in ("ant", "bee"):
        for i in range(2):
            png(tmp_path / "set" / "val" / c / f"{i}.png")
    cfg = load_config(None, {"data": str(tmp_path / "set"), "image_size": 8, "batch_size": 2, "store": store})
    with pytest.raises(UserError, match="has no training split"):
        load_data(cfg)
    cfg = load_config(None, {"data": "digits", "test_data": str(tmp_path / "set"), "image_size": 8, "batch_size": 2,
                             "store": store})
    _, test = load_data(cfg)   # as --test-data it is the evaluation split, labelled by its class folders
    assert len(test) == 4 and sorted(test.labels.tolist()) == [10, 10, 11, 11]


@pytest.mark.parametrize("store", ["memory", "jpeg"])
def test_empty_class_folders_and_test_classes_without_training_images_are_warned_about(tmp_path, store):
    """A class folder holding no images (only a README), and test/ classes with no train/ images, were
    silent: extra classifier outputs, and test images no classifier can get right."""
    from gsimclr.config import load_config
    from gsimclr.pipeline import load_data

    for c in ("ant", "bee"):
        for i in range(3):
            png(tmp_path / "set" / "train" / c / f"{i}.png")
    (tmp_path / "set" / "train" / "cow").mkdir()
    (tmp_path / "set" / "train" / "cow" / "README.txt").write_text("to do")
    for c in ("bee", "cow", "dog"):
        png(tmp_path / "set" / "test" / c / "0.png")
    cfg = load_config(None, {"data": str(tmp_path / "set"), "image_size": 8, "batch_size": 2, "store": store})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, test = load_data(cfg)
    messages = {str(w.message) for w in caught}
    assert any(m.startswith("1 class folder(s) in ") and m.endswith("train hold no images (.jpg, .jpeg, .png, .webp, "
                                                                     ".bmp, .gif, .tif, .tiff): cow") for m in messages)
    assert "2 of the 3 evaluation images belong to 2 class(es) without training images: cow, dog" in messages
    assert train.classes == test.classes == ["ant", "bee", "cow", "dog"]


def test_a_training_set_of_one_class_is_warned_about(tmp_path):
    """One class folder (or one parquet label) gave 100% in every row of the results, silently."""
    from gsimclr.config import load_config
    from gsimclr.pipeline import load_data

    for i in range(6):
        png(tmp_path / "set" / "cat" / f"{i}.png")
    cfg = load_config(None, {"data": str(tmp_path / "set"), "image_size": 8, "batch_size": 2})
    with pytest.warns(UserWarning, match=r"every training image has one label \(cat\): the classifiers learn nothing"):
        train, test = load_data(cfg)
    assert len(train) + len(test) == 6


def test_an_image_longer_than_jpeg_allows_is_kept_in_the_store(tmp_path):
    """A 70,000 x 2 strip decoded in memory but was skipped as unreadable by the JPEG store (libjpeg's limit
    is 65,500 px a side), with libjpeg's own line on stderr."""
    root = tmp_path / "strips"
    png(root / "a.png", (0, 200, 0), size=(70_000, 2))
    png(root / "b.png", (200, 0, 0), size=(2, 70_000))
    png(root / "c.png", (0, 0, 200))
    for data in _both_paths(root, tmp_path=tmp_path):
        assert len(data) == 3 and data.skipped == 0, type(data)
        colours = data.read(np.arange(3), 8)[:, 4, 4].numpy().astype(int)
        assert np.abs(colours - [[0, 200, 0], [200, 0, 0], [0, 0, 200]]).max() <= 8, type(data)


@pytest.mark.parametrize("store", ["memory", "jpeg"])
def test_an_unreadable_file_with_a_newline_or_a_non_utf8_byte_in_its_name_is_named_on_one_line(tmp_path, store,
                                                                                                capsys):
    """The one-line error took the message up to the newline in the file's name: the reason was cut off."""
    from gsimclr.cli import main

    for i in range(4):
        png(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "imgs" / os.fsdecode(b"bad\xff\nname.jpg")).write_bytes(b"not an image")
    code = main(["pretrain", "--data", str(tmp_path / "imgs"), "--on-corrupt", "error", "--store", store,
                 "--image-size", "8", "--batch-size", "2", "--epochs", "1", "--device", "cpu",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("gsimclr: error: cannot read image ") and "bad\\xff\\nname.jpg (UnidentifiedImageError" in err


def test_the_skipped_images_warning_says_how_to_find_them(tmp_path):
    """"skipped 1 unreadable image(s)" named none of them; the store's reason named Pillow's buffer
    ("cannot identify image file <_io.BytesIO object at 0x7f...>")."""
    for i in range(2):
        png(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "imgs" / "text.jpg").write_text("not an image")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable .*; --on-corrupt error stops at the first, naming it"):
        load_split(str(tmp_path / "imgs"), image_size=8)
    with pytest.warns(UserWarning) as caught:
        list_store(tmp_path / "imgs", tmp_path)
    assert [str(w.message) for w in caught] == [f"skipped 1 unreadable image(s) in imgs, e.g. {tmp_path / 'imgs' / 'text.jpg'} "
                                                "(UnidentifiedImageError: cannot identify image file)"]
    img = encoded(Image.new("RGB", (8, 8)))
    with pytest.raises(UserError, match=r"bad\.parquet row 1 \(UnidentifiedImageError: cannot identify image file\)$"):
        load_split(str(parquet(tmp_path / "bad.parquet", [img, b"junk"])), image_size=8, on_corrupt="error")


def test_parquet_shards_in_split_folders_keep_their_splits(tmp_path):
    """``train/0000.parquet`` and ``test/0000.parquet`` (shards named by their folder, not a prefix): every
    shard was read as training data, the test images among them, and no test split was found."""
    img = encoded(Image.new("RGB", (8, 8)))
    parquet(tmp_path / "set" / "train" / "0000.parquet", [img] * 3, [0, 1, 0])
    parquet(tmp_path / "set" / "train" / "0001.parquet", [img] * 2, [1, 1])
    parquet(tmp_path / "set" / "validation" / "0000.parquet", [img] * 2, [1, 0])
    for split, expected in (("train", [0, 1, 0, 1, 1]), ("test", [1, 0])):
        for data in _both_paths(tmp_path / "set", split, tmp_path=tmp_path):
            assert data.labels.tolist() == expected, (split, type(data).__name__)


def test_the_hubs_parquet_conversion_layout_is_parquet(tmp_path):
    """``CONFIG/SPLIT/0000.parquet`` (the Hub's refs/convert/parquet download) lies deeper than the two levels
    looked at: the folder was taken for an image folder ("no images found")."""
    img = encoded(Image.new("RGB", (8, 8)))
    parquet(tmp_path / "set" / "plain_text" / "train" / "0000.parquet", [img] * 3, [0, 1, 0])
    parquet(tmp_path / "set" / "plain_text" / "test" / "0000.parquet", [img] * 2, [1, 1])
    for split, expected in (("train", [0, 1, 0]), ("test", [1, 1])):
        for data in _both_paths(tmp_path / "set", split, tmp_path=tmp_path):
            assert data.labels.tolist() == expected, (split, type(data).__name__)


@pytest.mark.parametrize("name", ["cifar10", "stl10"])
def test_a_torchvision_set_whose_download_server_is_silent_fails_fast_in_one_line(tmp_path, monkeypatch, name):
    """A missing torchvision data set is downloaded; where the server's name lookup or connection hangs
    (no network), urllib waited without end. The server is probed first, with a timeout."""
    import socket
    import time

    from torchvision import datasets

    from gsimclr.data.sources import torchvision_sets

    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/archive.tar.gz"
    monkeypatch.setattr(datasets.CIFAR10 if name == "cifar10" else datasets.STL10, "url", url)
    monkeypatch.setattr(torchvision_sets, "DOWNLOAD_PROBE_SECONDS", 0.5)
    started = time.perf_counter()
    try:
        with pytest.raises(UserError, match=rf"{name} is not at .* and its download server does not answer within "
                                            rf"0.5 s \(http://127.0.0.1:.*\): connect, or put the data set there"):
            load_split(f"{name}:{tmp_path / 'none'}")
    finally:
        silent.close()
    assert time.perf_counter() - started < 15
    assert socket.getdefaulttimeout() is None


@pytest.mark.parametrize("store", ["memory", "jpeg"])
def test_a_labelled_training_split_with_an_unlabelled_test_split_is_warned_about(tmp_path, store):
    """train/ in class folders beside a flat test/ folder: every evaluation was skipped and only
    results.md said so ("no labelled evaluation split"); it is now a one-line warning when the data is read."""
    from gsimclr.config import load_config
    from gsimclr.pipeline import load_data

    for c in ("ant", "bee"):
        for i in range(3):
            png(tmp_path / "set" / "train" / c / f"{i}.png")
    for i in range(3):
        png(tmp_path / "set" / "test" / f"{i}.png")
    cfg = load_config(None, {"data": str(tmp_path / "set"), "image_size": 8, "batch_size": 2, "store": store})
    with pytest.warns(UserWarning, match=r"the evaluation split of .*set has no labels .*: nothing can be evaluated; "
                                         "give a labelled --test-data"):
        train, test = load_data(cfg)
    assert train.has_labels and not test.has_labels
