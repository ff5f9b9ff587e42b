"""The benchmarks train and time the trainer users run (``build_pretrainer`` and ``Pretrainer.step``), not a
copy of its step."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gsimclr.config import load_config
from gsimclr.data.sources import load_split
from gsimclr.training import pretrain as trainer_module
from gsimclr.training.pretrain import Pretrainer, pretrain

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import accuracy_parity  # noqa: E402


def test_the_trainer_keeps_one_step():
    assert not hasattr(trainer_module, "train_step") and not hasattr(trainer_module, "make_loss_fn")


def test_accuracy_parity_trains_through_the_trainers_step(tmp_path, tiny_overrides, one_thread, monkeypatch):
    """Its fast path is ``pretrain`` step for step (the same losses and weights), every step through
    :meth:`Pretrainer.step_on_views`; its reference path only makes the views otherwise."""
    cfg = load_config(None, {**tiny_overrides, "epochs": 2, "warmup_epochs": 1})
    data = load_split("digits", image_size=16).subset(np.arange(160))
    expected = pretrain(cfg, data, tmp_path / "pretrain")
    logged = [json.loads(line)["loss"] for line in (tmp_path / "pretrain" / "metrics.jsonl").read_text().splitlines()]

    steps = []
    step_on_views = Pretrainer.step_on_views

    def counted(self, views, *args, **kwargs):
        steps.append(views.shape[1])
        return step_on_views(self, views, *args, **kwargs)

    monkeypatch.setattr(Pretrainer, "step_on_views", counted)
    out = accuracy_parity.train(cfg, data, None, torch.device("cpu"))
    assert sum(steps) == cfg.epochs * len(data)
    assert out["losses"] == pytest.approx(logged, rel=1e-6)
    state, reference = out["model"].state_dict(), expected.state_dict()
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)

    steps.clear()
    views = accuracy_parity.reference_views_fn(cfg, torch.device("cpu"))
    other = accuracy_parity.train(cfg, data, views, torch.device("cpu"))
    assert sum(steps) == cfg.epochs * len(data) and np.isfinite(other["losses"]).all()
    assert other["views_s"] > 0
