"""Every registered augmentation (view recipe) with every data path: the in-memory set, and the encoded
store with each decoder back end the CPU has; built from a run's configuration through the registry.
Everything is generated under tmp_path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gsimclr.cli import main
from image_folders import jpeg_folder
from gsimclr.config import load_config
from gsimclr.data.decode import BatchDecoder
from gsimclr.data.sources import list_encoded, load_split
from gsimclr.data.store import build_store
from gsimclr.transforms.augment import AUGMENTATIONS, Augment, NotebookAugment, build_augment
from gsimclr.transforms.recipe import ViewRecipe

NAMES = AUGMENTATIONS.names()
CPU_BACKENDS = ("pil", "torchvision")


def folder(root, count=24):
    """Two colours (red, blue), varied sizes and aspect ratios."""
    return jpeg_folder(root, count, sizes=(18, 40), colours=[(40, 40, 200), (200, 40, 40)])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = folder(tmp_path_factory.mktemp("recipes") / "set")
    memory = load_split(str(root), "train", image_size=16, cache=False)
    store = build_store(list_encoded(str(root), "train"), 20, cache_dir=root.parent / "cache")
    return memory, store


def test_every_recipe_is_a_view_recipe_built_from_a_config():
    assert {"simclr", "paper", "notebook"} <= set(NAMES)
    for name in NAMES:
        cfg = load_config(None, {"augment": name, "image_size": 16})
        recipe = build_augment(cfg)
        assert isinstance(recipe, ViewRecipe) and recipe.size == 16
        assert isinstance(recipe.crop, bool) and len(recipe.scale) == len(recipe.ratio) == 2
        assert not recipe.device_stage().crop  # what runs after a decoder cropped
    notebook = build_augment(load_config(None, {"augment": "notebook", "image_size": 16, "augment_draw": "batch",
                                                "color_drop": "identity", "jitter_strength": 1.0}))
    assert isinstance(notebook, NotebookAugment) and notebook.per_batch and notebook.jitter_strength == 1.0
    simclr = build_augment(load_config(None, {"augment": "simclr", "image_size": 16, "crop_scale_min": 0.3,
                                              "normalize": "none"}))
    assert isinstance(simclr, Augment) and simclr.scale == (0.3, 1.0) and simclr.mean == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_every_recipe_on_memory_and_on_the_store_with_every_cpu_decoder(data, name):
    memory, store = data
    recipe = build_augment(load_config(None, {"augment": name, "image_size": 16}))
    index = np.array([3, 0, 7, 5])
    torch.manual_seed(0)
    views = recipe.views(memory.read(index, 16), 2)
    assert tuple(views.shape) == (2, 4, 3, 16, 16) and torch.isfinite(views).all()
    for backend in CPU_BACKENDS:
        decoder = BatchDecoder.for_recipe(recipe, views=2, backend=backend)
        crops = store.decode(index, decoder, np.random.default_rng(0))
        assert tuple(crops.shape) == ((2 if recipe.crop else 1), 4, 16, 16, 3)
        views = recipe.views_from_crops(crops, 2)
        assert tuple(views.shape) == (2, 4, 3, 16, 16) and torch.isfinite(views).all()
        # the colour survives every recipe's crop stage (red and blue classes differ), up to jitter
        decoder.close()


def test_a_recipe_without_crop_sees_the_centred_square_from_the_store(data):
    _, store = data
    recipe = build_augment("paper", 16)
    crops = store.decode([0, 1], BatchDecoder.for_recipe(recipe, views=2))
    assert torch.equal(crops[0], store.read([0, 1], 16))


TINY = ["--image-size", "16", "--n-blocks", "0", "--head-dims", "16,8", "--epochs", "1", "--batch-size", "8",
        "--device", "cpu", "--monitor-every", "0"]


@pytest.mark.parametrize("store", ["memory", "jpeg"])
@pytest.mark.parametrize("name", NAMES)
def test_pretraining_runs_with_every_recipe_on_every_store(tmp_path, monkeypatch, name, store):
    monkeypatch.setenv("GSIMCLR_CACHE", str(tmp_path / "cache"))
    root = folder(tmp_path / "set", count=16)
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(root), "--store", store, "--augment", name, *TINY, "--out", str(out)]) == 0
    record = json.loads((out / "simclr" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["epoch"] == 1 and np.isfinite(record["loss"])


def test_the_notebook_preset_picks_the_store_and_pretrains(tmp_path, monkeypatch):
    """--preset paper-imagenet5 with a small --memory-budget-gb: store auto picks the JPEG store for the
    notebook recipe (it died with 'NotebookAugment' object has no attribute 'crop')."""
    monkeypatch.setenv("GSIMCLR_CACHE", str(tmp_path / "cache"))
    root = folder(tmp_path / "set", count=16)
    (root / "test").mkdir()
    for c in ("c0", "c1"):
        (root / "test" / c).symlink_to(root / "train" / c)
    out = tmp_path / "run"
    assert main(["pretrain", "--preset", "paper-imagenet5", "--data", str(root), "--memory-budget-gb", "0.00001",
                 "--image-size", "16", "--cache-size", "16", "--model", "resnet18", "--epochs", "1", "--batch-size", "8",
                 "--device", "cpu", "--monitor-every", "0", "--out", str(out)]) == 0
    assert any(p.name.startswith("store-") for p in (tmp_path / "cache").iterdir())
