"""The paper presets against the notebooks, row by row of the README table "Faithful to the notebooks, and
where we differ": a change to one of the four presets fails here (and must change that table too)."""

import json
import os
from pathlib import Path

import pytest
import yaml

from gsimclr.cli import main, show_preset
from gsimclr.config import Config, load_config, preset_requirements

# ../shared/data beside the repository (GSIMCLR_SHARED_DATA points elsewhere, e.g. from a git worktree)
SHARED = Path(os.environ.get("GSIMCLR_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))

# Each README row, as the options that carry it, for the notebooks' CIFAR-10 recipe (paper-cifar10).
CIFAR_ROWS = {
    "optimizer": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0},
    "schedule": {"schedule": "cosine_restarts", "restart_steps": 1000, "restart_t_mul": 2.0, "restart_m_mul": 1.0,
                 "warmup_epochs": 0.0, "epochs": 15},
    "batches": {"batch_size": 64, "drop_last": True},
    "simclr batch order": {"shuffle_buffer": 1024, "reshuffle": False},
    "g-simclr batch order": {"guidance": "none", "sampler": "paper"},
    "augmentation": {"augment": "notebook", "jitter_strength": 0.2, "jitter_p": 0.5, "gray_p": 0.5,
                     "color_drop": "identity"},
    "augmentation draws": {"augment_draw": "batch"},
    "network input": {"data": "cifar10", "image_size": 32, "normalize": "none"},
    "views through batchnorm": {"views_forward": "separate"},
    "backbone": {"model": "paper_resnet", "n_blocks": 3, "shortcut_bn": False},
    "framework defaults": {"defaults": "keras"},
    "head and loss": {"head_dims": [256, 128, 50], "head_batch_norm": False, "temperature": 0.1},
    "precision": {"precision": "fp32"},
    "autoencoder": {"ae_model": "shallow", "ae_decoder": "upsample_first", "ae_lr": 0.001, "ae_batch_size": 64,
                    "ae_epochs": 100, "ae_patience": 2, "ae_min_delta": 0.0, "ae_shuffle": False,
                    "ae_drop_last": True, "ae_noise": 0.01},
    "autoencoder selection": {"ae_select": "test"},
    "k-means": {"k": 64, "kmeans_n_init": 10},
    "evaluation protocol": {"eval_protocol": "notebook", "es_patience": 2},
    "model selection": {"select_on": "test", "es_restore": "on_stop"},
    "linear probes": {"linear_lr": 0.001, "linear_epochs": 100, "linear_batch_size": 64},
    "fine-tuning labels": {"label_fraction": 0.1, "label_sampling": "uniform"},
    "fine-tuning": {"finetune_head_lr": 0.001, "finetune_head_epochs": 35, "finetune_lr": 1e-5,
                    "finetune_epochs": 35, "finetune_bn": "frozen"},
    "supervised baseline": {"supervised_model": "paper_resnet", "supervised_n_blocks": 1, "supervised_head": "bn_relu",
                            "supervised_epochs": 75, "supervised_lr": 0.001, "supervised_bn_eval": "running"},
    "knn": {"knn_k": 200},
}

IMAGENET_ROWS = {
    **CIFAR_ROWS,
    "schedule": {"schedule": "cosine", "decay_steps": 1000, "warmup_epochs": 0.0, "epochs": 200},
    "simclr batch order": {"shuffle_buffer": 1024, "reshuffle": True},
    "augmentation": {"augment": "notebook", "jitter_strength": 1.0, "jitter_p": 0.8, "gray_p": 0.2,
                     "color_drop": "grayscale"},
    "network input": {"image_size": 224, "cache_size": 224, "resize": "stretch", "normalize": "none"},
    "backbone": {"model": "resnet50", "downsample_in_1x1": True},
    "autoencoder": {"ae_model": "deep", "ae_decoder": "upsample_first", "ae_lr": 0.0001, "ae_batch_size": 64,
                    "ae_epochs": 100, "ae_patience": 5, "ae_min_delta": 0.0, "ae_shuffle": False,
                    "ae_drop_last": True, "ae_noise": 0.01},
    "linear probes": {"linear_lr": 0.001, "linear_epochs": 100, "linear_epochs_p2": 35, "linear_epochs_p3": 35,
                      "linear_batch_size": 64},
    "fine-tuning labels": {"label_fraction": 0.1, "label_sampling": "uniform_replace"},
    "supervised baseline": {"supervised_head": "linear", "supervised_epochs": 200, "supervised_lr": 0.001,
                            "supervised_bn_eval": "batch"},
    "knn": {"knn_k": 20},
}

# The clean presets: the paper preset with exactly these quirks fixed.
CLEAN_FIXES = {
    "simclr batch order": {"shuffle_buffer": 0, "reshuffle": True},
    "augmentation draws": {"augment_draw": "image"},
    "views through batchnorm": {"views_forward": "joint"},
    "autoencoder selection": {"ae_select": "holdout"},
    "model selection": {"select_on": "holdout", "es_restore": "best"},
}
CIFAR_CLEAN = {**CLEAN_FIXES, "augmentation": {**CIFAR_ROWS["augmentation"], "color_drop": "grayscale"}}
IMAGENET_CLEAN = {**CLEAN_FIXES, "fine-tuning labels": {"label_fraction": 0.1, "label_sampling": "uniform"},
                  "supervised baseline": {**IMAGENET_ROWS["supervised baseline"], "supervised_bn_eval": "running"}}


def _rows(name):
    return {"paper-cifar10": CIFAR_ROWS, "paper-imagenet5": IMAGENET_ROWS,
            "paper-cifar10-clean": {**CIFAR_ROWS, **CIFAR_CLEAN},
            "paper-imagenet5-clean": {**IMAGENET_ROWS, **IMAGENET_CLEAN}}[name]


PRESETS = ["paper-cifar10", "paper-cifar10-clean", "paper-imagenet5", "paper-imagenet5-clean"]


def _load(preset):
    """The preset's configuration (a placeholder for the data an ImageNet preset requires)."""
    return load_config(preset, {k: "given" for k in preset_requirements(preset)})
CASES = [(p, row) for p in PRESETS for row in _rows(p)]


@pytest.mark.parametrize("preset,row", CASES, ids=[f"{p}:{r}" for p, r in CASES])
def test_each_row(preset, row):
    cfg = _load(preset).to_dict()
    assert {k: cfg[k] for k in _rows(preset)[row]} == _rows(preset)[row]


@pytest.mark.parametrize("preset", PRESETS)
def test_nothing_else_differs_from_the_defaults(preset):
    """Every option a preset sets is in some row: an unpinned change fails here."""
    expected = Config().to_dict()
    for values in _rows(preset).values():
        expected.update(values)
    if preset_requirements(preset):
        expected["data"] = "given"
    assert _load(preset).to_dict() == expected


@pytest.mark.parametrize("paper,clean", [("paper-cifar10", "paper-cifar10-clean"),
                                         ("paper-imagenet5", "paper-imagenet5-clean")])
def test_clean_presets_change_only_quirks(paper, clean):
    a, b = _load(paper).to_dict(), _load(clean).to_dict()
    changed = {k for k in a if a[k] != b[k]}
    quirks = {"shuffle_buffer", "reshuffle", "augment_draw", "views_forward", "ae_select", "select_on", "es_restore",
              "color_drop", "label_sampling", "supervised_bn_eval"}
    assert changed <= quirks and {"augment_draw", "views_forward", "select_on", "ae_select"} <= changed


def test_show_prints_the_resolved_preset_and_reads_back(tmp_path, capsys):
    assert main(["presets", "--show", "paper-cifar10"]) == 0
    out = capsys.readouterr().out
    shown = yaml.safe_load(out)
    assert shown == load_config("paper-cifar10").to_dict() and len(shown) == len(Config().to_dict())
    assert shown["momentum"] == 0.0 and shown["restart_steps"] == 1000 and shown["restart_t_mul"] == 2.0
    assert shown["schedule"] == "cosine_restarts" and shown["eval_protocol"] == "notebook"
    image = yaml.safe_load(show_preset("paper-imagenet5"))
    assert (image["jitter_strength"], image["jitter_p"], image["gray_p"]) == (1.0, 0.8, 0.2)
    assert (image["epochs"], image["schedule"], image["decay_steps"]) == (200, "cosine", 1000)
    assert "data" in image["requires"] and "data" not in image
    path = tmp_path / "p.yaml"
    path.write_text(out)
    assert load_config(str(path)).to_dict() == shown
    assert main(["presets", "--show", "no-such-preset"]) == 2


def test_imagenet_presets_require_data():
    for name in ("paper-imagenet5", "paper-imagenet5-clean"):
        assert "imagenet-5-categories" in preset_requirements(name)["data"]
    assert "data" not in preset_requirements("paper-cifar10")


def test_our_presets_keep_gsimclr_protocols():
    for name in ("digits-quick", "cifar10-resnet18", "imagenet5-resnet18"):
        cfg = _load(name)
        assert cfg.eval_protocol == "gsimclr" and cfg.defaults == "torch" and cfg.views_forward == "joint"


SHORT = ["--train-limit", "128", "--test-limit", "64", "--knn-k", "20", "--epochs", "1", "--ae-epochs", "1", "--linear-epochs", "1",
         "--linear-epochs-p2", "1", "--linear-epochs-p3", "1", "--finetune-head-epochs", "1", "--finetune-epochs", "1",
         "--supervised-epochs", "1", "--tsne-points", "0", "--device", "cpu", "--precision", "fp32"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_shortened_cpu_run(preset, tmp_path, capsys):
    """Each preset end to end, shortened by flags (32 px for the ImageNet ones, to keep it short)."""
    data = SHARED / ("cifar10" if "cifar10" in preset else "imagenet5")
    if not data.is_dir():
        pytest.skip("shared data not present")
    extra = ["--image-size", "32", "--cache-size", "32"] if "imagenet5" in preset else []
    out = tmp_path / "run"
    assert main(["run", "--preset", preset, "--data", str(data), "--out", str(out), *SHORT, *extra]) == 0
    results = json.loads((out / "results.json").read_text())
    for method in ("simclr", "gsimclr"):
        ev = results["methods"][method]
        assert set(ev["linear_notebook"]) == {"P1", "P2", "P3"} and "finetune_notebook" in ev and "linear" not in ev
        assert ev["linear_notebook"]["P1"]["selected_on"] == ("test" if "clean" not in preset else "holdout")
    sup = json.loads((out / "supervised.json").read_text())
    assert sup["protocol"] == "notebook" and sup["epochs_run"] == 1
    assert "Linear P1 (notebook protocol)" in (out / "results.md").read_text()
