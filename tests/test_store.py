"""Tests of the encoded store, the batched crop decoder, the prefetcher and the choice of data path.

Every image is generated under tmp_path; nothing touches the network.
"""

from __future__ import annotations

import io
import os
import stat
import threading
import time
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from gsimclr.data import store as store_module
from gsimclr.data.checksums import Damaged
from gsimclr.data.decode import BatchDecoder, centre_boxes, sample_boxes
from gsimclr.data.prefetch import Prefetcher
from gsimclr.data.sources import list_encoded
from gsimclr.data.store import EncodedStore, build_store, encode_capped, store_fingerprint, store_path
from gsimclr.data.store_batches import choose_store, sequential_batches, store_views
from gsimclr.errors import UserError
from gsimclr.transforms.augment import sample_crop_boxes

from gsimclr.guidance.samplers import GreedyBatchSampler as GuidedBatchSampler


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, **kwargs)
    return buffer.getvalue()


def entries(folder) -> list[str]:
    """What a cache folder holds, without the (empty) lock files that serialise writers."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def index_colour(i: int) -> tuple[int, int, int]:
    """A colour that encodes ``i`` (< 4096) and survives JPEG: 16 levels per channel."""
    return (16 * (i % 16) + 8, 16 * ((i // 16) % 16) + 8, 16 * (i // 256) + 8)


def colour_index(pixel) -> int:
    r, g, b = (int(c) // 16 for c in pixel)
    return r + 16 * g + 256 * b


def make_folder(root, sizes, classes=("cat", "dog")):
    """ImageNet-style ``root/train/<class>/<i>.JPEG``, image i solid in :func:`index_colour`."""
    paths = []
    for i, (h, w) in enumerate(sizes):
        folder = root / "train" / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img{i:04d}.JPEG"
        path.write_bytes(jpeg_bytes(Image.new("RGB", (w, h), index_colour(i))))
        paths.append(path)
    return paths


def test_round_trip_keeps_bytes_labels_and_order(tmp_path):
    sizes = [(40, 60), (30, 30), (100, 50), (20, 90), (64, 64), (33, 47)]
    paths = make_folder(tmp_path / "set", sizes)
    listing = list_encoded(str(tmp_path / "set"))
    store = build_store(listing, stored_size=48, cache_dir=tmp_path / "cache")
    files = sorted(paths, key=lambda p: (p.parent.name, p.name))
    assert len(store) == len(files) and store.classes == ["cat", "dog"]
    assert store.labels.tolist() == [0 if p.parent.name == "cat" else 1 for p in files]
    for i, path in enumerate(files):
        h, w = sizes[int(path.stem[3:])]
        assert store.original_sizes[i].tolist() == [h, w]
        if min(h, w) <= 48:  # already small enough: stored byte for byte
            assert bytes(store.payload(i)) == path.read_bytes()
            assert store.sizes[i].tolist() == [h, w]
        else:  # shorter side capped, aspect ratio kept
            sh, sw = store.sizes[i].tolist()
            assert min(sh, sw) == 48 and abs(sh / sw - h / w) < 0.03
        with Image.open(io.BytesIO(store.payload(i))) as img:
            assert img.size == tuple(store.sizes[i][::-1]) and img.mode == "RGB"
            assert colour_index(img.getpixel((img.size[0] // 2, img.size[1] // 2))) == int(path.stem[3:])
    again = build_store(list_encoded(str(tmp_path / "set")), 48, cache_dir=tmp_path / "cache")
    assert again.path == store.path and again.fingerprint == store.fingerprint


def test_odd_images_are_made_upright_rgb(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    rgba = Image.new("RGBA", (30, 20), (255, 0, 0, 0))  # fully transparent: composited on black
    rgba.save(folder / "a_transparent.png")
    Image.new("L", (25, 25), 200).save(folder / "b_gray.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: a 40 x 20 (w x h) file is 20 wide and 40 high upright
    Image.new("RGB", (40, 20), (0, 0, 255)).save(folder / "c_rotated.jpg", exif=exif, quality=95)
    Image.new("P", (16, 16)).save(folder / "d_palette.gif")
    store = build_store(list_encoded(str(folder)), 64, cache_dir=tmp_path / "cache")
    assert len(store) == 4 and store.labels is None
    assert store.original_sizes.tolist() == [[20, 30], [25, 25], [40, 20], [16, 16]]
    assert store.sizes.tolist() == store.original_sizes.tolist()
    with Image.open(io.BytesIO(store.payload(0))) as img:
        assert img.mode == "RGB" and max(img.getpixel((15, 10))) < 10
    with Image.open(io.BytesIO(store.payload(1))) as img:
        assert img.mode == "RGB"


def test_corrupt_files_are_skipped_or_named(tmp_path):
    paths = make_folder(tmp_path / "set", [(30, 30)] * 4)
    paths[1].write_bytes(paths[1].read_bytes()[:200])  # truncated JPEG
    paths[2].write_bytes(b"not an image at all")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        store = build_store(list_encoded(str(tmp_path / "set")), 32, cache_dir=tmp_path / "cache")
    assert len(store) == 2 and store.skipped == 2
    assert store.labels.tolist() == [0, 1]  # cat: img0000 (img0002 dropped); dog: img0003 (img0001 dropped)
    with pytest.raises(UserError, match="img0001.JPEG|img0002.JPEG"):
        build_store(list_encoded(str(tmp_path / "set")), 32, cache_dir=tmp_path / "other", on_corrupt="error")
    assert entries(tmp_path / "other") == []  # nothing half-written left behind


def test_nothing_readable_is_a_user_error(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(UserError, match="none of the 1 images"):
        build_store(list_encoded(str(tmp_path / "bad")), 32, cache_dir=tmp_path / "cache")


def test_interrupted_write_leaves_no_entry(tmp_path, monkeypatch):
    make_folder(tmp_path / "set", [(30, 30)] * 5)
    listing = list_encoded(str(tmp_path / "set"))
    calls = []
    original = store_module.encode_capped

    def failing(payload, size, quality):
        calls.append(payload)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(payload, size, quality)

    monkeypatch.setattr(store_module, "encode_capped", failing)
    with pytest.raises(KeyboardInterrupt):
        build_store(listing, 32, cache_dir=tmp_path / "cache", workers=1)
    assert entries(tmp_path / "cache") == []
    monkeypatch.setattr(store_module, "encode_capped", original)
    store = build_store(listing, 32, cache_dir=tmp_path / "cache")
    assert len(store) == 5 and entries(tmp_path / "cache") == [store.path.name]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o777 & ~umask
    for file in store.path.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~umask


def test_incomplete_entry_is_rebuilt_and_concurrent_winner_is_kept(tmp_path):
    make_folder(tmp_path / "set", [(30, 30)] * 3)
    listing = list_encoded(str(tmp_path / "set"))
    entry = store_path(store_fingerprint(listing, 32), tmp_path / "cache")
    entry.mkdir(parents=True)
    (entry / "images.bin").write_bytes(b"partial")  # no meta.json: does not open
    with pytest.raises(Damaged, match="meta.json"):
        EncodedStore.open(entry)
    with pytest.warns(UserWarning, match="damaged .*meta.json.*rebuilding"):
        first = build_store(listing, 32, cache_dir=tmp_path / "cache")
    assert len(first) == 3 and first.path == entry
    assert build_store(listing, 32, cache_dir=tmp_path / "cache").path == first.path
    assert len(build_store(listing, 32, cache_dir=tmp_path / "cache", rebuild=True)) == 3
    assert entries(tmp_path / "cache") == [entry.name]  # the replaced entries went


def test_sharded_parquet_round_trip(tmp_path):
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    labels = []
    for shard in range(2):
        images, shard_labels = [], []
        for j in range(5):
            i = shard * 5 + j
            images.append({"bytes": jpeg_bytes(Image.new("RGB", (20 + i, 24), index_colour(i))), "path": None})
            shard_labels.append(i % 3)
        labels += shard_labels
        table = pa.table({"image": pa.array(images, struct), "label": pa.array(shard_labels, pa.int64())})
        pq.write_table(table, tmp_path / f"train-{shard:05d}-of-00002.parquet", row_group_size=2)
    listing = list_encoded(str(tmp_path))
    assert listing.count == 10 and list_encoded(str(tmp_path), "test") is None
    store = build_store(listing, 64, cache_dir=tmp_path / "cache")
    assert store.labels.tolist() == labels
    for i in range(10):
        with Image.open(io.BytesIO(store.payload(i))) as img:
            assert img.size == (20 + i, 24) and colour_index(img.getpixel((5, 5))) == i


def test_arrays_and_subset_by_index(tmp_path):
    store = build_store(list_encoded("digits", "test"), 32, cache_dir=tmp_path / "cache")
    index = np.array([7, 3, 3, 100])
    view = store.subset(index)
    assert len(view) == 4 and view.labels.tolist() == store.labels[index].tolist()
    assert bytes(view.payload(1)) == bytes(store.payload(3))
    assert view._data is store._data  # shares the memory map
    assert view.fingerprint != store.fingerprint


def test_encode_caps_the_shorter_side():
    data, size, original = encode_capped(np.zeros((300, 120, 3), np.uint8), 60)
    assert size == (150, 60) and original == (300, 120)
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (60, 150)


# ----------------------------------------------------------------------------------------- decoder


def test_boxes_follow_random_resized_crop():
    rng = np.random.default_rng(0)
    heights = np.array([256, 256, 40, 400])
    widths = np.array([256, 384, 400, 40])
    boxes = sample_boxes(heights, widths, views=2000, rng=rng)
    top, left, h, w = np.moveaxis(boxes, -1, 0)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= heights).all() and (left + w <= widths).all()
    area = (h * w / (heights * widths))
    for j in range(4):  # same distribution as the batched RandomResizedCrop sampler (checked against torchvision)
        ref = sample_crop_boxes(4000, int(heights[j]), int(widths[j]), generator=torch.Generator().manual_seed(j))
        ref_area = (ref[:, 2] * ref[:, 3] / (heights[j] * widths[j])).numpy()
        assert abs(area[:, j].mean() - ref_area.mean()) < 0.025
        assert abs(np.median(h[:, j]) - ref[:, 2].median().item()) <= 0.05 * heights[j]
    assert area[:, :2].min() >= 0.07
    ratio = (w / h)[:, :2]
    assert (ratio > 0.74).all() and (ratio < 1.34).all()
    # very wide and very tall images: often the clamped-ratio centre crop, never outside the image
    assert ((h[:, 2] == 40) & (w[:, 2] == round(40 * 4 / 3))).mean() > 0.3
    assert centre_boxes(np.array([40]), np.array([100])).tolist() == [[[0, 30, 40, 40]]]


@pytest.mark.parametrize("backend", ["pil", "torchvision"])
def test_crops_come_from_the_right_part_of_the_image(backend):
    half = Image.new("RGB", (120, 60), (250, 0, 0))
    half.paste((0, 0, 250), (60, 0, 120, 60))  # left red, right blue
    decoder = BatchDecoder(size=8, views=1, backend=backend, workers=1)
    boxes = np.array([[[10, 5, 40, 40]], [[10, 75, 40, 40]]])  # one left, one right, as (views, N, 4)
    decoder.boxes = lambda sizes, rng: boxes.reshape(1, 2, 4)
    out = decoder([jpeg_bytes(half)] * 2, np.array([[60, 120]] * 2), np.random.default_rng(0))
    assert out.shape == (1, 2, 8, 8, 3)
    assert (out[0, 0, ..., 0] > 200).all() and (out[0, 0, ..., 2] < 50).all()
    assert (out[0, 1, ..., 2] > 200).all() and (out[0, 1, ..., 0] < 50).all()


def test_backends_agree():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8).repeat(16, 0).repeat(16, 1)  # 192 x 256 blocks
    payload, sizes = jpeg_bytes(Image.fromarray(pixels)), np.array([[192, 256]] * 3)
    outs = [BatchDecoder(32, views=2, backend=b, workers=1)([payload] * 3, sizes, np.random.default_rng(5))
            for b in ("pil", "torchvision")]
    assert (outs[0].float() - outs[1].float()).abs().mean() < 6


def _crop_reference(image: torch.Tensor, box, size: int) -> torch.Tensor:
    """One crop as the per-crop loop did it: slice, then antialiased bilinear interpolate."""
    top, left, h, w = box
    crop = image[None, :, top:top + h, left:left + w].float()
    out = torch.nn.functional.interpolate(crop, (size, size), mode="bilinear", antialias=True, align_corners=False)
    return out[0].round().clamp(0, 255).permute(1, 2, 0)


def test_batched_crops_match_per_crop_resizing():
    from gsimclr.data.decode import batched_crops

    g = torch.Generator().manual_seed(3)
    smooth = [torch.nn.functional.interpolate(torch.rand(1, 3, h // 8, w // 8, generator=g) * 255, (h, w),
                                              mode="bilinear")[0].round().to(torch.uint8) for h, w in ((60, 90), (80, 50))]
    size = 16
    # identity (box = size), upscaling, downscaling by 2 and by 3.5, touching the right and bottom edges
    boxes = np.array([[[3, 4, 16, 16], [10, 7, 16, 16]], [[0, 0, 8, 12], [5, 3, 10, 9]],
                      [[20, 40, 32, 32], [48, 18, 32, 32]], [[4, 34, 56, 56], [24, 0, 56, 50]]])
    ours = batched_crops(smooth, boxes, size)
    assert ours.shape == (4, 2, size, size, 3) and ours.dtype == torch.uint8
    for v in range(4):
        for i in range(2):
            ref = _crop_reference(smooth[i], boxes[v, i], size)
            diff = (ours[v, i].float() - ref).abs()
            if v == 0:
                assert diff.max() == 0  # a crop of the output size is copied exactly
            else:  # the box filter and interpolate's triangle filter differ by a level or two on average
                # (the pil and torchvision back ends differ by up to 6: test_backends_agree)
                assert diff.mean() < 2.5 and diff.max() <= 16, (v, i, diff.mean(), diff.max())


def test_decoder_without_crop_gives_the_centred_square():
    wide = Image.new("RGB", (90, 30), (0, 0, 0))
    wide.paste((255, 255, 255), (30, 0, 60, 30))  # white centre square
    out = BatchDecoder(16, views=2, crop=False)([jpeg_bytes(wide)], np.array([[30, 90]]), None)
    assert out.shape == (1, 1, 16, 16, 3) and out.float().mean() > 240


# -------------------------------------------------------------------------------------- prefetcher


def test_prefetcher_order_errors_and_early_stop():
    assert [x for _, x in Prefetcher(range(5), lambda s, i: (s, i * 10))] == [(s, s * 10) for s in range(5)]

    def boom(step, idx):
        if step == 2:
            raise ValueError("bad batch")
        return idx

    with pytest.raises(ValueError, match="bad batch"):
        list(Prefetcher(range(5), boom))
    loaded = []
    prefetcher = Prefetcher(range(1000), lambda s, i: loaded.append(i) or i, depth=2)
    for _, value in prefetcher:
        if value == 3:
            break
    assert prefetcher._thread is None and len(loaded) < 10  # stopped, at most depth + 2 ahead


def test_prefetcher_loads_ahead_while_the_consumer_works():
    def slow(step, idx):
        time.sleep(0.05)
        return threading.current_thread().name

    started = time.perf_counter()
    names = []
    for _, name in Prefetcher(range(6), slow, depth=2):
        time.sleep(0.05)  # the "training step"
        names.append(name)
    assert set(names) == {"prefetch"}
    assert time.perf_counter() - started < 0.5  # overlapped: 0.35 s, not 0.6 s serial


# ------------------------------------------------------------------------------- store batches


def test_random_access_under_the_guided_sampler(tmp_path):
    n = 150
    paths = make_folder(tmp_path / "set", [(24 + i % 7, 24 + i % 5) for i in range(n)], classes=("only",))
    store = build_store(list_encoded(str(tmp_path / "set")), 32, cache_dir=tmp_path / "cache")
    file_index = np.array([int(p.stem[3:]) for p in sorted(paths)])
    pseudo_labels = np.arange(n) % 10
    sampler = GuidedBatchSampler(pseudo_labels, batch_size=20, seed=0)
    seen = []
    for indices, crops in store_views(store, BatchDecoder(8, views=2), sampler, seed=0, epoch=0):
        assert crops.shape == (2, len(indices), 8, 8, 3)
        assert len(set(pseudo_labels[indices])) == len(indices) // 2 or len(indices) < 20  # cap of 2 per label
        for j, i in enumerate(indices):
            for v in range(2):
                assert colour_index(crops[v, j, 4, 4].numpy()) == file_index[i]
        seen += list(indices)
    assert sorted(seen) == list(range(n))


def test_crops_do_not_depend_on_thread_timing(tmp_path):
    make_folder(tmp_path / "set", [(40, 60)] * 12)
    store = build_store(list_encoded(str(tmp_path / "set")), 32, cache_dir=tmp_path / "cache")
    batches = sequential_batches(12, 5)
    runs = [[c for _, c in store_views(store, BatchDecoder(8, workers=w), batches, seed=3, epoch=1, depth=d)]
            for w, d in ((1, 1), (2, 3))]
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_an_epoch_from_the_store_has_bounded_memory(tmp_path):
    n, side = 400, 192  # decoded at stored size: 400 * 192 * 256 * 3 = 59 MB
    folder = tmp_path / "set" / "train" / "a"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (side // 8, side // 6, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    payload = jpeg_bytes(Image.fromarray(base))
    for i in range(n):
        (folder / f"{i}.jpg").write_bytes(payload)
    store = build_store(list_encoded(str(tmp_path / "set")), side, cache_dir=tmp_path / "cache")
    batches = [rng.permutation(n)[i:i + 32] for i in range(0, n, 32)]
    tracemalloc.start()
    total = 0
    for _, crops in store_views(store, BatchDecoder(32, views=2, workers=2), batches, seed=0, epoch=0, depth=2):
        total += int(crops.float().mean() > 0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total == len(batches)
    batch_bytes = 2 * 32 * 32 * 32 * 3
    assert peak < 8 * batch_bytes + 4 * 2**20  # a few batches of crops, not the data set (59 MB decoded)


def test_choose_store():
    assert choose_store("auto", 50_000, 32, budget_bytes=2**30) == "memory"
    assert choose_store("auto", 200_000, 256, budget_bytes=12 * 2**30) == "jpeg"
    assert choose_store("memory", 10**9, 256, budget_bytes=1) == "memory"
    assert choose_store("jpeg", 1, 8) == "jpeg"
    with pytest.raises(UserError, match="store must be one of"):
        choose_store("disk", 1, 8)


# ---------------------------------------------------------------------------- in-memory path


def test_decoded_cache_is_memory_mapped_and_consecutive_subsets_are_views(tmp_path):
    from gsimclr.data import cache as decoded_cache
    from gsimclr.data.dataset import ImageData

    images = np.arange(6 * 4 * 4 * 3, dtype=np.uint8).reshape(6, 4, 4, 3)
    decoded_cache.save(ImageData(images, np.arange(6) % 2, ["a", "b"], "toy", "key1"), tmp_path)
    data = decoded_cache.load("key1", tmp_path)
    assert isinstance(data.images, np.memmap) and np.array_equal(data.images, images)
    torch.from_numpy(data.images)  # writable (copy-on-write): no warning, no copy
    view = data.subset(np.arange(2, 5))
    assert np.shares_memory(view.images, data.images) and view.labels.tolist() == [0, 1, 0]
    picked = data.subset(np.array([4, 1]))
    assert not np.shares_memory(picked.images, data.images) and np.array_equal(picked.images, images[[4, 1]])
    assert view.fingerprint != picked.fingerprint != data.fingerprint


def test_released_pages_read_back_the_same(tmp_path, monkeypatch):
    from gsimclr.data import store_batches

    make_folder(tmp_path / "set", [(40, 60)] * 10)
    store = build_store(list_encoded(str(tmp_path / "set")), 32, cache_dir=tmp_path / "cache")
    before = [bytes(store.payload(i)) for i in range(len(store))]
    calls = []
    original = EncodedStore.release_pages
    monkeypatch.setattr(EncodedStore, "release_pages", lambda self: calls.append(1) or original(self))
    monkeypatch.setattr(store_module, "RELEASE_BYTES", 1)  # release after every batch
    runs = [[c for _, c in store_views(store, BatchDecoder(8), sequential_batches(10, 4), seed=1, epoch=0)]
            for _ in range(2)]
    assert len(calls) == 6 and all(torch.equal(a, b) for a, b in zip(*runs))
    assert [bytes(store.payload(i)) for i in range(len(store))] == before


def test_a_killed_build_leaves_no_entry_and_its_leftovers_go_with_the_next_build(tmp_path):
    import signal
    import subprocess
    import sys

    make_folder(tmp_path / "set", [(30, 30)] * 5)
    script = (
        "import os, signal, sys\n"
        "from gsimclr.data import store as s\n"
        "from gsimclr.data.sources import list_encoded\n"
        "calls = []\n"
        "real = s.encode_capped\n"
        "def dying(*a):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 3: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(*a)\n"
        "s.encode_capped = dying\n"
        "s.build_store(list_encoded(sys.argv[1]), 32, cache_dir=sys.argv[2], workers=1)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "set"), str(tmp_path / "cache")], env=env)
    assert run.returncode == -signal.SIGKILL
    left = entries(tmp_path / "cache")
    assert len(left) == 1 and left[0].endswith(".tmp")  # the killed writer's folder, never opened as an entry
    store = build_store(list_encoded(str(tmp_path / "set")), 32, cache_dir=tmp_path / "cache")
    assert len(store) == 5 and entries(tmp_path / "cache") == [store.path.name]


@pytest.mark.parametrize("below", ["", "sub"])
def test_an_unwritable_cache_folder_is_a_user_error(tmp_path, below):
    make_folder(tmp_path / "set", [(30, 30)] * 2)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot build the JPEG store .*GSIMCLR_CACHE"):
        build_store(list_encoded(str(tmp_path / "set")), 32, cache_dir=blocker / below if below else blocker)


def test_a_store_of_the_same_images_elsewhere_has_the_same_content_id(tmp_path):
    """Resume compares a store by content (gsimclr.data.identity): the same files in another place with
    other modification times make another store entry with the same id; a subset, relabelling or other
    images differ."""
    import os
    import shutil

    from gsimclr.data.identity import content_id

    sizes = [(40, 60), (30, 30), (100, 50), (20, 90)]
    make_folder(tmp_path / "set", sizes)
    shutil.copytree(tmp_path / "set", tmp_path / "moved" / "set")
    for path in (tmp_path / "moved").rglob("*.JPEG"):
        os.utime(path, (1, 1))
    stores = [build_store(list_encoded(str(tmp_path / where)), stored_size=48, cache_dir=tmp_path / "cache")
              for where in ("set", "moved/set")]
    assert stores[0].fingerprint != stores[1].fingerprint and stores[0].path != stores[1].path
    assert content_id(stores[0]) == content_id(stores[1])
    assert content_id(stores[0].subset(np.array([1, 0, 2, 3]))) != content_id(stores[0])
    assert content_id(stores[0].with_classes(np.array([1, 0, 1, 0]), ["dog", "cat"])) != content_id(stores[0])
    make_folder(tmp_path / "other", sizes[::-1])
    other = build_store(list_encoded(str(tmp_path / "other")), stored_size=48, cache_dir=tmp_path / "cache")
    assert content_id(other) != content_id(stores[0])


def test_a_cached_set_brings_the_content_id_computed_when_it_was_stored(tmp_path, monkeypatch):
    """The decoded-image cache keeps each entry's content id in its sealed meta.json: a set read back has
    the id of the images it stored, without hashing them again (a large cache is not read whole at start)."""
    from gsimclr.data import cache as decoded_cache
    from gsimclr.data import identity
    from gsimclr.data.dataset import ImageData

    data = ImageData(np.random.default_rng(0).integers(0, 255, (20, 8, 8, 3), dtype=np.uint8),
                     np.arange(20) % 2, ["a", "b"], "toy", decoded_cache.fingerprint(kind="toy"))
    expected = identity.content_id(data)
    decoded_cache.save(data, tmp_path)

    def no_hashing(*args, **kwargs):
        raise AssertionError("hashed again")

    monkeypatch.setattr(identity, "_update_array", no_hashing)
    loaded = decoded_cache.load(data.fingerprint, tmp_path)
    assert identity.content_id(loaded) == expected
    with pytest.raises(AssertionError):          # a subset is its own set: hashed
        identity.content_id(loaded.subset(np.arange(5)))
