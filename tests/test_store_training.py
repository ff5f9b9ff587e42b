"""Training and evaluating from the encoded JPEG store: the CLI with --store jpeg, the automatic
choice of path, determinism of the store path, and the two large-scale presets run shortened on
generated data. Everything is generated under tmp_path; nothing touches the network."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from gsimclr.cli import main
from gsimclr.config import load_config
from gsimclr.data.dataset import ImageData
from gsimclr.data.sources import list_encoded
from gsimclr.data.store import EncodedStore, build_store
from gsimclr.data.store_batches import open_split
from gsimclr.training.pretrain import pretrain

TINY = ["--image-size", "16", "--n-blocks", "0", "--head-dims", "32,16,8", "--epochs", "1", "--batch-size", "32",
        "--ae-epochs", "1", "--k", "16", "--linear-epochs", "2", "--finetune-head-epochs", "1", "--finetune-epochs", "1",
        "--supervised-epochs", "1", "--knn-k", "5", "--device", "cpu", "--tsne-points", "0"]
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 60, 230)]


def image_folder(root, per_class=(30, 10), seed=0):
    """ImageNet-style ``root/{train,val}/<wnid>/*.JPEG``: three colours, sizes and aspect ratios vary."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "val"), per_class):
        for c, colour in enumerate(COLOURS):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = rng.integers(20, 48, 2)
                pixels = np.clip(np.array(colour) + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"n{c:08d}_{i}.JPEG", quality=90)
    return root


def cache_files(cache_root) -> list[str]:
    return sorted(p.name for p in cache_root.rglob("*") if p.is_file())


def test_run_from_a_jpeg_store_end_to_end(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GSIMCLR_CACHE", str(cache))
    data = image_folder(tmp_path / "set")
    out = tmp_path / "run"
    assert main(["run", "--data", str(data), "--store", "jpeg", "--cache-size", "24", *TINY, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    for method in ("simclr", "gsimclr"):
        r = results["methods"][method]
        assert set(r["linear"]) == {"P1", "P2", "P3"} and 0 <= r["knn"] <= 100 and 0 <= r["finetune"] <= 100
    assert 0 <= results["supervised"] <= 100
    files = cache_files(cache)
    assert "images.bin" in files and "images.npy" not in files  # read from the store, never decoded to the cache
    stores = [p for p in cache.iterdir() if p.name.startswith("store-")]
    assert len(stores) == 2  # train and val
    assert main(["embed", "--checkpoint", str(out / "simclr"), "--split", "test", "--point", "P3", "--store", "jpeg",
                 "--output", str(tmp_path / "emb.npy")]) == 0
    assert np.load(tmp_path / "emb.npy").shape[0] == 30  # the 30 val images, in order


def test_auto_keeps_small_sets_in_memory_and_large_ones_encoded(tmp_path):
    data = str(image_folder(tmp_path / "set"))
    assert isinstance(open_split(data, "train", 32, "auto", budget_bytes=10**9, cache_dir=tmp_path), ImageData)
    assert isinstance(open_split(data, "train", 32, "auto", budget_bytes=1000, cache_dir=tmp_path), EncodedStore)
    assert isinstance(open_split(data, "train", 32, "jpeg", cache_dir=tmp_path), EncodedStore)
    assert isinstance(open_split(data, "train", 32, "memory", cache_dir=tmp_path), ImageData)
    assert isinstance(open_split("digits", "train", 32, "auto", budget_bytes=1), ImageData)  # arrays already
    assert isinstance(open_split("digits", "train", 32, "jpeg", cache_dir=tmp_path), EncodedStore)
    assert open_split(data, "unlabeled", 32, "jpeg", cache_dir=tmp_path) is None


def test_store_pretraining_is_reproducible(tmp_path):
    store = build_store(list_encoded(str(image_folder(tmp_path / "set")), "train"), 24, cache_dir=tmp_path / "c")
    cfg = load_config("digits-quick", {"image_size": 16, "epochs": 1, "batch_size": 32, "device": "cpu",
                                       "compile": "off"})
    losses = []
    for run in ("a", "b"):
        pretrain(cfg, store, tmp_path / run)
        losses.append([json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()])
    assert losses[0] == losses[1] and len(losses[0]) == 1 and all(np.isfinite(losses[0]))


@pytest.mark.parametrize("preset", ["stl10-resnet18", "imagenet-resnet50"])
def test_scale_presets_run_shortened_on_generated_data(tmp_path, monkeypatch, preset, capsys):
    monkeypatch.setenv("GSIMCLR_CACHE", str(tmp_path / "cache"))
    data = image_folder(tmp_path / "set", per_class=(8, 2))
    out = tmp_path / "run"
    assert main(["pretrain", "--preset", preset, "--data", str(data), "--store", "jpeg", "--image-size", "32",
                 "--cache-size", "40", "--epochs", "1", "--batch-size", "12", "--warmup-epochs", "0",
                 "--monitor-every", "0", "--device", "cpu", "--out", str(out)]) == 0
    record = json.loads((out / "simclr" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["epoch"] == 1 and np.isfinite(record["loss"])
    saved = json.loads((out / "run.json").read_text())
    assert saved["command"]


def test_decoding_a_store_for_the_stages_that_need_pixels(tmp_path):
    from gsimclr.data.store_batches import decoded
    from gsimclr.errors import UserError

    store = build_store(list_encoded(str(image_folder(tmp_path / "set")), "val"), 24, cache_dir=tmp_path / "c")
    data = decoded(store, 16, "the test", budget_bytes=10**6)
    assert data.images.shape == (30, 16, 16, 3) and data.labels.tolist() == store.labels.tolist()
    means = data.images.reshape(30, -1, 3).mean(1)
    assert (means.argmax(1) == np.repeat([0, 1, 2], 10)).all()  # red, green, blue classes in order
    with pytest.raises(UserError, match="the test needs the 30 images decoded .*--memory-budget-gb"):
        decoded(store, 16, "the test", budget_bytes=1000)
    assert main(["pretrain", "--data", str(tmp_path / "set"), "--store", "jpeg", "--method", "gsimclr",
                 "--memory-budget-gb", "0.00001", "--image-size", "16", "--batch-size", "16", "--epochs", "1",
                 "--device", "cpu", "--out", str(tmp_path / "run")]) == 2
