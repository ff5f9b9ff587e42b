"""A stage cut by a kill continues where it was, to the uncut result: pretraining from a checkpoint taken
within an epoch (``--checkpoint-minutes``), the autoencoder after its last epoch, an evaluation stage after its
last finished evaluation."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from gsimclr.checkpoint import read_meta
from gsimclr.config import load_config
from gsimclr.data.sources import load_split
from gsimclr.tracking import read_metrics
from gsimclr.training import pretrain as pretrain_module
from gsimclr.training.pretrain import pretrain

EPOCHS = 2


def _setup(**extra):
    data = load_split("digits", image_size=8).subset(np.arange(128))
    cfg = load_config(None, {"data": "digits", "image_size": 8, "n_blocks": 0, "head_dims": [16, 8], "optimizer": "sgd",
                             "momentum": 0.9, "lr": 0.05, "epochs": EPOCHS, "batch_size": 16, "warmup_epochs": 1,
                             "device": "cpu", "compile": "off", "tsne_points": 0, "checkpoint_minutes": 0.5, **extra})
    pseudo = np.random.default_rng(0).integers(0, 8, len(data))
    return cfg, data, pseudo


class FakeClock:
    """time.perf_counter advancing one second per call: a deadline falls on a step chosen by the test."""

    def __init__(self):
        self.now = itertools.count()

    def __call__(self):
        return float(next(self.now))


def _train(tmp: Path, method: str, minutes: list[float], monkeypatch, **extra):
    cfg, data, pseudo = _setup(**extra)
    out = tmp / method
    clock = FakeClock()
    monkeypatch.setattr(pretrain_module.time, "perf_counter", clock)
    positions = []
    model = None
    for i, m in enumerate(minutes + [None]):
        # each call reads the same images from files with another place or time (another fingerprint)
        moved = dataclasses.replace(data, fingerprint=f"{data.fingerprint}:call-{i}")
        model = pretrain(cfg, moved, out, pseudo, resume=i > 0, method=method, max_minutes=m)
        meta = read_meta(out / "checkpoint.safetensors")
        positions.append((int(meta["epoch"]), (meta.get("partial") or {}).get("steps")))
        if positions[-1] == (EPOCHS, None):
            break
    return model.state_dict(), read_metrics(out / "metrics.jsonl"), positions


@pytest.mark.parametrize("method", ["simclr", "gsimclr"])
def test_a_run_stopped_within_epochs_resumes_to_the_uncut_result(tmp_path, monkeypatch, method, one_thread):
    ref_w, ref_metrics, _ = _train(tmp_path / "uncut", method, [], monkeypatch)
    # stops on time after a few steps, several times, most of them within an epoch (8 steps per epoch)
    weights, metrics, positions = _train(tmp_path / "cut", method, [0.05, 0.07, 0.12, 0.05], monkeypatch)
    assert any(steps for _, steps in positions[:-1]), positions       # at least one stop within an epoch
    assert positions[-1] == (EPOCHS, None)
    assert all(torch.equal(weights[k], ref_w[k]) for k in ref_w)
    keys = ("epoch", "loss", "lr")
    assert [{k: r[k] for k in keys} for r in metrics] == [{k: r[k] for k in keys} for r in ref_metrics]
    # the diagnostics of an epoch cut in the middle cover all of its batches
    stats = [k for k in ref_metrics[0] if "pairs" in k]
    assert stats and all(metrics[i][k] == ref_metrics[i][k] for i in range(EPOCHS) for k in stats)


def test_checkpoints_within_an_epoch_are_taken_every_few_minutes(tmp_path, monkeypatch, one_thread):
    """With the fake clock (1 s per call) and --checkpoint-minutes 0.1, a checkpoint within the first epoch
    exists while it trains: the position saved there is one a later --resume continues from."""
    cfg, data, pseudo = _setup(checkpoint_minutes=0.1)
    clock = FakeClock()
    monkeypatch.setattr(pretrain_module.time, "perf_counter", clock)
    saved = []
    real_save = pretrain_module.Pretrainer.save

    def spy(self, epoch, partial=None):
        saved.append((epoch, None if partial is None else partial["steps"]))
        return real_save(self, epoch, partial)

    monkeypatch.setattr(pretrain_module.Pretrainer, "save", spy)
    pretrain(cfg, data, tmp_path / "run", pseudo, method="simclr")
    assert [s for s in saved if s[1] is not None], saved
    assert saved[-1] == (EPOCHS, None)


class Killed(Exception):
    pass


def test_an_autoencoder_killed_between_epochs_continues_to_the_uncut_result(tmp_path, monkeypatch, one_thread):
    """The pseudo-label stage's autoencoder saves its progress after every epoch: a kill loses at most one
    epoch, and the continued training ends with the uncut run's weights and log."""
    from gsimclr.guidance import autoencoder as ae_module
    from gsimclr.guidance.autoencoder import PROGRESS, AutoencoderOptions, train_autoencoder

    data = load_split("digits", image_size=16).subset(np.arange(96))
    opts = AutoencoderOptions(epochs=5, batch_size=16, image_size=16, patience=10)
    ref = train_autoencoder(data, opts, tmp_path / "uncut")
    real = ae_module._reconstruction_loss
    calls = {"n": 0}

    def dies_in_epoch_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(ae_module, "_reconstruction_loss", dies_in_epoch_3)
    with pytest.raises(Killed):
        train_autoencoder(data, opts, tmp_path / "cut")
    assert (tmp_path / "cut" / PROGRESS).is_file()
    counted = []

    def counting(*args, **kwargs):
        counted.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ae_module, "_reconstruction_loss", counting)
    # the same images from files moved or mounted anew (another fingerprint): continued, not started over
    resumed = train_autoencoder(dataclasses.replace(data, fingerprint="moved"), opts, tmp_path / "cut")
    assert len(counted) == 3   # epochs 3, 4 and 5 only
    monkeypatch.setattr(ae_module, "_reconstruction_loss", real)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), resumed.state_dict().values()))
    def losses(path):
        return [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(path / "metrics.jsonl")]
    assert losses(tmp_path / "cut") == losses(tmp_path / "uncut")
    assert not (tmp_path / "cut" / PROGRESS).exists()   # removed once the stage is done
    # other options: the progress file is not continued
    with pytest.raises(Killed):
        monkeypatch.setattr(ae_module, "_reconstruction_loss", dies_in_epoch_3)
        calls["n"] = 0
        train_autoencoder(data, opts, tmp_path / "other")
    monkeypatch.setattr(ae_module, "_reconstruction_loss", real)
    other = AutoencoderOptions(epochs=5, batch_size=16, image_size=16, patience=10, lr=2e-3)
    train_autoencoder(data, other, tmp_path / "other")
    assert [r["epoch"] for r in read_metrics(tmp_path / "other" / "metrics.jsonl")] == [1, 2, 3, 4, 5]


