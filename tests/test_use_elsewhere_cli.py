"""The command line of issue 11: export, timm backbones, --init, --precision, the standard linear
protocol, W&B tracking, presets that need --data."""

import json
import subprocess
import sys

import pytest
import torch
import torchvision

from gsimclr.checkpoint import read_meta
from gsimclr.cli import main
from gsimclr.config import load_config
from gsimclr.data.sources import load_split
from gsimclr.errors import UserError
from gsimclr.training.pretrain import build_pretrainer

SMALL = ["--data", "digits", "--image-size", "16", "--train-limit", "128", "--test-limit", "64", "--epochs", "1",
         "--batch-size", "32", "--device", "cpu", "--optimizer", "adam", "--lr", "1e-3", "--tsne-points", "0"]


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_presets_point_at_data_a_user_has(capsys):
    for preset in ("cifar10-resnet18", "paper-cifar10"):
        code, out, _ = _run(["presets", "--show", preset], capsys)
        assert code == 0 and "../shared" not in out and "\ndata: cifar10\n" in out
    for preset in ("imagenet5-resnet18", "paper-imagenet5"):
        code, out, _ = _run(["presets", "--show", preset], capsys)
        assert code == 0 and "../shared" not in out
        code, _, err = _run(["pretrain", "--preset", preset, "--epochs", "1"], capsys)
        assert code == 2 and err.count("\n") == 1 and "this preset needs --data" in err
        assert load_config(preset, {"data": "some/folder"}).data == "some/folder"
    assert _run(["presets", "--show", "nope"], capsys)[0] == 2


def test_timm_vit_trains_an_epoch_on_digits_and_exports(tmp_path, capsys):
    pytest.importorskip("timm")
    out = tmp_path / "run"
    code, _, err = _run(["pretrain", *SMALL, "--model", "timm:vit_tiny_patch16_224", "--patch-size", "4",
                         "--head-dims", "64,16", "--out", str(out)], capsys)
    assert code == 0, err
    meta = read_meta(out / "simclr" / "checkpoint.safetensors")
    assert meta["epoch"] == 1 and meta["config"]["model"] == "timm:vit_tiny_patch16_224"
    code, printed, err = _run(["export", str(out), "--format", "state_dict", "--output", str(tmp_path / "e")], capsys)
    assert code == 0, err
    assert "timm vit_tiny_patch16_224" in printed
    summary = json.loads((tmp_path / "e" / "export.json").read_text())
    assert summary["target"]["kwargs"] == {"num_classes": 0, "img_size": 16, "patch_size": 4}
    import timm

    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, **summary["target"]["kwargs"])
    net.load_state_dict(torch.load(tmp_path / "e" / "backbone.pth", weights_only=True), strict=True)
    assert _run(["pretrain", *SMALL, "--model", "timm:not_a_model", "--out", str(tmp_path / "x")], capsys)[0] == 2
    assert not (tmp_path / "x").exists()  # refused before any work


