"""Optional Weights & Biases tracking, in wandb's offline mode (no account, no network)."""

import builtins

import pytest

from gsimclr.errors import UserError
from gsimclr.tracking import RunLogger, WandbOptions


def test_offline_run_logs_the_same_metrics(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log = RunLogger(tmp_path, tensorboard=False, wandb=WandbOptions(project="p", name="n", config={"lr": 0.1}))
    run = log.wandb
    log.log({"epoch": 1, "loss": 2.0, "method": "simclr"})
    log.log({"epoch": 2, "loss": 1.5, "knn": 40.0})
    assert run.summary["loss"] == 1.5 and run.summary["knn"] == 40.0 and run.summary["epoch"] == 2
    assert run.config["lr"] == 0.1 and run.name == "n" and run.project == "p"
    log.close()
    assert log.wandb is None
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))  # kept for `wandb sync`
    assert len(log.records) == 2 and (tmp_path / "metrics.jsonl").read_text().count("\n") == 2


def test_missing_wandb_is_one_line(tmp_path, monkeypatch):
    real = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("no")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(UserError, match=r"pip install 'gsimclr\[wandb\]'"):
        RunLogger(tmp_path, tensorboard=False, wandb=WandbOptions())
    RunLogger(tmp_path, tensorboard=False).close()  # without --wandb nothing imports it
