"""The run folder (issue 9): lock, provenance checks on --resume, metadata only once accepted,
atomic writes with ordinary permissions, named write errors, checksummed checkpoints, torn logs."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gsimclr.checkpoint import load_checkpoint, save_checkpoint
from gsimclr.cli import command_options, main
from gsimclr.errors import UserError
from gsimclr.io import write_json
from gsimclr.run_folder import RunFolder
from gsimclr.tracking import RunLogger

TINY = ["--image-size", "16", "--n-blocks", "0", "--head-dims", "32,16,8", "--epochs", "1", "--batch-size", "64",
        "--optimizer", "adam", "--lr", "0.001", "--ae-epochs", "1", "--k", "64", "--linear-epochs", "2",
        "--finetune-head-epochs", "1", "--finetune-epochs", "1", "--supervised-epochs", "1", "--knn-k", "10",
        "--device", "cpu", "--tsne-points", "0"]


def only(command: str, flags: list[str]) -> list[str]:
    accepted = {"--" + f.replace("_", "-") for f in command_options(command)}
    return [x for flag, value in zip(flags[::2], flags[1::2]) if flag in accepted for x in (flag, value)]


def one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("gsimclr: error:"), err
    return err


@pytest.fixture(scope="module")
def other_data(tmp_path_factory) -> str:
    """A second labelled data set (an image folder: 2 classes x 50 images)."""
    root = tmp_path_factory.mktemp("other") / "imgs"
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(50):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return str(root)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock" and "tensorboard" not in p.parts}


# ------------------------------------------------------------------------------------------ lock


def test_second_writer_is_refused_and_lock_is_released(tmp_path, capsys):
    folder = RunFolder(tmp_path / "run")
    with folder.lock():
        err = one_line_error(capsys, ["pretrain", "--data", "digits", "--out", str(folder.root), *only("pretrain", TINY)])
        assert "is in use by another gsimclr command" in err and f"pid {os.getpid()}" in err
    with folder.lock():  # released
        pass


def test_second_pretrain_process_is_refused(tmp_path):
    """Two processes: one holds the folder (as a running pretrain does), the other is refused at once."""
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from gsimclr.run_folder import RunFolder
        with RunFolder({str(out)!r}).lock():
            print("locked", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": "src"})
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run([sys.executable, "-m", "gsimclr", "pretrain", "--data", "digits", "--out", str(out),
                                 *only("pretrain", TINY)], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "PYTHONPATH": "src"})
        assert second.returncode == 2 and "in use by another gsimclr command" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert not (out / "config.yaml").exists() and not (out / "simclr").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_transient_lock_removes_only_the_lock_file_it_created(tmp_path):
    """``lock(transient=True)`` (a loose checkpoint's folder): held like any lock while the command runs,
    and its lock file is gone afterwards, after success or failure; a lock file that was there stays."""
    folder = RunFolder(tmp_path / "mine")
    folder.root.mkdir()
    (folder.root / "encoder.safetensors").write_bytes(b"x")
    with folder.lock(transient=True):
        assert folder.lock_file.exists()
        with pytest.raises(UserError, match="in use by another gsimclr command"):
            with folder.lock():
                pass
        (folder.root / "knn.json").write_text("{}")
    assert sorted(p.name for p in folder.root.iterdir()) == ["encoder.safetensors", "knn.json"]
    with pytest.raises(RuntimeError):
        with folder.lock(transient=True):
            raise RuntimeError("the evaluation failed")
    assert not folder.lock_file.exists()
    folder.lock_file.write_text("")  # a lock file this command did not create is left alone
    with folder.lock(transient=True):
        pass
    assert folder.lock_file.exists()


def test_lock_removes_stale_temporaries_and_only_rank_0_locks(tmp_path, monkeypatch):
    folder = RunFolder(tmp_path / "run")
    (folder.root / "simclr").mkdir(parents=True)
    stale = folder.root / "simclr" / ".checkpoint.safetensors.abc123.tmp"
    stale.write_bytes(b"x" * 100)
    keep = folder.root / "simclr" / "notes.tmp"  # not one of ours
    keep.write_text("mine")
    with folder.lock():
        assert not stale.exists() and keep.exists()
    # RANK alone (no process group) is a world of one: it locks, and a second writer is refused
    monkeypatch.setenv("RANK", "1")
    other = RunFolder(tmp_path / "rank1")
    with other.lock():
        assert other.lock_file.exists()
        with pytest.raises(UserError, match="in use by another gsimclr command"):
            with other.lock():
                pass
    # rank 1 of an initialised process group never writes, so it does not lock
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
    third = RunFolder(tmp_path / "rank1-of-a-group")
    with third.lock():
        assert not third.root.exists()


def test_refused_command_on_a_new_folder_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "new"
    one_line_error(capsys, ["pretrain", "--data", str(tmp_path / "missing"), "--out", str(out), *only("pretrain", TINY)])
    assert not out.exists()


# ------------------------------------------------------------------------------- write errors


def test_out_below_a_regular_file_names_the_path(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    out = blocker / "run"
    err = one_line_error(capsys, ["pseudo-label", "--data", "digits", "--out", str(out), *only("pseudo-label", TINY)])
    assert str(out) in err and "is a file, not a folder" in err


def test_out_of_space_names_the_path(tmp_path, monkeypatch):
    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    target = tmp_path / "results.json"
    with pytest.raises(UserError, match=f"cannot write {target}: No space left on device"):
        write_json(target, {"a": 1})
    monkeypatch.setattr("gsimclr.checkpoint.save_file", full)
    ckpt = tmp_path / "ckpt.safetensors"
    with pytest.raises(UserError, match=f"cannot write {ckpt}: No space left"):
        save_checkpoint(ckpt, torch.nn.Linear(2, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary file left behind
    assert safetensors.torch.save_file is not full


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_get_ordinary_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {})
        save_checkpoint(tmp_path / "c.safetensors", torch.nn.Linear(2, 2))
    finally:
        os.umask(old)
    for name in ("a.json", "c.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------------------------- checkpoints


def test_damaged_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    net = torch.nn.Linear(64, 64)
    save_checkpoint(path, net, meta={"epoch": 1})
    load_checkpoint(path, torch.nn.Linear(64, 64))
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF  # one flipped byte in the weights
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=f"checkpoint {path} is damaged"):
        load_checkpoint(path, torch.nn.Linear(64, 64))


# ------------------------------------------------------------------------------------- metrics


def test_torn_metrics_line_is_dropped_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "loss": 2.0}\n{"epoch": 2, "loss": 1.9}\n{"epoch": 3, "lo')
    with pytest.warns(UserWarning, match="torn last line 3"):
        log = RunLogger(tmp_path, tensorboard=False, resume=True)
    assert [r["epoch"] for r in log.records] == [1, 2]
    log.truncate(2)
    assert path.read_text().count("\n") == 2
    path.write_text('{"epoch": 1}\nGARBAGE\n{"epoch": 3}\n')
    with pytest.raises(UserError, match="line 2 is damaged"):
        RunLogger(tmp_path, tensorboard=False, resume=True)


# ----------------------------------------------------------------------------------- provenance


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny run of both methods on digits."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["run", "--data", "digits", *TINY, "--out", str(out)]) == 0
    return out


def test_resume_with_other_data_is_refused_and_changes_nothing(finished_run, other_data, capsys):
    before = snapshot(finished_run)
    err = one_line_error(capsys, ["run", "--data", other_data, *TINY, "--out", str(finished_run), "--resume"])
    assert "made from other inputs" in err and "data train" in err
    assert snapshot(finished_run) == before  # neither config.yaml nor run.json rewritten
    err = one_line_error(capsys, ["run", "--data", "digits", *TINY, "--knn-k", "5", "--methods", "simclr",
                                  "--out", str(finished_run), "--resume"])
    assert "simclr/eval" in err and "--knn-k: 10 -> 5" in err
    assert snapshot(finished_run) == before


def test_resume_with_the_same_inputs_reuses_every_stage(finished_run, capsys):
    results = json.loads((finished_run / "results.json").read_text())
    assert main(["run", "--data", "digits", *TINY, "--out", str(finished_run), "--resume"]) == 0
    assert json.loads((finished_run / "results.json").read_text())["methods"] == results["methods"]
    assert f"{results['supervised']:.2f}" in capsys.readouterr().out


def test_resume_on_the_same_images_moved_and_mounted_anew_reuses_every_stage(other_data, tmp_path, capsys):
    """Resume compares the data by content: the same files copied to another place with new modification
    times (a re-download, a new machine, a data disk mounted anew) continue the run; other images do not."""
    import shutil

    out = tmp_path / "run"
    flags = [*TINY, "--methods", "simclr"]
    assert main(["run", "--data", other_data, *flags, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    before = snapshot(out)
    moved = tmp_path / "elsewhere" / "imgs"
    shutil.copytree(other_data, moved)
    for path in moved.rglob("*.png"):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**12))
    capsys.readouterr()
    assert main(["run", "--data", str(moved), *flags, "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "results.json").read_text())["methods"] == results["methods"]
    after = snapshot(out)
    trained = [name for name in before if name.endswith(".safetensors") or name.endswith(".npy")]
    assert trained and all(after[name] == before[name] for name in trained)   # nothing trained again
    # one image changed: the data differ, and resume says so
    first = sorted(moved.rglob("*.png"))[0]
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(first)
    err = one_line_error(capsys, ["run", "--data", str(moved), *flags, "--out", str(out), "--resume"])
    assert "made from other inputs" in err and ("data train" in err or "data test" in err)   # its held-out split


def test_pseudo_label_refuses_to_replace_labels_a_checkpoint_was_trained_with(finished_run, capsys, tmp_path):
    labels = (finished_run / "pseudo_labels" / "pseudo_labels.npy").read_bytes()
    err = one_line_error(capsys, ["pseudo-label", "--data", "digits", "--out", str(finished_run), "--seed", "5",
                                  *only("pseudo-label", TINY)])
    assert "gsimclr" in err and "was trained with the pseudo labels" in err
    assert (finished_run / "pseudo_labels" / "pseudo_labels.npy").read_bytes() == labels


def test_resume_after_pseudo_labels_with_other_data_is_refused(tmp_path, other_data, capsys):
    out = tmp_path / "run"
    assert main(["pseudo-label", "--data", "digits", "--out", str(out), *only("pseudo-label", TINY)]) == 0
    config = (out / "config.yaml").read_bytes()
    err = one_line_error(capsys, ["run", "--data", other_data, *TINY, "--out", str(out), "--resume"])
    assert "pseudo_labels" in err and "data train" in err
    err = one_line_error(capsys, ["pretrain", "--method", "gsimclr", "--data", other_data, "--out", str(out),
                                  *only("pretrain", TINY)])
    assert "pseudo_labels" in err
    assert (out / "config.yaml").read_bytes() == config and not (out / "gsimclr").exists()


@pytest.mark.parametrize("command", ["pretrain", "pseudo-label", "supervised"])
def test_stage_commands_refuse_an_unrelated_non_empty_folder(capsys, tmp_path, command):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "thesis.txt").write_text("mine")
    assert main([command, "--data", "digits", "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a gsimclr run folder (it holds thesis.txt" in err, err
    assert sorted(p.name for p in out.iterdir()) == [".lock", "thesis.txt"]  # nothing of a run was written


def test_stage_target_accepts_new_empty_and_run_folders(tmp_path):
    RunFolder(tmp_path / "new").check_stage_target()
    (tmp_path / "empty").mkdir()
    RunFolder(tmp_path / "empty").check_stage_target()
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    (run / "simclr").mkdir()
    RunFolder(run).check_stage_target()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.txt").write_text("")
    with pytest.raises(UserError, match="not a gsimclr run folder"):
        RunFolder(tmp_path / "other").check_stage_target()
