"""The one image interface every consumer reads (``read`` and ``batches`` of
:class:`gsimclr.data.dataset.Labelled`): the in-memory set and the encoded store give the same pixels,
so evaluations and the autoencoder work on either. Everything is generated under tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gsimclr.data.dataset import ImageData
from gsimclr.data.sources import list_encoded, load_split
from gsimclr.data.store import build_store

SIZE = 16


def square_jpegs(root, count=20, size=SIZE, seed=0):
    """``root/train/<class>/*.jpg``: noisy squares of ``size`` px, so the store keeps their bytes."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root / "train" / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.jpg", quality=90)
    return str(root)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("interface")
    spec = square_jpegs(root / "set")
    memory = load_split(spec, "train", image_size=SIZE, cache=False)
    store = build_store(list_encoded(spec, "train"), SIZE, cache_dir=root / "cache")
    return memory, store


def test_read_gives_the_same_pixels_for_memory_and_store(both):
    memory, store = both
    index = np.array([7, 0, 19, 3, 3])
    a, b = memory.read(index, SIZE), store.read(index, SIZE)
    assert a.dtype == b.dtype == torch.uint8 and tuple(a.shape) == (5, SIZE, SIZE, 3)
    assert torch.equal(a, b)  # the store keeps the source JPEG bytes: the same decoder, the same pixels
    assert np.array_equal(memory.labels, store.labels)


@pytest.mark.parametrize("index", [None, np.array([5, 1, 2, 9, 11, 0, 4])])
def test_batches_are_the_same_for_memory_and_store(both, index):
    memory, store = both
    runs = [list(data.batches(index, SIZE, "cpu", batch_size=3)) for data in both]
    expected = np.arange(len(memory)) if index is None else index
    for run in runs:
        assert np.array_equal(np.concatenate([i for i, _ in run]), expected)
        assert all(len(i) == len(b) <= 3 for i, b in run)
    for (ia, ba), (ib, bb) in zip(*runs):
        assert np.array_equal(ia, ib) and torch.equal(ba, bb)


def test_another_size_is_resized_alike_within_rounding(both):
    memory, store = both
    a, b = memory.read(np.arange(6), 8).int(), store.read(np.arange(6), 8).int()
    assert tuple(a.shape) == tuple(b.shape) == (6, 8, 8, 3)
    # two filters (antialiased bilinear on the device, Pillow's DCT-scaled decode and bilinear resize) on
    # the same noisy pixels: the pixels differ, each image's mean colour does not
    assert (a.float().mean((1, 2)) - b.float().mean((1, 2))).abs().max() < 3


def test_stored_images_that_are_not_square_give_the_centred_square(tmp_path):
    folder = tmp_path / "set" / "train" / "a"
    folder.mkdir(parents=True)
    pixels = np.zeros((16, 32, 3), np.uint8)
    pixels[:, 8:24] = 255  # white centre square, black sides
    Image.fromarray(pixels).save(folder / "wide.png")
    store = build_store(list_encoded(str(tmp_path / "set"), "train"), 16, cache_dir=tmp_path / "cache")
    memory = load_split(str(tmp_path / "set"), "train", image_size=16, cache=False)
    assert store.read([0], 16).float().mean() > 240 and memory.read([0], 16).float().mean() > 240


def test_a_subset_reads_its_own_images(both):
    memory, store = both
    index = np.array([4, 2, 8])
    for data in both:
        assert torch.equal(data.subset(index).read([0, 1, 2], SIZE), data.read(index, SIZE))


def test_an_index_outside_the_set_is_refused(both):
    for data in both:
        with pytest.raises(IndexError):
            list(data.batches(np.array([0, len(data)]), SIZE))


def test_read_of_a_subset_copy_and_a_view_agree():
    images = np.random.default_rng(1).integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    data = ImageData(images)
    assert torch.equal(data.read([1, 2, 3], 4), torch.from_numpy(images[1:4]))  # a run: a view
    assert torch.equal(data.read([3, 1], 4), torch.from_numpy(images[[3, 1]]))


def test_autoencoder_trains_and_encodes_from_memory_or_store_alike(both):
    from gsimclr.guidance.autoencoder import AutoencoderOptions, encode, train_autoencoder

    opts = AutoencoderOptions(image_size=SIZE, epochs=1, batch_size=8, device="cpu", seed=0)
    codes = []
    for data in both:
        ae = train_autoencoder(data, opts)
        codes.append(encode(ae, data, opts))
    assert codes[0].shape == (len(both[0]), codes[0].shape[1])
    np.testing.assert_allclose(codes[0], codes[1], rtol=1e-5, atol=1e-5)
