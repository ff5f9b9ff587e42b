"""Tests of gsimclr.data: every source (digits, parquet, image folders, torchvision) and the cache.

All data is generated under tmp_path; nothing touches the network. The smoke tests of the shared
real data sets (../shared/data) are skipped when it is absent.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gsimclr.data import ImageData, describe_sources, load_split
from gsimclr.data.sources import decoding, parquet
from gsimclr.data import cache as decoded_cache
from gsimclr.errors import UserError

SHARED_DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Keep the decoded-image cache of every test in its own folder."""
    monkeypatch.setenv("GSIMCLR_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def count_decodes(monkeypatch):
    """Count calls of the single-image decoder."""
    calls = []
    original = decoding.decode_one

    def counting(source, size, *args, **kwargs):
        calls.append(source)
        return original(source, size, *args, **kwargs)

    monkeypatch.setattr(decoding, "decode_one", counting)
    return calls


def solid(color, size=(12, 12), mode="RGB") -> Image.Image:
    return Image.new("RGB", size, color).convert(mode)


def save(image: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def close(pixel, color, tol=40) -> bool:
    return bool(np.abs(np.asarray(pixel, int) - np.asarray(color)).max() <= tol)


# ----------------------------------------------------------------------------------------- digits


def test_digits_splits_are_stratified_and_deterministic():
    train, test = load_split("digits"), load_split("digits", "test")
    assert train.images.shape == (1437, 32, 32, 3) and test.images.shape == (360, 32, 32, 3)
    assert train.images.dtype == np.uint8 and train.images.max() > 200
    assert train.classes == [str(d) for d in range(10)]
    assert set(np.unique(test.labels)) == set(range(10))
    assert np.bincount(test.labels).min() >= 35  # stratified: about 36 per class
    again = load_split("digits")
    np.testing.assert_array_equal(train.images, again.images)
    np.testing.assert_array_equal(train.labels, again.labels)
    assert train.fingerprint == again.fingerprint != test.fingerprint
    assert np.array_equal(train.images[..., 0], train.images[..., 2])  # grey
    assert load_split("digits", image_size=16).images.shape == (1437, 16, 16, 3)
    assert load_split("digits", "unlabeled") is None


# ---------------------------------------------------------------------------------------- parquet


def write_parquet(path: Path, colors, labels=None, class_names=None, image_column="img") -> Path:
    """A Hugging Face-style parquet file: image structs {bytes, path}, optional int labels and metadata."""
    images = [{"bytes": encode(solid(c), "JPEG"), "path": f"{i}.jpg"} for i, c in enumerate(colors)]
    columns = {image_column: images}
    if labels is not None:
        columns["label"] = pa.array(labels, pa.int64())
    table = pa.table(columns)
    if class_names is not None:
        features = {image_column: {"_type": "Image"}, "label": {"names": class_names, "_type": "ClassLabel"}}
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def test_parquet_file_with_labels_and_class_names(tmp_path):
    path = write_parquet(tmp_path / "data.parquet", [RED, GREEN, BLUE], [0, 1, 2], ["red", "green", "blue"])
    data = load_split(str(path), image_size=8)
    assert data.images.shape == (3, 8, 8, 3) and data.images.dtype == np.uint8
    assert data.labels.tolist() == [0, 1, 2] and data.classes == ["red", "green", "blue"]
    assert close(data.images[2, 4, 4], BLUE) and data.name == "data"
    assert load_split(str(path), "test") is None  # a single file is the train split


def test_parquet_without_labels_keeps_native_size(tmp_path):
    path = write_parquet(tmp_path / "u.parquet", [RED, GREEN], image_column="image")
    data = load_split(str(path))
    assert data.labels is None and data.classes is None
    assert data.images.shape == (2, 12, 12, 3)


def test_parquet_folder_splits_by_file_prefix(tmp_path):
    names = ["a", "b"]
    write_parquet(tmp_path / "hf" / "train-00000-of-00002.parquet", [RED, GREEN], [0, 1], names)
    write_parquet(tmp_path / "hf" / "train-00001-of-00002.parquet", [GREEN], [1], names)
    write_parquet(tmp_path / "hf" / "test-00000-of-00001.parquet", [BLUE], [0], names)
    train, test = load_split(str(tmp_path / "hf")), load_split(str(tmp_path / "hf"), "test")
    assert len(train) == 3 and train.labels.tolist() == [0, 1, 1] and train.classes == names
    assert len(test) == 1 and close(test.images[0, 5, 5], BLUE)
    assert load_split(str(tmp_path / "hf"), "unlabeled") is None


def test_parquet_folder_validation_and_unprefixed(tmp_path):
    write_parquet(tmp_path / "v" / "train.parquet", [RED], [0])
    write_parquet(tmp_path / "v" / "validation.parquet", [GREEN, BLUE], [1, 0])
    assert len(load_split(str(tmp_path / "v"), "test")) == 2
    write_parquet(tmp_path / "plain" / "part-0.parquet", [RED], [0])
    write_parquet(tmp_path / "plain" / "part-1.parquet", [BLUE], [1])
    assert len(load_split(str(tmp_path / "plain"))) == 2
    assert load_split(str(tmp_path / "plain"), "test") is None


def test_parquet_without_image_column_is_a_user_error(tmp_path):
    path = tmp_path / "table.parquet"
    pq.write_table(pa.table({"x": [1, 2], "label": [0, 1]}), path)
    with pytest.raises(UserError, match="no image column"):
        load_split(str(path))


# ----------------------------------------------------------------------------------- image folders


def test_folder_with_class_subfolders(tmp_path):
    save(solid(RED), tmp_path / "pets" / "cat" / "1.png")
    save(solid(RED), tmp_path / "pets" / "cat" / "2.JPG")
    save(solid(BLUE), tmp_path / "pets" / "dog" / "1.png")
    (tmp_path / "pets" / "dog" / "notes.txt").write_text("not an image")
    data = load_split(str(tmp_path / "pets"))
    assert data.classes == ["cat", "dog"] and data.labels.tolist() == [0, 0, 1]
    assert data.images.shape == (3, 12, 12, 3) and data.name == "pets"
    assert [Path(p).name for p in data.paths] == ["1.png", "2.JPG", "1.png"]
    assert load_split(str(tmp_path / "pets"), "test") is None


def test_folder_with_train_and_test_splits(tmp_path):
    save(solid(RED), tmp_path / "d" / "train" / "a" / "1.png")
    save(solid(GREEN), tmp_path / "d" / "train" / "b" / "1.png")
    save(solid(BLUE), tmp_path / "d" / "test" / "b" / "1.png")
    train, test = load_split(str(tmp_path / "d")), load_split(str(tmp_path / "d"), "test")
    assert train.classes == test.classes == ["a", "b"]
    assert train.labels.tolist() == [0, 1] and test.labels.tolist() == [1]


def test_folder_with_val_split(tmp_path):
    save(solid(RED), tmp_path / "d" / "train" / "a" / "1.png")
    save(solid(GREEN), tmp_path / "d" / "val" / "a" / "1.png")
    assert close(load_split(str(tmp_path / "d"), "test").images[0, 6, 6], GREEN)


def test_flat_folder_is_unlabelled(tmp_path):
    for i, color in enumerate([RED, GREEN]):
        save(solid(color), tmp_path / "flat" / f"{i}.png")
    data = load_split(str(tmp_path / "flat"))
    assert data.labels is None and data.classes is None and len(data) == 2
    assert load_split(str(tmp_path / "flat"), "test") is None


def test_formats_and_modes_come_out_as_square_rgb(tmp_path):
    folder = tmp_path / "mixed"
    save(solid(RED, (30, 20)), folder / "rgb.png")
    save(solid(RED, (20, 30)), folder / "rgb.jpg", quality=95)
    save(solid(RED, (24, 24)), folder / "rgb.webp", quality=95)
    save(solid(RED, (16, 16)), folder / "rgb.bmp")
    save(solid(RED, (16, 16), "P"), folder / "palette.gif")
    save(solid((200, 200, 200), (16, 16), "L"), folder / "grey.png")
    save(Image.new("RGBA", (16, 16), (0, 0, 255, 0)), folder / "transparent.png")
    save(Image.new("RGBA", (16, 16), (0, 0, 255, 255)), folder / "opaque.png")
    data = load_split(str(folder), image_size=10)
    assert data.images.shape == (8, 10, 10, 3) and data.images.dtype == np.uint8
    by_name = {Path(p).name: image for p, image in zip(data.paths, data.images)}
    for name in ("rgb.png", "rgb.jpg", "rgb.webp", "rgb.bmp", "palette.gif"):
        assert close(by_name[name][5, 5], RED), name
    assert close(by_name["grey.png"][5, 5], (200, 200, 200))
    assert close(by_name["transparent.png"][5, 5], (0, 0, 0))  # composited on black
    assert close(by_name["opaque.png"][5, 5], BLUE)


def test_mixed_sizes_default_to_256_and_uniform_sizes_are_kept(tmp_path):
    save(solid(RED, (30, 20)), tmp_path / "mixed" / "a.png")
    save(solid(RED, (20, 20)), tmp_path / "mixed" / "b.png")
    assert load_split(str(tmp_path / "mixed")).images.shape == (2, 256, 256, 3)
    save(solid(RED, (30, 20)), tmp_path / "same" / "a.png")
    save(solid(RED, (30, 20)), tmp_path / "same" / "b.png")
    assert load_split(str(tmp_path / "same")).images.shape == (2, 20, 20, 3)


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    stored = Image.new("RGB", (40, 20), RED)  # stored landscape: red left half, blue right half
    stored.paste(Image.new("RGB", (20, 20), BLUE), (20, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: portrait, red on top, blue below
    save(stored, tmp_path / "rot" / "photo.jpg", exif=exif, quality=95)
    image = load_split(str(tmp_path / "rot"), image_size=20).images[0]
    assert close(image[3, 10], RED) and close(image[16, 10], BLUE)
    assert close(image[10, 3], image[10, 16], tol=5)  # left and right alike: upright, not sideways


def test_corrupt_image_is_skipped_or_refused(tmp_path):
    folder = tmp_path / "broken"
    save(solid(RED), folder / "good1.png")
    save(solid(GREEN), folder / "good2.png")
    (folder / "bad.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 500, np.uint8).tobytes())
    with pytest.warns(UserWarning, match="skipped 1"):
        data = load_split(str(folder))
    assert data.skipped == 1 and len(data) == 2
    assert all("bad.jpg" not in p for p in data.paths)
    with pytest.raises(UserError, match="bad.jpg"):
        load_split(str(folder), on_corrupt="error")


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_split(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        load_split(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="unknown data source"):
        load_split("imagenet21k")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a parquet file"):
        load_split(str(tmp_path / "notes.txt"))
    with pytest.raises(UserError, match="on_corrupt"):
        load_split("digits", on_corrupt="ignore")
    with pytest.raises(UserError, match="image size"):
        load_split("digits", image_size=0)


def test_describe_sources_lists_every_form():
    text = describe_sources()
    for form in ("digits", "parquet", "FOLDER", "cifar10", "cifar100", "stl10"):
        assert form in text


# ------------------------------------------------------------------------------------ torchvision


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), np.uint8)


def pickle_to(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


@pytest.fixture
def trust_torchvision_files(monkeypatch):
    """Skip torchvision's md5 checks (the fake files differ from the real ones) and forbid downloads."""
    from torchvision.datasets import CIFAR10, STL10, cifar

    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(STL10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *args: True)

    def no_download(self):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(CIFAR10, "download", no_download)
    monkeypatch.setattr(STL10, "download", no_download)


def cifar_rows(images: np.ndarray) -> np.ndarray:
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # CIFAR stores each row as CHW


def test_fake_cifar10_loads_offline(tmp_path, trust_torchvision_files):
    base = tmp_path / "cifar-10-batches-py"
    batches = [random_images(2, 32, seed) for seed in range(5)]
    for i, batch in enumerate(batches, 1):
        pickle_to(base / f"data_batch_{i}", {"data": cifar_rows(batch), "labels": [i, i + 1]})
    pickle_to(base / "test_batch", {"data": cifar_rows(random_images(3, 32, 9)), "labels": [0, 1, 2]})
    classes = [f"class{i}" for i in range(10)]
    pickle_to(base / "batches.meta", {"label_names": classes})
    train = load_split(f"cifar10:{tmp_path}")
    assert train.images.shape == (10, 32, 32, 3) and train.classes == classes
    np.testing.assert_array_equal(train.images[:2], batches[0])
    assert train.labels.tolist()[:4] == [1, 2, 2, 3]
    test = load_split(f"cifar10:{tmp_path}", "test", image_size=16)
    assert test.images.shape == (3, 16, 16, 3) and test.labels.tolist() == [0, 1, 2]
    assert load_split(f"cifar10:{tmp_path}", "unlabeled") is None


def test_fake_cifar100_loads_offline(tmp_path, trust_torchvision_files):
    base = tmp_path / "cifar-100-python"
    pickle_to(base / "train", {"data": cifar_rows(random_images(4, 32)), "fine_labels": [0, 99, 5, 7]})
    pickle_to(base / "test", {"data": cifar_rows(random_images(2, 32, 1)), "fine_labels": [3, 4]})
    pickle_to(base / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    train = load_split(f"CIFAR100:{tmp_path}")
    assert train.images.shape == (4, 32, 32, 3) and train.labels.tolist() == [0, 99, 5, 7]
    assert len(train.classes) == 100 and len(load_split(f"cifar100:{tmp_path}", "test")) == 2


def write_stl10(base: Path, name: str, images: np.ndarray, labels=None) -> None:
    """STL-10's binary layout: each image stored channel by channel, column-major."""
    base.mkdir(parents=True, exist_ok=True)
    images.transpose(0, 3, 2, 1).tofile(base / f"{name}_X.bin")
    if labels is not None:
        (np.asarray(labels, np.uint8) + 1).tofile(base / f"{name}_y.bin")  # 1-based on disk


def test_fake_stl10_loads_offline(tmp_path, trust_torchvision_files):
    base = tmp_path / "stl10_binary"
    train_images = random_images(3, 96)
    write_stl10(base, "train", train_images, [0, 1, 9])
    write_stl10(base, "test", random_images(2, 96, 1), [4, 5])
    write_stl10(base, "unlabeled", random_images(4, 96, 2))
    (base / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)))
    train = load_split(f"stl10:{tmp_path}")
    np.testing.assert_array_equal(train.images, train_images)
    assert train.labels.tolist() == [0, 1, 9] and train.classes[9] == "c9"
    unlabeled = load_split(f"stl10-unlabeled:{tmp_path}")
    assert unlabeled.images.shape == (4, 96, 96, 3) and unlabeled.labels is None
    assert len(load_split(f"stl10:{tmp_path}", "unlabeled")) == 4
    assert load_split(f"stl10-unlabeled:{tmp_path}", "test").labels.tolist() == [4, 5]
    assert load_split(f"stl10:{tmp_path}", "test", image_size=32).images.shape == (2, 32, 32, 3)


def test_missing_torchvision_data_with_failed_download_is_a_user_error(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    def no_download(self):
        raise OSError("network disabled in tests")

    from gsimclr.data.sources import hf

    monkeypatch.setattr(CIFAR10, "download", no_download)
    monkeypatch.setattr(hf, "hub_reachable", lambda url, timeout=None: True)  # no network in tests
    with pytest.raises(UserError, match="not at .* download failed"):
        load_split(f"cifar10:{tmp_path / 'nothing'}")


# ------------------------------------------------------------------------------------------ cache


def test_second_load_comes_from_the_cache(tmp_path, count_decodes):
    for i, color in enumerate([RED, GREEN, BLUE]):
        save(solid(color), tmp_path / "imgs" / "c" / f"{i}.png")
    first = load_split(str(tmp_path / "imgs"), cache_dir=str(tmp_path / "store"))
    assert len(count_decodes) == 3
    second = load_split(str(tmp_path / "imgs"), cache_dir=str(tmp_path / "store"))
    assert len(count_decodes) == 3  # nothing decoded again
    np.testing.assert_array_equal(first.images, second.images)
    assert second.labels.tolist() == first.labels.tolist() and second.classes == ["c"]
    assert second.fingerprint == first.fingerprint and second.paths == first.paths
    assert (tmp_path / "store" / first.fingerprint / "images.npy").exists()
    assert not list((tmp_path / "store").rglob("*.tmp"))
    load_split(str(tmp_path / "imgs"), cache=False)
    assert len(count_decodes) == 6


def test_changed_file_invalidates_the_cache(tmp_path, count_decodes):
    path = write_parquet(tmp_path / "train.parquet", [RED, GREEN], [0, 1])
    before = load_split(str(path))
    mtime = os.stat(path).st_mtime_ns
    write_parquet(path, [BLUE, BLUE, BLUE], [1, 1, 1])
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))  # a new mtime even on coarse-clock file systems
    after = load_split(str(path))
    assert len(count_decodes) == 5 and len(after) == 3
    assert after.fingerprint != before.fingerprint


def test_options_are_part_of_the_fingerprint(tmp_path):
    path = write_parquet(tmp_path / "train.parquet", [RED], [0])
    options = [(size, mode) for size in (8, 9) for mode in ("skip", "error")]
    keys = {load_split(str(path), image_size=size, on_corrupt=mode).fingerprint for size, mode in options}
    assert len(keys) == 4


def test_cache_uses_the_environment_folder(tmp_path):
    path = write_parquet(tmp_path / "train.parquet", [RED], [0])
    data = load_split(str(path))
    assert decoded_cache.cache_root() == tmp_path / "cache"
    assert decoded_cache.load(data.fingerprint).images.shape == data.images.shape


def test_cache_round_trip_of_unlabelled_data(tmp_path):
    data = ImageData(np.ones((2, 4, 4, 3), np.uint8), name="u", fingerprint="k", skipped=1)
    decoded_cache.save(data, tmp_path / "c")
    loaded = decoded_cache.load("k", tmp_path / "c")
    assert loaded.labels is None and loaded.skipped == 1 and loaded.images.sum() == 96
    assert decoded_cache.load("other", tmp_path / "c") is None


# ------------------------------------------------------------------------------- shared real data


@pytest.mark.skipif(not (SHARED_DATA / "imagenet5").is_dir(), reason="shared data not present")
def test_real_imagenet5_test_split():
    data = load_split(str(SHARED_DATA / "imagenet5"), "test", cache=False)
    assert data.images.shape == (250, 256, 256, 3) and data.skipped == 0
    assert data.classes == ["airplane", "car", "cat", "dog", "elephant"]
    assert np.bincount(data.labels).tolist() == [50] * 5


@pytest.mark.skipif(not (SHARED_DATA / "cifar10").is_dir(), reason="shared data not present")
def test_real_cifar10_parquet_test_split():
    folder = SHARED_DATA / "cifar10"
    schema = pq.read_schema(next(folder.glob("test-*.parquet")))
    assert parquet._parquet_image_column(schema, folder) == "img"
    data = load_split(str(folder), "test", cache=False)
    assert data.images.shape == (10000, 32, 32, 3) and data.skipped == 0
    assert data.classes[:3] == ["airplane", "automobile", "bird"] and len(data.classes) == 10
    assert np.bincount(data.labels).tolist() == [1000] * 10
