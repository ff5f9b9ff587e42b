"""The evaluation subcommands on a run: they take no --batch-size, so the run's pretraining batch never
refuses them, and a setting an evaluation cannot run with is refused before any work in the
evaluation's own options (never one the subcommand does not take). The labelling command
(``pseudo-label``) likewise checks only the options it uses."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from image_folders import jpeg_folder

from gsimclr.cli import command_options, main
from gsimclr.evaluation import EVALUATIONS

TINY = ["--image-size", "16", "--n-blocks", "0", "--head-dims", "32,16,8", "--epochs", "1", "--batch-size", "64",
        "--train-limit", "256",
        "--device", "cpu"]
FAST = {"linear-eval": ["--linear-epochs", "2"], "linear-standard": ["--standard-epochs", "1"],
        "knn": ["--knn-k", "10"], "finetune": ["--finetune-head-epochs", "1", "--finetune-epochs", "1"],
        "linear-eval-notebook": ["--linear-epochs", "2"],
        "finetune-notebook": ["--finetune-head-epochs", "1", "--finetune-epochs", "1", "--label-fraction", "0.5"]}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_commands") / "run"
    assert main(["pretrain", *TINY, "--out", str(out), "--method", "simclr"]) == 0
    return out


def _error_of(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("gsimclr: error:") and "Traceback" not in err, err
    return err


def _options_named(message: str) -> set[str]:
    return {m.replace("-", "_") for m in re.findall(r"--([a-z][a-z0-9-]*)", message)}


@pytest.mark.parametrize("command", [ev.command for ev in EVALUATIONS.values()])
def test_fewer_training_images_than_the_pretraining_batch(capsys, run, command):
    """--train-limit 40 under the run's --batch-size 64: every evaluation still runs (it was refused with
    "--batch-size 64 is larger than the dataset", an option these commands do not take)."""
    assert "batch_size" not in command_options(command)
    argv = [command, "--out", str(run), "--train-limit", "40", "--test-limit", "30", "--device", "cpu",
            *FAST[command]]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err


@pytest.mark.parametrize("command,argv,needle", [
    ("knn", ["--knn-k", "41"], "--knn-k 41 is larger than the training set (40 images)"),
    ("linear-eval-notebook", ["--select-on", "holdout", "--holdout-fraction", "0.99"], "--holdout-fraction 0.99"),
    ("finetune-notebook", ["--select-on", "holdout", "--holdout-fraction", "0.5", "--label-fraction", "0.1"],
     "--holdout-fraction 0.5 leaves none of the 10 labelled images (--label-fraction 0.1)"),
])
def test_settings_an_evaluation_cannot_run_with_are_refused_first(capsys, run, command, argv, needle):
    name = next(ev.name for ev in EVALUATIONS.values() if ev.command == command)
    result = run / "simclr" / f"{name}.json"
    before = result.stat().st_mtime_ns if result.exists() else None
    err = _error_of(capsys, [command, "--out", str(run), "--train-limit", "40", "--device", "cpu", *argv])
    assert needle in err
    assert _options_named(err) <= set(command_options(command)), err  # only options this command takes
    assert (result.stat().st_mtime_ns if result.exists() else None) == before  # nothing written


@pytest.mark.parametrize("source", ["train-limit", "folder"])
def test_pseudo_label_checks_only_the_options_it_uses(tmp_path, capsys, monkeypatch, source):
    """Issue 26: `pseudo-label --k 4 --pseudo-labels file:...` on 64 images never trains --batch-size
    batches, so the preset's batch size (128, larger than the data) is not refused, neither as an option
    check (--train-limit 64) nor once the data is read (a folder of 64 images)."""
    monkeypatch.setenv("GSIMCLR_CACHE", str(tmp_path / "cache"))
    if source == "folder":
        root = jpeg_folder(tmp_path / "set", count=64)
        shutil.copytree(root / "train", root / "test")
        data = ["--data", str(root)]
    else:
        data = ["--data", "digits", "--train-limit", "64"]
    labels = tmp_path / "labels.npy"
    np.save(labels, np.arange(64) % 4)
    argv = ["pseudo-label", "--preset", "digits-quick", *data, "--k", "4", "--pseudo-labels", f"file:{labels}",
            "--device", "cpu", "--tsne-points", "0", "--out", str(tmp_path / "run")]
    assert main(argv) == 0, capsys.readouterr().err
    assert np.load(tmp_path / "run" / "pseudo_labels" / "pseudo_labels.npy").shape == (64,)


def test_a_preset_keeps_the_checkpoints_inputs_unless_a_flag_changes_them(tmp_path, capsys, run):
    """``knn --preset P --checkpoint C``: the preset came after the checkpoint's configuration, so a preset
    with ``normalize: none`` read an ImageNet-normalised encoder's images as raw pixels (other features,
    silently). The checkpoint's input size, normalisation and resize mode are kept, with a warning; a
    flag given changes them."""
    preset = tmp_path / "eval.yaml"
    preset.write_text("normalize: none\nimage_size: 24\nknn_k: 7\n")
    with pytest.warns(UserWarning, match=r"keeping the checkpoint's --image-size 16, --normalize imagenet \(give "
                                         r"the flag to change it\)"):
        assert main(["knn", "--checkpoint", str(run / "simclr"), "--preset", str(preset)]) == 0
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["knn", "--checkpoint", str(run / "simclr"), "--preset", str(preset), "--normalize", "none",
                     "--image-size", "16"]) == 0
    assert not [w for w in caught if "keeping the checkpoint's" in str(w.message)]


def test_a_loose_checkpoint_folder_keeps_no_lock_file(tmp_path, capsys, run):
    """An evaluation of a checkpoint copied out of its run writes its result beside it and leaves no stray
    ``.lock`` among the user's files (it left one before); a run folder keeps its lock file."""
    loose = tmp_path / "mine"
    loose.mkdir()
    shutil.copy(run / "simclr" / "checkpoint.safetensors", loose / "encoder.safetensors")
    argv = ["knn", "--checkpoint", str(loose / "encoder.safetensors"), "--train-limit", "40", "--test-limit", "30",
            "--device", "cpu", "--knn-k", "5"]
    assert main(argv) == 0, capsys.readouterr().err
    assert sorted(p.name for p in loose.iterdir()) == ["encoder.safetensors", "knn.json"]
    assert (run / ".lock").exists()
