"""Every evaluation and protocol reads its images through the one image interface, so it runs on the
in-memory set and on the JPEG store alike, and gives the same numbers on both (the store keeps the
source JPEG bytes, so both decode the same pixels). Everything is generated under tmp_path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from gsimclr.config import Config
from gsimclr.data.sources import list_encoded, load_split
from gsimclr.data.store import EncodedStore, build_store
from gsimclr.evaluation import EVALUATIONS
from gsimclr.pipeline import evaluate_encoder, stage_supervised
from gsimclr.training.pretrain import build_model

SIZE = 16


def _jpeg_folder(root, counts={"train": 24, "test": 12}):
    """``root/{train,test}/c{0,1}/*.jpg``: noisy dark (c0) or bright (c1) squares of SIZE px."""
    rng = np.random.default_rng(0)
    for split, count in counts.items():
        for i in range(count):
            folder = root / split / f"c{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 100, (SIZE, SIZE, 3), dtype=np.uint8) + 120 * (i % 2)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.jpg", quality=90)
    return str(root)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_stores")
    spec = _jpeg_folder(root / "set")
    memory = tuple(load_split(spec, split, image_size=SIZE, cache=False) for split in ("train", "test"))
    store = tuple(build_store(list_encoded(spec, split), SIZE, cache_dir=root / "cache") for split in ("train", "test"))
    assert isinstance(store[0], EncodedStore) and not isinstance(memory[0], EncodedStore)
    return {"memory": memory, "store": store}


def _cfg(**changes) -> Config:
    cfg = Config(data="unused", image_size=SIZE, model="paper_resnet", n_blocks=0, head_dims=[16, 8], device="cpu",
                 batch_size=8, linear_epochs=2, linear_epochs_p2=1, linear_epochs_p3=1, linear_batch_size=8,
                 standard_epochs=2, standard_batch_size=8, knn_k=5, label_fraction=0.5, finetune_head_epochs=2,
                 finetune_epochs=1, supervised_epochs=1, supervised_lr=0.01, holdout_fraction=0.25, tsne_points=0,
                 seed=3)
    return dataclasses.replace(cfg, **changes)


def _evaluate(cfg: Config, train, test):
    torch.manual_seed(0)
    model = build_model(cfg)
    return evaluate_encoder(cfg, model, train, test, which=tuple(EVALUATIONS.names()))


PROTOCOLS = [{}, {"eval_protocol": "notebook"}, {"eval_protocol": "notebook", "select_on": "test"},
             {"normalize": "none", "label_sampling": "uniform"}]


@pytest.mark.parametrize("changes", PROTOCOLS, ids=["gsimclr", "notebook-holdout", "notebook-test", "raw-uniform"])
def test_every_evaluation_gives_the_same_result_on_memory_and_store(splits, changes):
    cfg = _cfg(**changes)
    results = {kind: _evaluate(cfg, *data) for kind, data in splits.items()}
    assert set(results["memory"]) == set(EVALUATIONS.names())  # every registered evaluation ran
    assert results["memory"] == results["store"]


@pytest.mark.parametrize("changes", [{}, {"eval_protocol": "notebook"},
                                     {"eval_protocol": "notebook", "supervised_bn_eval": "batch"}])
def test_supervised_baseline_gives_the_same_result_on_memory_and_store(splits, changes):
    cfg = _cfg(**changes)
    results = {}
    for kind, (train, test) in splits.items():
        torch.manual_seed(0)
        results[kind] = stage_supervised(cfg, train, test)
    assert results["memory"] == results["store"]


def test_every_evaluation_is_independent_of_what_ran_before(splits):
    """Each evaluation initialises its head from --seed, so it gives the same number from ``gsimclr run`` and
    from its own subcommand in a fresh process (PyTorch seeds its global stream at random)."""
    cfg = _cfg(eval_protocol="notebook")
    train, test = splits["memory"]
    model = build_model(cfg)
    results = []
    for ambient in (1, 2):
        torch.manual_seed(ambient)
        results.append(evaluate_encoder(cfg, model, train, test, which=tuple(EVALUATIONS.names())))
    assert results[0] == results[1]


def test_supervised_baseline_streams_a_store_beyond_the_memory_budget(splits):
    """The store is read batch by batch, never decoded whole: a memory budget it exceeds does not refuse it."""
    cfg = _cfg(memory_budget_gb=1e-9)
    torch.manual_seed(0)
    assert 0 <= stage_supervised(cfg, *splits["store"])["top1"] <= 100
