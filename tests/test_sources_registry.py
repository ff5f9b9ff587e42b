"""Data sources are a registry dispatched by prefix: the loader, the undecoded listing, the store's
choice of path, the help and the error messages all read it, and a new source is one registration."""

from __future__ import annotations

import numpy as np
import pytest

from gsimclr.data.dataset import ImageData
from gsimclr.data.sources import (SOURCES, DataSource, describe_sources, in_memory_source, known_names, list_encoded,
                                  load_split, register_source, source_for)
from gsimclr.data.store_batches import open_split
from gsimclr.errors import UserError


@pytest.mark.parametrize("spec, form, argument", [
    ("digits", "digits", None),
    ("DIGITS", "digits", None),
    ("cifar10", "cifar10[:ROOT]", None),
    ("CIFAR100:/data/c", "cifar100[:ROOT]", "/data/c"),
    ("stl10-unlabeled:~/d", "stl10-unlabeled[:ROOT]", "~/d"),
    ("hf:user/set:config", "hf:NAME[:CONFIG]", "user/set:config"),
    ("HF:./folder", "hf:NAME[:CONFIG]", "./folder"),
    ("path/to/folder", "FOLDER | PATH.parquet", "path/to/folder"),
    ("cifar10x", "FOLDER | PATH.parquet", "cifar10x"),
    ("data:2024/set", "FOLDER | PATH.parquet", "data:2024/set"),
])
def test_specs_go_to_their_source_by_prefix(spec, form, argument):
    source, arg = source_for(spec)
    assert source.form == form and arg == argument


def test_arrays_stay_in_memory_under_store_auto_and_paths_do_not():
    for spec in ("digits", "cifar10:/x", "stl10", "hf:a/b"):
        assert in_memory_source(spec)
    for spec in ("folder", "/data/imagenet", "set.parquet"):
        assert not in_memory_source(spec)


def test_help_and_messages_list_every_registered_source():
    text = describe_sources()
    for source in SOURCES.values():
        assert source.form in text and source.help in text
    with pytest.raises(UserError, match="nor one of digits, cifar10.*hf:NAME"):
        load_split("no-such-source")
    assert known_names().split(", ") == [s.form for s in SOURCES.values() if s.prefix]


@pytest.fixture
def toy_source():
    """A source added in one registration: four 4x4 images, two classes."""

    def load(argument, request):
        if request.split != "train":
            return None
        size = request.image_size or 4
        images = np.full((4, size, size, 3), int(argument or 7), np.uint8)
        return ImageData(images, np.array([0, 1, 0, 1]), ["a", "b"], "toy", f"toy-{argument}-{size}")

    register_source("toy", DataSource("toy[:VALUE]", "four images of one grey VALUE", load))
    yield
    SOURCES.pop("toy")


def test_a_new_source_is_one_registration(toy_source, tmp_path):
    data = load_split("toy:9", image_size=8)
    assert data.images.shape == (4, 8, 8, 3) and (data.images == 9).all()
    assert load_split("toy", "test") is None
    listing = list_encoded("toy:3")
    assert listing.count == 4 and listing.labels.tolist() == [0, 1, 0, 1]
    assert "toy[:VALUE]" in describe_sources() and "toy[:VALUE]" in known_names()
    assert isinstance(open_split("toy", "train", 4, "auto", budget_bytes=1), ImageData)  # arrays: kept in memory
    store = open_split("toy:5", "train", 4, "jpeg", cache_dir=str(tmp_path))
    assert len(store) == 4 and abs(int(store.read([0], 4).float().mean()) - 5) <= 2
