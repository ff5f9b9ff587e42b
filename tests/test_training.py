"""Pretraining: checkpoint round trip, resume equality, schedules, guided runs."""

import json

import numpy as np
import pytest
import torch

from gsimclr.checkpoint import load_checkpoint, read_meta, save_checkpoint
from gsimclr.config import load_config
from gsimclr.data.sources import load_split
from gsimclr.errors import UserError
from gsimclr.training.lars import LARS
from gsimclr.training.optim import lr_multiplier
from gsimclr.training.pretrain import build_model, pretrain


@pytest.fixture
def digits_small():
    data = load_split("digits", image_size=16)
    return data.subset(np.arange(192))


def _states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_round_trip_with_optimizer(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    net(torch.randn(5, 4)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "c.safetensors", net, opt, {"epoch": 7, "config": {"a": 1}})
    net2 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt2 = torch.optim.AdamW(net2.parameters(), lr=0.5)
    meta = load_checkpoint(tmp_path / "c.safetensors", net2, opt2)
    assert meta["epoch"] == 7 and meta["config"] == {"a": 1} and "gsimclr_version" in meta
    assert _states_equal(net, net2)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 0.1
    for idx in s1["state"]:
        for key, value in s1["state"][idx].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(s2["state"][idx][key]))
    assert not list(tmp_path.glob(".*tmp"))                                 # no temporary file left behind


def test_checkpoint_errors(tmp_path):
    net = torch.nn.Linear(2, 2)
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors", net)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        load_checkpoint(bad, net)
    save_checkpoint(tmp_path / "c.safetensors", torch.nn.Linear(3, 3))
    with pytest.raises(UserError, match="does not match"):
        load_checkpoint(tmp_path / "c.safetensors", net)


