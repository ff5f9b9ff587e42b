"""Property: however a pretraining run is cut into parts (stop after N epochs, then --resume), the
result equals the uninterrupted run's: the same weights, bit for bit, and the same metrics."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gsimclr.config import load_config
from gsimclr.data.sources import load_split
from gsimclr.tracking import read_metrics
from gsimclr.training.pretrain import pretrain

EPOCHS = 3
_REFERENCE: dict[str, tuple[dict, list[float]]] = {}


def _setup():
    data = load_split("digits", image_size=8).subset(np.arange(96))
    cfg = load_config(None, {"data": "digits", "image_size": 8, "n_blocks": 0, "head_dims": [16, 8], "optimizer": "adam",
                             "lr": 1e-3, "epochs": EPOCHS, "batch_size": 32, "warmup_epochs": 1, "device": "cpu",
                             "compile": "off", "tsne_points": 0})
    pseudo = np.random.default_rng(0).integers(0, 4, len(data))
    return cfg, data, pseudo


def _train(method: str, cuts: list[int]) -> tuple[dict, list[float]]:
    cfg, data, pseudo = _setup()
    out = Path(tempfile.mkdtemp()) / method
    done, model, first = 0, None, True
    for cut in cuts + [EPOCHS]:
        if done >= EPOCHS:
            break
        model = pretrain(cfg, data, out, pseudo, resume=not first, method=method, stop_after=cut)
        first = False
        done = min(EPOCHS, done + cut)
    return model.state_dict(), [r["loss"] for r in read_metrics(out / "metrics.jsonl")]


def _reference(method: str):
    if method not in _REFERENCE:
        _REFERENCE[method] = _train(method, [EPOCHS])
    return _REFERENCE[method]


@pytest.mark.parametrize("method", ["simclr", "gsimclr", "gmoco"])
@settings(max_examples=2, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(cuts=st.lists(st.integers(1, EPOCHS - 1), min_size=1, max_size=EPOCHS - 1))
def test_any_interruption_resumes_to_the_uninterrupted_result(method, cuts):
    weights, losses = _train(method, cuts)
    ref_weights, ref_losses = _reference(method)
    assert weights.keys() == ref_weights.keys()
    assert all(torch.equal(weights[k], ref_weights[k]) for k in weights)
    assert losses == pytest.approx(ref_losses, rel=0, abs=0)
