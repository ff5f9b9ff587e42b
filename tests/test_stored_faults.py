"""Fault injection on every kind of stored file: a JPEG store entry and a decoded-cache entry are
damaged one file at a time (flipped bytes, zeroed JPEG headers, truncation, removal, broken JSON,
labels rewritten out of range, a killed writer's leftovers); the next open rebuilds the entry (with a
warning) or stops with a one-line UserError, never a traceback, and never trains on damaged data.
Everything is generated under tmp_path."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from gsimclr.cli import main
from image_folders import jpeg_folder
from gsimclr.data import cache as decoded_cache
from gsimclr.data.checksums import Damaged
from gsimclr.data.sources import list_encoded, load_split
from gsimclr.data.store import EncodedStore, build_store
from gsimclr.errors import UserError


def folder(root, count=12):
    return jpeg_folder(root, count, classes=3, sizes=(16, 30))


def flip_byte(path, at=None):
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def zero_jpeg_headers(entry):
    offsets = np.load(entry / "offsets.npy")
    data = bytearray((entry / "images.bin").read_bytes())
    for start in offsets[:-1]:
        data[start:start + 20] = bytes(20)
    (entry / "images.bin").write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_meta(entry, **changes):
    """Rewrite fields of meta.json, keeping it valid JSON (an edit, not a broken file)."""
    meta = json.loads((entry / "meta.json").read_text())
    (entry / "meta.json").write_text(json.dumps({**meta, **changes}))


def labels_out_of_range(entry):
    labels = np.load(entry / "labels.npy")
    np.save(entry / "labels.npy", labels + 7)


STORE_FAULTS = {
    "flipped byte in an image": lambda e: flip_byte(e / "images.bin"),
    "zeroed JPEG headers": zero_jpeg_headers,
    "truncated images.bin": lambda e: truncate(e / "images.bin"),
    "images.bin removed": lambda e: (e / "images.bin").unlink(),
    "broken meta.json": lambda e: (e / "meta.json").write_text('{"name": '),
    "meta.json removed": lambda e: (e / "meta.json").unlink(),
    "meta.json of another version": lambda e: (e / "meta.json").write_text(json.dumps({"version": 99})),
    "meta.json edited: classes renamed": lambda e: edit_meta(e, classes=["x", "y", "z"]),
    "meta.json edited: unlabelled": lambda e: edit_meta(e, labelled=False),
    "labels.npy removed": lambda e: (e / "labels.npy").unlink(),
    "labels out of range": labels_out_of_range,
    "flipped byte in offsets.npy": lambda e: flip_byte(e / "offsets.npy", -3),
    "truncated sizes.npy": lambda e: truncate(e / "sizes.npy"),
    "original_sizes.npy garbage": lambda e: (e / "original_sizes.npy").write_bytes(b"garbage"),
    "blocks.npy removed": lambda e: (e / "blocks.npy").unlink(),
}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return str(folder(tmp_path_factory.mktemp("faults") / "set"))


@pytest.mark.parametrize("fault", list(STORE_FAULTS))
def test_a_damaged_store_entry_is_rebuilt(tmp_path, source, fault):
    listing = list_encoded(source, "train")
    store = build_store(listing, 24, cache_dir=tmp_path)
    original = [bytes(store.payload(i)) for i in range(len(store))], store.labels.copy()
    entry = store.path
    del store
    STORE_FAULTS[fault](entry)
    with pytest.raises(Damaged):
        EncodedStore.open(entry)
    with pytest.warns(UserWarning, match="is damaged .*rebuilding it"):
        rebuilt = build_store(listing, 24, cache_dir=tmp_path)
    assert [bytes(rebuilt.payload(i)) for i in range(len(rebuilt))] == original[0]
    assert np.array_equal(rebuilt.labels, original[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # intact now: opened quietly
        assert build_store(listing, 24, cache_dir=tmp_path).path == entry
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [entry.name]


def test_damage_found_while_decoding_is_one_line_and_the_next_run_rebuilds(tmp_path, source):
    listing = list_encoded(source, "train")
    store = build_store(listing, 24, cache_dir=tmp_path)
    zero_jpeg_headers(store.path)  # after the open's check: the training reads it
    with pytest.raises(UserError, match="the JPEG store .* is damaged .*run the command again to rebuild it"):
        store.read(np.arange(4), 16)
    assert not store.path.exists()
    assert len(build_store(listing, 24, cache_dir=tmp_path).read(np.arange(4), 16)) == 4


@pytest.fixture
def large(monkeypatch):
    """Checksum blocks of 64 bytes and a cheap check that reads only the first and last block of a
    file (as for a store of many GiB)."""
    from gsimclr.data import checksums

    monkeypatch.setattr(checksums, "BLOCK", 64)
    monkeypatch.setattr(checksums, "FULL_CHECK_BYTES", 0)
    monkeypatch.setattr(checksums, "SAMPLED_BLOCKS", 0)


def test_a_full_check_on_demand_finds_what_the_sampled_one_does_not(tmp_path, source, large, monkeypatch):
    listing = list_encoded(source, "train")
    store = build_store(listing, 24, cache_dir=tmp_path)
    flip_byte(store.path / "images.bin", 64 * 3 + 5)  # block 3: neither the first nor the last
    assert EncodedStore.open(store.path).path == store.path  # the cheap check misses it
    with pytest.raises(Damaged, match="images.bin differs from its checksum .block 3"):
        EncodedStore.open(store.path, full=True)
    assert decoded_cache.verify_all(tmp_path) == {store.path.name: "images.bin differs from its checksum (block 3)"}
    monkeypatch.setenv("GSIMCLR_VERIFY", "full")
    with pytest.warns(UserWarning, match="damaged .*block 3.*rebuilding"):
        build_store(listing, 24, cache_dir=tmp_path)
    assert decoded_cache.verify_all(tmp_path) == {store.path.name: None}
    monkeypatch.setenv("GSIMCLR_VERIFY", "everything")
    with pytest.raises(UserError, match="GSIMCLR_VERIFY must be sampled or full"):
        build_store(listing, 24, cache_dir=tmp_path)


def test_the_decoded_cache_checks_fully_on_demand(tmp_path, source, large, monkeypatch):
    data = load_split(source, "train", image_size=16, cache_dir=tmp_path)
    flip_byte(tmp_path / data.fingerprint / "images.npy", 64 * 5 + 1)
    assert decoded_cache.load(data.fingerprint, tmp_path) is not None
    monkeypatch.setenv("GSIMCLR_VERIFY", "full")
    with pytest.warns(UserWarning, match="damaged .*images.npy"):
        assert decoded_cache.load(data.fingerprint, tmp_path) is None


def test_a_store_that_skipped_files_is_not_reused_by_on_corrupt_error(tmp_path):
    root = folder(tmp_path / "set", count=6)
    (root / "train" / "c0" / "broken.jpg").write_bytes(b"not an image")
    listing = list_encoded(str(root), "train")
    with pytest.warns(UserWarning, match="skipped 1"):
        assert len(build_store(listing, 24, cache_dir=tmp_path / "c", on_corrupt="skip")) == 6
    with pytest.raises(UserError, match="cannot read image .*broken.jpg"):
        build_store(listing, 24, cache_dir=tmp_path / "c", on_corrupt="error")
    assert len(build_store(listing, 24, cache_dir=tmp_path / "c", on_corrupt="skip")) == 6


def test_a_killed_builds_folders_go_with_the_next_open(tmp_path, source):
    listing = list_encoded(source, "train")
    store = build_store(listing, 24, cache_dir=tmp_path)
    stale = tmp_path / f".{store.path.name}-killed.tmp"
    stale.mkdir()
    (stale / "images.bin").write_bytes(b"half")
    build_store(listing, 24, cache_dir=tmp_path)
    assert not stale.exists()


CACHE_FAULTS = {
    "flipped byte in images.npy": lambda e: flip_byte(e / "images.npy"),
    "truncated images.npy": lambda e: truncate(e / "images.npy"),
    "images.npy removed": lambda e: (e / "images.npy").unlink(),
    "labels.npy removed": lambda e: (e / "labels.npy").unlink(),
    "labels out of range": labels_out_of_range,
    "broken meta.json": lambda e: (e / "meta.json").write_text("{"),
    "meta.json edited: classes renamed": lambda e: edit_meta(e, classes=["x", "y", "z"]),
    "meta.json edited: fewer skipped": lambda e: edit_meta(e, skipped=0, paths=None),
    "blocks.npy removed": lambda e: (e / "blocks.npy").unlink(),
}


@pytest.mark.parametrize("fault", list(CACHE_FAULTS))
def test_a_damaged_decoded_cache_entry_is_decoded_again(tmp_path, source, fault):
    first = load_split(source, "train", image_size=16, cache_dir=tmp_path)
    images, labels = np.array(first.images), first.labels.copy()
    entry = tmp_path / first.fingerprint
    del first
    CACHE_FAULTS[fault](entry)
    with pytest.warns(UserWarning, match="decoded-image cache entry .* is damaged"):
        again = load_split(source, "train", image_size=16, cache_dir=tmp_path)
    assert np.array_equal(again.images, images) and np.array_equal(again.labels, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached = decoded_cache.load(again.fingerprint, tmp_path)
    assert cached is not None and np.array_equal(cached.images, images)


def test_a_killed_cache_writes_temporary_file_goes_with_the_next_load(tmp_path, source):
    data = load_split(source, "train", image_size=16, cache_dir=tmp_path)
    entry = tmp_path / data.fingerprint
    (entry / ".images.npy.x1y2.tmp").write_bytes(b"partial")  # a kill -9 while np.save wrote
    assert decoded_cache.load(data.fingerprint, tmp_path) is not None
    assert not any(entry.glob(".*.tmp"))


def test_an_interrupted_cache_write_without_meta_is_decoded_again_quietly(tmp_path, source):
    data = load_split(source, "train", image_size=16, cache_dir=tmp_path)
    (tmp_path / data.fingerprint / "meta.json").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decoded_cache.load(data.fingerprint, tmp_path) is None


@pytest.mark.parametrize("fault", ["truncated images.bin", "labels out of range", "broken meta.json"])
def test_pretraining_on_a_damaged_store_rebuilds_it(tmp_path, monkeypatch, fault, capsys):
    monkeypatch.setenv("GSIMCLR_CACHE", str(tmp_path / "cache"))
    root = folder(tmp_path / "set", count=12)
    args = ["pretrain", "--data", str(root), "--store", "jpeg", "--image-size", "16", "--n-blocks", "0",
            "--head-dims", "16,8", "--epochs", "1", "--batch-size", "6", "--device", "cpu", "--monitor-every", "0"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    entry = next((tmp_path / "cache").glob("store-*"))
    STORE_FAULTS[fault](entry)
    with pytest.warns(UserWarning, match="damaged"):
        assert main([*args, "--out", str(tmp_path / "b")]) == 0
    losses = [json.loads((tmp_path / run / "simclr" / "metrics.jsonl").read_text())["loss"] for run in "ab"]
    assert losses[0] == losses[1]  # the rebuilt store is the same store