def test_an_evaluation_stage_cut_between_evaluations_continues_with_the_next(tmp_path, monkeypatch, one_thread):
    from gsimclr import pipeline
    from gsimclr.evaluation import EVALUATIONS
    from gsimclr.models.simclr import SimCLRModel  # noqa: F401  (the model the pipeline builds)
    from gsimclr.training.pretrain import build_model

    cfg, data, _ = _setup(linear_epochs=2, finetune_epochs=1, knn_k=5, label_fraction=0.5)
    train, test = data.subset(np.arange(96)), data.subset(np.arange(96, 128))
    names = ["linear", "knn", "finetune"]
    torch.manual_seed(0)
    model = build_model(cfg)
    uncut = pipeline.evaluate_encoder(cfg, model, train, test, which=tuple(names))
    kept = (tmp_path / "eval.progress.json", "key-1")
    calls, kill = [], {"finetune": True}
    real_get = EVALUATIONS.get

    def counting(name):
        import dataclasses

        ev = real_get(name)

        def run(ctx):
            calls.append(name)
            if kill.pop(name, False):
                raise Killed
            return ev(ctx)
        return dataclasses.replace(ev, run=run)

    monkeypatch.setattr(pipeline.EVALUATIONS, "get", counting)
    with pytest.raises(Killed):
        pipeline.evaluate_encoder(cfg, model, train, test, which=tuple(names), progress=kept)
    resumed = pipeline.evaluate_encoder(cfg, model, train, test, which=tuple(names), progress=kept)
    assert calls == ["linear", "knn", "finetune", "finetune"]   # linear and kNN were not run again
    assert resumed == uncut
    # another key (another checkpoint or options): nothing is reused
    calls.clear()
    pipeline.evaluate_encoder(cfg, model, train, test, which=tuple(names), progress=(kept[0], "key-2"))
    assert calls == names


