import os

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Decoded-image caches go to a temporary folder, never to the user's home."""
    monkeypatch.setenv("GSIMCLR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def tiny_overrides():
    """A few-second configuration on digits at 16 px."""
    return {"data": "digits", "image_size": 16, "model": "paper_resnet", "n_blocks": 0, "head_dims": [32, 16, 8],
            "optimizer": "adam", "lr": 1e-3,
            "epochs": 2, "batch_size": 64, "ae_epochs": 1, "k": 64, "linear_epochs": 3, "finetune_head_epochs": 1,
            "finetune_epochs": 1, "supervised_epochs": 1, "knn_k": 10, "device": "cpu", "tsne_points": 100}


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread is fastest (and keeps a shared machine usable)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