def test_resume_equals_uninterrupted_run(tmp_path, tiny_overrides, digits_small):
    cfg = load_config(None, {**tiny_overrides, "epochs": 3, "warmup_epochs": 1})
    full = pretrain(cfg, digits_small, tmp_path / "full")
    part = pretrain(cfg, digits_small, tmp_path / "part", stop_after=1)
    assert read_meta(tmp_path / "part" / "checkpoint.safetensors")["epoch"] == 1
    assert not _states_equal(full, part)
    resumed = pretrain(cfg, digits_small, tmp_path / "part", resume=True)
    assert _states_equal(full, resumed)
    full_log = [json.loads(x)["loss"] for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    part_log = [json.loads(x)["loss"] for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert part_log == pytest.approx(full_log)
    assert list((tmp_path / "full" / "tensorboard").iterdir())              # TensorBoard events written


def test_resume_refuses_other_data(tmp_path, tiny_overrides, digits_small):
    cfg = load_config(None, {**tiny_overrides, "epochs": 1})
    pretrain(cfg, digits_small, tmp_path / "run")
    other = load_split("digits", image_size=16).subset(np.arange(100, 292))
    with pytest.raises(UserError, match="other data"):
        pretrain(cfg, other, tmp_path / "run", resume=True)


def test_guided_pretraining_learns(tmp_path, tiny_overrides, digits_small):
    cfg = load_config(None, {**tiny_overrides, "epochs": 4, "sampler": "greedy", "guidance": "mask"})
    pseudo = digits_small.labels                                              # perfect pseudo labels
    model = pretrain(cfg, digits_small, tmp_path / "g", pseudo_labels=pseudo, method="gsimclr")
    records = [json.loads(x) for x in (tmp_path / "g" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 4 and records[-1]["loss"] < records[0]["loss"]
    assert "relaxed_images" in records[0]
    # perfect pseudo labels under masking: no same-class pair is left as a negative
    assert all(r["class_pairs_in_loss"] == 0 < r["class_pairs_per_batch"] for r in records)
    assert all(r["pseudo_pairs_per_batch"] == r["class_pairs_per_batch"] for r in records)
    fresh = build_model(cfg)
    load_checkpoint(tmp_path / "g" / "checkpoint.safetensors", fresh)
    assert _states_equal(model, fresh)


def test_schedules():
    cos = lr_multiplier("cosine", 100, warmup_steps=10)
    assert cos(4) == pytest.approx(0.5) and cos(10) == pytest.approx(1.0) and cos(55) == pytest.approx(0.5)
    sgdr = lr_multiplier("cosine_restarts", 100, restart_steps=10)
    assert sgdr(0) == 1.0 and sgdr(10) == 1.0 and sgdr(30) == 1.0          # periods 10, 20, 40, ...
    assert sgdr(5) == pytest.approx(0.5) and sgdr(20) == pytest.approx(0.5)
    assert lr_multiplier("constant", 10)(7) == 1.0


def test_lars_scales_updates_by_trust_ratio():
    w = torch.nn.Parameter(torch.ones(4, 4))
    b = torch.nn.Parameter(torch.ones(4))
    opt = LARS([w, b], lr=1.0, momentum=0.0, trust_coefficient=0.001)
    w.grad, b.grad = torch.full((4, 4), 100.0), torch.full((4,), 100.0)
    opt.step()
    # weight: step = 0.001 * |w| / |g| * g = 0.001 * 4 / 400 * 100 = 0.001; bias: plain SGD step of 100
    assert torch.allclose(w, torch.full((4, 4), 0.999))
    assert torch.allclose(b, torch.full((4,), -99.0))


def test_max_minutes_stops_with_a_checkpoint(tmp_path, tiny_overrides, digits_small):
    cfg = load_config(None, {**tiny_overrides, "epochs": 3})
    pretrain(cfg, digits_small, tmp_path / "t", max_minutes=1e-6)           # any epoch takes longer than that
    assert read_meta(tmp_path / "t" / "checkpoint.safetensors")["epoch"] == 1
    pretrain(cfg, digits_small, tmp_path / "t", resume=True, max_minutes=60)
    assert read_meta(tmp_path / "t" / "checkpoint.safetensors")["epoch"] == 3


def test_collapse_is_reported(tmp_path, tiny_overrides, digits_small):
    from gsimclr.methods import METHODS

    sizes = [128] * 11 + [29]                                              # the demo's 1437 images
    assert METHODS["simclr"].parts().chance_loss(load_config(None, {}), sizes) == pytest.approx(5.511, abs=1e-3)
    cfg = load_config(None, {**tiny_overrides, "epochs": 4, "lr": 50.0, "optimizer": "sgd"})
    with pytest.warns(UserWarning, match="collapsed"):
        try:
            pretrain(cfg, digits_small, tmp_path / "c")
        except UserError:                                                    # or it diverges outright
            pytest.skip("diverged before collapsing")


def _records(path):
    return [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]


def test_diagnostics_spread_below_simclr_and_references(tmp_path, tiny_overrides, digits_small):
    """SimCLR's shuffled batches against G-SimCLR's spread batches, both scored against the true digits."""
    cfg = load_config(None, {**tiny_overrides, "epochs": 1})
    pseudo = digits_small.labels
    pretrain(cfg, digits_small, tmp_path / "s", pseudo_labels=pseudo, method="simclr")
    pretrain(cfg, digits_small, tmp_path / "g", pseudo_labels=pseudo, method="gsimclr")
    simclr, gsimclr = _records(tmp_path / "s")[0], _records(tmp_path / "g")[0]
    assert simclr["class_pairs_floor"] <= gsimclr["class_pairs_per_batch"] < simclr["class_pairs_per_batch"]
    assert gsimclr["class_pairs_per_batch"] == pytest.approx(gsimclr["class_pairs_floor"])    # spread reaches it
    assert simclr["pseudo_pairs_per_batch"] == simclr["class_pairs_per_batch"] == simclr["class_pairs_in_loss"]
    assert simclr["class_pairs_random"] == gsimclr["class_pairs_random"]


def test_encoder_pseudo_labels_recluster_and_resume(tmp_path, tiny_overrides, digits_small):
    """--pseudo-labels encoder: SimCLR for the warm-up, then labels from the encoder every epoch (with
    attraction in the loss); a run cut in two resumes to the same model."""
    cfg = load_config(None, {**tiny_overrides, "epochs": 3, "pseudo_labels": "encoder", "recluster_warmup": 1,
                             "recluster_every": 1, "k": 20, "guidance": "attract"})
    full = pretrain(cfg, digits_small, tmp_path / "full", method="gsimclr")
    records = _records(tmp_path / "full")
    assert "pseudo_pairs_per_batch" not in records[0] and "pseudo_pairs_per_batch" in records[1]
    assert [r.get("reclustered", 0) for r in records] == [1, 1, 0]        # after epochs 1 and 2, not after the last
    assert all(0 <= r["pseudo_nmi"] <= 1 for r in records[:2])
    assert records[1]["class_pairs_in_loss"] < records[1]["class_pairs_per_batch"]   # attraction removes some
    saved = json.loads((tmp_path / "full" / "pseudo_labels.json").read_text())
    assert saved["epoch"] == 2 and saved["k"] == 20 and saved["source"] == "encoder"
    pretrain(cfg, digits_small, tmp_path / "part", method="gsimclr", stop_after=2)
    resumed = pretrain(cfg, digits_small, tmp_path / "part", method="gsimclr", resume=True)
    assert _states_equal(full, resumed)
    assert [r["loss"] for r in _records(tmp_path / "part")] == pytest.approx([r["loss"] for r in records])


def test_schedule_counts_the_steps_each_epoch_really_has(tmp_path, tiny_overrides, digits_small, monkeypatch):
    """--pseudo-labels encoder: the warm-up's random batches (6 a epoch), then greedy --sampler-tail
    drop (fewer). Every step's learning rate is the schedule at its place in its own epoch, so the
    cosine still ends with the last epoch (it was sized by the warm-up's epochs and stopped short)."""
    from gsimclr.training import pretrain as pretrain_module

    lrs, sizes = [], []
    step = pretrain_module.Pretrainer.step
    train_epoch = pretrain_module.Pretrainer.train_epoch

    def recording_step(self, *args, **kwargs):
        lrs[-1].append(self.optimizer.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    def recording_epoch(self, epoch):
        lrs.append([])
        record = train_epoch(self, epoch)
        sizes.append(len(lrs[-1]))
        return record

    monkeypatch.setattr(pretrain_module.Pretrainer, "step", recording_step)
    monkeypatch.setattr(pretrain_module.Pretrainer, "train_epoch", recording_epoch)
    cfg = load_config(None, {**tiny_overrides, "epochs": 3, "batch_size": 32, "pseudo_labels": "encoder",
                             "recluster_warmup": 1, "k": 40, "sampler": "greedy", "sampler_tail": "drop",
                             "warmup_epochs": 1})
    pretrain(cfg, digits_small, tmp_path / "g", method="gsimclr")
    per_epoch = len(digits_small) // 32
    assert sizes[0] == per_epoch and min(sizes[1:]) < per_epoch             # the greedy epochs are shorter
    f = lr_multiplier("cosine", 3 * per_epoch, per_epoch)
    expected = [[cfg.lr * f(e * per_epoch + i * per_epoch / n) for i in range(n)] for e, n in enumerate(sizes)]
    assert lrs == [pytest.approx(x) for x in expected]
    assert lrs[-1][-1] < cfg.lr * f(3 * per_epoch - 2)                     # within a step of the end


def test_the_compiled_paths_trace_whole_without_pytorch_at_module_level():
    """The view forwards and the recipes' view stacking import PyTorch inside the function (their modules
    stay light for the command line's checks); torch.compile still traces each as one graph (fullgraph:
    a graph break raises), so the GPU's compiled step and augmentation are unchanged."""
    from gsimclr.methods.views import VIEW_FORWARDS
    from gsimclr.transforms.augment import build_augment

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    views = torch.randn(2, 4, 3, 8, 8)
    for name, forward in VIEW_FORWARDS.items():
        traced = torch.compile(lambda v, f=forward: f(net, v), backend="eager", fullgraph=True)
        assert torch.allclose(traced(views), forward(net, views), atol=1e-6), name
    recipe = build_augment("simclr", 8)
    images, crops = torch.zeros(4, 10, 10, 3, dtype=torch.uint8), torch.zeros(2, 4, 8, 8, 3, dtype=torch.uint8)
    assert torch.compile(lambda b: recipe.views(b, 2), backend="eager", fullgraph=True)(images).shape == (2, 4, 3, 8, 8)
    assert torch.compile(lambda c: recipe.views_from_crops(c, 2), backend="eager",
                         fullgraph=True)(crops).shape == (2, 4, 3, 8, 8)


# ------------------------------------------------------------------ --views bounded by the memory it needs


def test_views_beyond_any_memory_are_refused_in_one_line_before_pytorch(tmp_path):
    """Issue 26: `--views 10000000` (terabytes of views at digits-quick's size) is one line, exit 2, before
    PyTorch is imported, and the run folder is not made; `--views 100000` (which grew past 2 GB for minutes)
    is refused before any training on any machine (by the views alone, or with the network's activations)."""
    import subprocess
    import sys

    code = ("import sys, json; from gsimclr.cli import main; "
            "rc = main(['pretrain', '--preset', 'digits-quick', '--views', sys.argv[1], '--device', 'cpu', "
            "'--out', sys.argv[2]]); print(json.dumps([rc, 'torch' in sys.modules]))")
    for views, torch_free in (("10000000", True), ("100000", None)):
        out = tmp_path / f"run{views}"
        done = subprocess.run([sys.executable, "-c", code, views, str(out)], capture_output=True, text=True,
                              timeout=600)
        rc, imported = json.loads(done.stdout.strip().splitlines()[-1])
        err = done.stderr.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and err.startswith(f"gsimclr: error: --views {views} with "
                                                                         "--batch-size 128 at --image-size 16"), err
        assert "GB of memory" in err and not out.exists()
        if torch_free:
            assert not imported and "give fewer --views" in err


def test_views_and_activations_beyond_the_memory_are_refused_before_training(tmp_path, monkeypatch):
    """The trainer adds the network's activations per view (counted on one image) to the bound, and names
    the most views that fit."""
    from gsimclr.methods import views as views_module
    from gsimclr.methods.views import activation_values

    cfg = load_config(None, {"data": "digits", "image_size": 8, "n_blocks": 0, "head_dims": [16, 8], "epochs": 1,
                             "batch_size": 16, "device": "cpu", "compile": "off", "tsne_points": 0})
    acts = activation_values(build_model(cfg), 8, torch.device("cpu"))
    assert acts > 10 * 3 * 8 * 8                               # the network keeps far more than its input
    per_view = 16 * (3 * 8 * 8 + acts) * 4
    monkeypatch.setattr(views_module, "machine_memory", lambda: 40 * per_view)
    data = load_split("digits", image_size=8).subset(np.arange(64))
    big = load_config(None, {**cfg.to_dict(), "views": 41})   # the views alone fit, with activations they do not
    assert 41 * 16 * 3 * 8 * 8 * 4 < 40 * per_view
    with pytest.raises(UserError, match="--views 41 with --batch-size 16 at --image-size 8: one step would need at "
                       "least .* for its augmented views and the network's activations for them, more than this "
                       "machine's .* give --views 40 or less"):
        pretrain(big, data, tmp_path / "big")
    assert not (tmp_path / "big" / "metrics.jsonl").exists()
    pretrain(load_config(None, {**cfg.to_dict(), "views": 3}), data, tmp_path / "ok")