def test_fits_cut_in_an_epoch_continue_to_the_uncut_result_and_finished_ones_are_not_trained_again(tmp_path):
    """Inside ``resumable`` every fit keeps its progress after each epoch: a stage of two fits (a head,
    then every layer with early stopping, as the notebooks' fine-tune) killed in the second one's third
    epoch continues there, the first one restored as it ended, to the uncut weights and summaries."""
    from gsimclr.evaluation.early_stopping import EarlyStopping
    from gsimclr.evaluation.fit import FitOptions, fit, resumable
    from gsimclr.evaluation.images import TensorBatches

    torch.manual_seed(0)
    x, y = torch.randn(96, 6), torch.randint(0, 3, (96,))
    steps = {"n": 0, "kill_at": None}

    def stage():
        torch.manual_seed(1)
        net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

        def loss(batch):
            steps["n"] += 1
            if steps["n"] == steps["kill_at"]:
                raise Killed
            return torch.nn.functional.cross_entropy(net(batch[0]), batch[1])
        first = fit(net, TensorBatches(x, y), loss, FitOptions(epochs=3, lr=0.01, batch_size=16), params=net[2].parameters())
        noise = torch.randn(3)   # the global stream between the two fits
        second = fit(net, TensorBatches(x, y), loss, FitOptions(epochs=6, lr=0.02, batch_size=16, shuffle="numpy"),
                     validate=lambda: float(torch.nn.functional.cross_entropy(net(x), y).detach()),
                     early_stopping=EarlyStopping(patience=10, restore="best"))
        return net.state_dict(), first, second, noise

    uncut = stage()
    per_fit = 3 * 6      # steps of the first fit (96 / 16 = 6 per epoch)
    steps.update(n=0, kill_at=per_fit + 2 * 6 + 3)   # the second fit's third epoch
    folder = tmp_path / "progress"
    with pytest.raises(Killed):
        with resumable(folder, "key-1"):
            stage()
    assert sorted(p.name for p in folder.iterdir()) == ["fit-0.progress.pt", "fit-1.progress.pt"]
    steps.update(n=0, kill_at=None)
    with resumable(folder, "key-1"):
        resumed = stage()
    assert steps["n"] == 4 * 6          # only the second fit's epochs 3-6 ran again
    assert all(torch.equal(a, b) for a, b in zip(uncut[0].values(), resumed[0].values()))
    assert resumed[1:3] == uncut[1:3] and torch.equal(resumed[3], uncut[3])
    assert not folder.exists()          # removed once the stage ended
    # progress made under another key is not continued
    steps.update(n=0, kill_at=per_fit + 3)
    with pytest.raises(Killed):
        with resumable(folder, "key-1"):
            stage()
    steps.update(n=0, kill_at=None)
    with resumable(folder, "key-2"):
        stage()
    assert steps["n"] == per_fit + 6 * 6


def test_the_supervised_baseline_cut_in_an_epoch_continues_to_the_uncut_result(tmp_path, monkeypatch, one_thread):
    """The paper's supervised baseline (the notebooks' protocol, early stopping on the test loss) keeps its
    progress after each epoch inside ``gsimclr run``: killed in its third epoch it continues there."""
    from gsimclr import pipeline
    from gsimclr.evaluation import fit as fit_module

    cfg, data, _ = _setup(eval_protocol="notebook", supervised_epochs=4, supervised_n_blocks=0, defaults="keras",
                          es_patience=10)
    train, test = data.subset(np.arange(96)), data.subset(np.arange(96, 128))
    uncut = pipeline.stage_supervised(cfg, train, test)
    real = fit_module.backward_step
    calls = {"n": 0}

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * 6 + 2:      # 96 images in batches of 16: the third epoch
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "backward_step", dies)
    with pytest.raises(Killed):
        with fit_module.resumable(tmp_path / "p", "k"):
            pipeline.stage_supervised(cfg, train, test)
    assert (tmp_path / "p" / "fit-0.progress.pt").is_file()
    calls["n"] = -10**9    # counts, never kills

    with fit_module.resumable(tmp_path / "p", "k"):
        resumed = pipeline.stage_supervised(cfg, train, test)
    assert calls["n"] == -10**9 + 2 * 6   # epochs 3 and 4 only
    assert resumed == uncut