def test_init_starts_from_torchvision_weights(tmp_path, capsys):
    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    cfg = load_config(None, {"data": "digits", "image_size": 16, "model": "resnet18", "head_dims": [32, 8],
                             "init": str(tmp_path / "tv.pth"), "device": "cpu", "batch_size": 32, "epochs": 1})
    trainer = build_pretrainer(cfg, load_split("digits", image_size=16), tmp_path / "p", torch.device("cpu"))
    assert torch.equal(trainer.model.backbone.net.layer3[0].conv1.weight, tv.layer3[0].conv1.weight)
    assert trainer.init_report["dropped"] == ["fc.bias", "fc.weight"]
    code, _, err = _run(["pretrain", *SMALL, "--model", "resnet50", "--init", str(tmp_path / "tv.pth"),
                         "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and err.count("\n") == 1 and "do not fit the backbone" in err
    code, _, err = _run(["pretrain", *SMALL, "--init", str(tmp_path / "nothing.pth"), "--out", str(tmp_path / "n")],
                        capsys)
    assert code == 2 and "--init: no such weights file" in err


def test_fp16_on_the_cpu_is_refused_before_work(tmp_path, capsys):
    code, _, err = _run(["pretrain", *SMALL, "--precision", "fp16", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "fp16 needs a CUDA GPU" in err and not (tmp_path / "r").exists()
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        load_config(None, {"precision": "fp16", "device": "cpu"})


def test_both_linear_protocols_in_the_table(tmp_path, capsys):
    out = tmp_path / "run"
    code, printed, err = _run(["run", *SMALL, "--model", "paper_resnet", "--n-blocks", "0", "--head-dims", "32,16,8",
                               "--methods", "simclr", "--linear-protocol", "both", "--linear-epochs", "2",
                               "--standard-epochs", "1", "--finetune-head-epochs", "1", "--finetune-epochs", "1",
                               "--supervised-epochs", "1", "--knn-k", "10", "--out", str(out)], capsys)
    assert code == 0, err
    table = (out / "results.md").read_text()
    assert "| Linear P1 (ours) |" in table and "| Linear P3 (standard) |" in table
    standard = json.loads((out / "simclr" / "eval.json").read_text())["linear_standard"]
    assert standard["protocol"] == "standard" and 0 <= standard["top1"] <= 100
    # the subcommand runs it on its own, with a label fraction drawn uniformly
    code, printed, err = _run(["linear-standard", "--out", str(out), "--standard-epochs", "1",
                               "--standard-label-fraction", "0.5", "--label-sampling", "uniform"], capsys)
    assert code == 0, err
    result = json.loads((out / "simclr" / "linear_standard.json").read_text())["linear_standard"]
    assert result["sampling"] == "uniform" and result["train_images"] == 64  # half of the 128 training images


def test_wandb_offline_through_pretrain(tmp_path, capsys, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    code, _, err = _run(["pretrain", *SMALL, "--model", "paper_resnet", "--n-blocks", "0", "--head-dims", "32,8",
                         "--wandb", "--wandb-project", "tests", "--out", str(out)], capsys)
    assert code == 0, err
    assert list((out / "simclr" / "wandb").glob("offline-run-*/run-*.wandb"))


def test_export_command_errors(tmp_path, capsys):
    code, _, err = _run(["export", str(tmp_path)], capsys)
    assert code == 2 and "no checkpoint" in err
    code, _, err = _run(["export"], capsys)
    assert code == 2 and err.count("\n") == 1


def test_module_entry_point_shows_presets():
    out = subprocess.run([sys.executable, "-m", "gsimclr", "presets", "--show", "cifar10-resnet18"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "../shared" not in out.stdout and "resnet18_cifar" in out.stdout


def test_gradient_scaler_is_checkpointed_and_resumed(tmp_path, monkeypatch):
    """The fp16 path's wiring, with an enabled scaler standing in for CUDA's (CPU has no fp16 runs)."""
    from gsimclr.training import pretrain as pretrain_module

    made = []

    def enabled_scaler(device, precision):
        made.append(torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=1))
        return made[-1]

    monkeypatch.setattr(pretrain_module, "grad_scaler", enabled_scaler)
    cfg = load_config(None, {"data": "digits", "image_size": 16, "model": "paper_resnet", "n_blocks": 0,
                             "head_dims": [16, 8], "optimizer": "adam", "lr": 1e-3, "device": "cpu",
                             "batch_size": 32, "epochs": 2})
    data = load_split("digits", image_size=16).subset(torch.arange(64).numpy())
    pretrain_module.pretrain(cfg, data, tmp_path / "s", stop_after=1)
    saved = read_meta(tmp_path / "s" / "checkpoint.safetensors")["grad_scaler"]
    assert saved["scale"] == made[0].get_scale() == 2.0 ** 14  # grew once per step (2 steps), then was saved
    trainer = build_pretrainer(cfg, data, tmp_path / "s", torch.device("cpu"), resume=True)
    assert trainer.start_epoch == 1 and trainer.scaler.get_scale() == 2.0 ** 14
