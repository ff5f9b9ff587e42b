"""Issue 18: no run is lost or silently wrong. Exports that would replace what they read, the run lock
for readers and writers, the rank from the process group, checkpoint metadata under its checksum,
write errors (disk full, paths under files, read-only folders) as one line, refused commands that leave
nothing, option messages that name the command's own options, torch-free option checks."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gsimclr.checkpoint import read_meta, save_checkpoint
from gsimclr.cli import _in_own_words, main
from gsimclr.config import load_config
from gsimclr.errors import UserError
from gsimclr.export import export_run
from gsimclr.launch import launch_environment
from gsimclr.pipeline import write_run_info
from gsimclr.run_folder import RunFolder
from test_run_folder import one_line_error as one_line

SMALL = {"data": "digits", "image_size": 16, "n_blocks": 0, "head_dims": [16, 8], "device": "cpu",
         "batch_size": 64, "tsne_points": 0}


def fake_run(root: Path, **overrides) -> RunFolder:
    """A run folder with an (untrained) SimCLR checkpoint, as `gsimclr pretrain` leaves it, in a second."""
    from gsimclr.training.pretrain import build_model

    from gsimclr.pipeline import load_data, pretrain_provenance

    cfg = load_config(None, {**SMALL, **overrides})
    folder = RunFolder(root)
    with folder.lock():
        write_run_info(folder, cfg, ["pretrain"])
        folder.record("simclr", pretrain_provenance(cfg, load_data(cfg, pretraining=False)[0], "simclr", None))
        save_checkpoint(folder.checkpoint("simclr"), build_model(cfg),
                        meta={"config": cfg.to_dict(), "epoch": 1, "method": "simclr"})
    return folder


def contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}




@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunFolder:
    return fake_run(tmp_path_factory.mktemp("faults") / "run")


# ------------------------------------------------------------------------ export never replaces its input


def test_export_refuses_outputs_that_hold_or_lie_in_what_it_reads(run, tmp_path, capsys):
    root = run.root
    (tmp_path / "link").symlink_to(root)
    before = contents(root)
    for output in [root, root / "simclr", run.checkpoint("simclr"), root / "pseudo_labels", root / "simclr" / "other",
                   tmp_path / "link", tmp_path / "link" / "simclr", run.checkpoint("simclr") / "x", root.parent]:
        for source in (root, root / "simclr", run.checkpoint("simclr")):
            err = one_line(capsys, ["export", str(source), "--output", str(output), "--overwrite",
                                    "--format", "state_dict"])
            assert "would replace" in err or "lies inside" in err, err
    assert contents(root) == before


def test_export_into_its_own_export_folder_and_overwrite_only_an_export(run, tmp_path, capsys):
    assert main(["export", str(run.root), "--format", "state_dict"]) == 0
    assert (run.stage_dir("simclr") / "export" / "backbone.pth").is_file()
    assert main(["export", str(run.root), "--format", "state_dict", "--overwrite"]) == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("keep")
    err = one_line(capsys, ["export", str(run.root), "--output", str(mine), "--overwrite", "--format", "state_dict"])
    assert "replaces only a previous export" in err and (mine / "thesis.txt").read_text() == "keep"


def test_export_respects_the_run_lock(run, tmp_path, capsys):
    with run.lock():  # a command writes the run: export neither reads nor writes it
        err = one_line(capsys, ["export", str(run.root), "--output", str(tmp_path / "e"), "--format", "state_dict"])
        assert "is being written by another gsimclr command" in err
        err = one_line(capsys, ["export", str(run.root), "--overwrite", "--format", "state_dict"])
        assert "in use by another gsimclr command" in err
    with run.lock(shared=True):  # another reader: exporting elsewhere is fine, writing into the run is not
        assert main(["export", str(run.root), "--output", str(tmp_path / "e"), "--format", "state_dict"]) == 0
        with pytest.raises(UserError, match="in use"):
            with run.lock():
                pass
    assert not (tmp_path / "e" / ".lock").exists()


def test_readers_of_a_run_being_written_are_refused(run, tmp_path, capsys):
    (run.root / "results.json").write_text(json.dumps({"data": "digits", "methods": {"simclr": {"knn": 50.0}}}))
    try:
        with run.lock():
            for argv in (["summarize", str(run.root)],
                         ["embed", "--out", str(run.root), "--output", str(tmp_path / "f.npy")],
                         ["knn", "--out", str(run.root), "--knn-k", "5"]):
                err = one_line(capsys, argv)
                assert "another gsimclr command" in err, (argv, err)
    finally:
        (run.root / "results.json").unlink()


def test_export_files_have_ordinary_permissions_and_stale_temporaries_go(run, tmp_path):
    out = tmp_path / "e"
    stale = tmp_path / ".e.export-999999999-abc"  # left by an export killed with kill -9 (no such pid)
    (stale / "hf").mkdir(parents=True)
    old = os.umask(0o022)
    try:
        export_run(run.root, out, formats=("state_dict", "hf"))
    finally:
        os.umask(old)
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["e"]
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert modes["."] == 0o755 and modes["hf"] == 0o755, modes
    assert modes["hf/model.safetensors"] == 0o644 and modes["backbone.pth"] == 0o644, modes


# ------------------------------------------------------------------------------ write errors, one line


def test_export_disk_full_is_one_line_and_leaves_nothing(run, tmp_path, monkeypatch, capsys):
    import gsimclr.export as export

    def full(path, data):
        Path(path).write_bytes(data[: len(data) // 2])
        raise UserError(f"cannot write {path}: {os.strerror(errno.ENOSPC)}")

    monkeypatch.setattr(export, "write_bytes", full)
    for fmt in ("state_dict", "hf", "onnx"):
        err = one_line(capsys, ["export", str(run.root), "--output", str(tmp_path / "e"), "--format", fmt])
        assert "No space left on device" in err and str(tmp_path / "e") in err and ".export-" not in err
    assert list(tmp_path.iterdir()) == []


def test_export_disk_full_on_a_real_small_file_system(run, tmp_path, capsys):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        for fmt in ("state_dict", "hf", "onnx"):
            err = one_line(capsys, ["export", str(run.root), "--output", str(mnt / "e"), "--format", fmt])
            assert "No space left on device" in err, err
            assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)])


def test_outputs_under_a_file_or_in_a_read_only_folder_are_checked_before_work(run, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argvs = {"export": ["export", str(run.root), "--format", "state_dict", "--output"],
             "embed": ["embed", "--out", str(run.root), "--output"],
             "summarize": ["summarize", str(run.root), "--output"],
             "pretrain": ["pretrain", "--data", "digits", "--out"]}
    for name, argv in argvs.items():
        target = blocker / ("x.npy" if name == "embed" else "x")
        err = one_line(capsys, argv + [str(target)])
        assert "is a file, not a folder" in err, (name, err)
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro else real_access(p, mode, **kw))
    for name, argv in argvs.items():
        target = ro / ("x.npy" if name == "embed" else "x")
        err = one_line(capsys, argv + [str(target)])
        assert f"cannot write into {ro}" in err, (name, err)
    assert list(ro.iterdir()) == [] and blocker.read_text() == "x"


# ---------------------------------------------------------------------------- checkpoint metadata


def _edit_header(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert len(old) == len(new) and old in data
    path.write_bytes(data.replace(old, new, 1))


def test_edited_checkpoint_metadata_is_refused(tmp_path, capsys):
    folder = fake_run(tmp_path / "run")
    ckpt = folder.checkpoint("simclr")
    assert read_meta(ckpt)["epoch"] == 1 and "header_checksum" not in read_meta(ckpt)
    original = ckpt.read_bytes()
    for old, new in ((b'\\"epoch\\": 1', b'\\"epoch\\": 2'), (b'\\"image_size\\": 16', b'\\"image_size\\": 32')):
        ckpt.write_bytes(original)
        _edit_header(ckpt, old, new)
        with pytest.raises(UserError, match="damaged or was edited"):
            read_meta(ckpt)
        err = one_line(capsys, ["export", str(folder.root), "--output", str(tmp_path / "e"), "--format", "state_dict"])
        assert "damaged or was edited" in err
        err = one_line(capsys, ["pretrain", "--out", str(folder.root), "--resume", "--data", "digits",
                                "--image-size", "16", "--n-blocks", "0", "--head-dims", "16,8", "--device", "cpu",
                                "--epochs", "2", "--tsne-points", "0"])
        assert "damaged or was edited" in err
    assert not (tmp_path / "e").exists()


def test_stripped_checksums_are_refused(tmp_path, capsys):
    """Issue 26: a tensor byte flipped, then both checksum fields renamed: the header still says this
    version, so the file is refused, never read as an older version's."""
    folder = fake_run(tmp_path / "run")
    ckpt = folder.checkpoint("simclr")
    data = bytearray(ckpt.read_bytes())
    data[-1] ^= 0xFF                                                  # the last tensor's last byte
    ckpt.write_bytes(bytes(data))
    _edit_header(ckpt, b'\\"checksum\\"', b'\\"checksun\\"')
    _edit_header(ckpt, b'\\"header_checksum\\"', b'\\"header_checksun\\"')
    for read in (read_meta, lambda path: _load(path, folder)):
        with pytest.raises(UserError, match="lacks the checksums every checkpoint of gsimclr 0.2.0 or later carries"):
            read(ckpt)
    err = one_line(capsys, ["pretrain", "--out", str(folder.root), "--resume", *_SMALL_FLAGS])
    assert "lacks the checksums" in err
    err = one_line(capsys, ["export", str(folder.root), "--output", str(tmp_path / "e"), "--format", "state_dict"])
    assert "lacks the checksums" in err and not (tmp_path / "e").exists()


_SMALL_FLAGS = ["--data", "digits", "--image-size", "16", "--n-blocks", "0", "--head-dims", "16,8", "--device", "cpu",
                "--batch-size", "64", "--epochs", "2", "--tsne-points", "0"]


def _load(path, folder: RunFolder):
    from gsimclr.checkpoint import load_checkpoint
    from gsimclr.training.pretrain import build_model

    return load_checkpoint(path, build_model(load_config(None, SMALL)))


def _rewrite_as_older(path: Path, **header) -> None:
    """The checkpoint's tensors under the header an earlier build wrote (no header checksum)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    meta = read_meta(path)
    meta.pop("checksum", None)
    save_file(tensors, str(path), metadata={"gsimclr": json.dumps({**meta, **header})})


def test_checkpoints_of_an_older_version_are_read_with_a_note(tmp_path, capsys, monkeypatch):
    """Checkpoints that gsimclr 0.1.0 wrote before the header checksum existed stay readable (their tensors
    still verified when they carry a checksum), with a one-line note printed once per command."""
    import warnings

    from gsimclr.checkpoint import tensor_checksum

    folder = fake_run(tmp_path / "run")
    ckpt = folder.checkpoint("simclr")
    from safetensors.torch import load_file

    checksum = tensor_checksum(load_file(str(ckpt)))
    _rewrite_as_older(ckpt, gsimclr_version="0.1.0", checksum=checksum)
    with pytest.warns(UserWarning, match="comes from gsimclr 0.1.0, before checkpoints carried checksums of their "
                      "metadata: its tensors verified"):
        assert _load(ckpt, folder)["epoch"] == 1

    def show(message, category, filename, lineno, file=None, line=None):   # as outside pytest's recorder
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    monkeypatch.setattr(warnings, "showwarning", show)
    with warnings.catch_warnings():
        warnings.resetwarnings()
        assert main(["export", str(folder.root), "--output", str(tmp_path / "e"), "--format", "state_dict"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "comes from gsimclr 0.1.0" in line]
    assert notes == [f"gsimclr: warning: checkpoint {ckpt} comes from gsimclr 0.1.0, before checkpoints carried "
                     "checksums of their metadata: its tensors verified, its metadata taken as they are"]
    _rewrite_as_older(ckpt, gsimclr_version="0.1.0")                  # the earliest builds: no checksum at all
    with pytest.warns(UserWarning, match="its tensors and metadata taken as they are"):
        assert read_meta(ckpt)["epoch"] == 1
    _rewrite_as_older(ckpt, gsimclr_version=None)                     # no version: not gsimclr's
    with pytest.raises(UserError, match="names no gsimclr version and carries no checksums"):
        read_meta(ckpt)


def test_a_checkpoint_replaced_by_a_folder_is_named(tmp_path, capsys):
    folder = fake_run(tmp_path / "run")
    ckpt = folder.checkpoint("simclr")
    ckpt.unlink()
    ckpt.mkdir()
    with pytest.raises(UserError, match="is a folder, not a checkpoint file"):
        read_meta(ckpt)
    err = one_line(capsys, ["export", str(folder.root), "--output", str(tmp_path / "e")])
    assert "not a file" in err and "No such device" not in err
    err = one_line(capsys, ["knn", "--out", str(folder.root), "--knn-k", "5"])
    assert "not a file" in err and "No such device" not in err


# ------------------------------------------------------------------------------------ rank and lock


@pytest.mark.parametrize("env,message", [({"RANK": "abc"}, "RANK must be a whole number"),
                                         ({"RANK": "1", "WORLD_SIZE": "x"}, "WORLD_SIZE must be"),
                                         ({"RANK": "2", "WORLD_SIZE": "2"}, "not below WORLD_SIZE"),
                                         ({"LOCAL_RANK": "-1"}, "LOCAL_RANK must be"),
                                         ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE must be a whole number >= 1")])
def test_nonsense_launcher_variables_are_one_line(env, message, tmp_path, monkeypatch, capsys):
    with pytest.raises(UserError, match=message):
        launch_environment(env)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    err = one_line(capsys, ["pretrain", "--data", "digits", "--out", str(tmp_path / "r")])
    assert message in err and not (tmp_path / "r").exists()


def test_rank_without_a_process_group_still_takes_the_lock(tmp_path, monkeypatch, capsys):
    """RANK=1 without torchrun is one process: it writes, so it locks, and a second writer is refused."""
    monkeypatch.setenv("RANK", "1")
    assert launch_environment() is None
    folder = RunFolder(tmp_path / "run")
    with folder.lock():
        err = one_line(capsys, ["pretrain", "--data", "digits", "--out", str(folder.root), "--device", "cpu"])
        assert "in use by another gsimclr command" in err


# -------------------------------------------------------------------- refused commands leave nothing


def test_refused_commands_leave_no_metadata_or_lock(tmp_path, capsys):
    junk = tmp_path / "random.pth"
    junk.write_bytes(os.urandom(4096))
    tiny = ["--data", "digits", "--image-size", "16", "--n-blocks", "0", "--head-dims", "16,8", "--device", "cpu",
            "--epochs", "1", "--tsne-points", "0", "--train-limit", "128"]
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(["pretrain", *tiny, "--init", str(junk)], "--init: cannot read weights"),
             (["run", *tiny, "--knn-k", "5", "--init", str(junk), "--ae-epochs", "1"], "--init: cannot read weights"),
             (["run", *tiny, "--knn-k", "5", "--k", "500"], "--k 500 is larger than --train-limit 128"),
             (["pretrain", *tiny, "--method", "gsimclr", "--k", "500"], "--k 500 is larger than --train-limit 128"),
             (["pseudo-label", "--data", "digits", "--k", "1500"], "--k 1500 is larger than the dataset (1437"),
             (["pretrain", *tiny[:-2], "--method", "gsimclr", "--k", "1500"], "--k 1500 is larger than the dataset")]
    for argv, message in cases:
        for out in (tmp_path / "new", empty):
            err = one_line(capsys, [*argv, "--out", str(out)])
            assert message in err, err
            assert "weights_only" not in err and "\n" not in err
            assert not (tmp_path / "new").exists() and list(empty.iterdir()) == [], argv
    # an --init file that is not weights is refused under `run` before the autoencoder trains
    assert not (tmp_path / "new" / "pseudo_labels").exists()


# ------------------------------------------------------------------ messages name the command's options


def test_evaluation_of_a_run_does_not_name_options_it_does_not_take(tmp_path, capsys):
    folder = fake_run(tmp_path / "run", batch_size=128)
    assert main(["knn", "--out", str(folder.root), "--train-limit", "64", "--knn-k", "5"]) == 0, capsys.readouterr().err
    assert (folder.stage_dir("simclr") / "knn.json").is_file()


def test_messages_name_settings_not_foreign_options():
    message = "--batch-size 128 is larger than the dataset (64 training images)"
    assert _in_own_words(message, ["knn", "--out", "r"]) == "the run's batch size 128 is larger than the dataset (64 training images)"
    assert _in_own_words(message, ["linear-eval", "--out", "r"]).startswith("the run's batch size 128")
    assert _in_own_words(message, ["pretrain", "--out", "r"]) == message  # pretrain takes --batch-size
    assert _in_own_words(message, ["knn", "--batch-size", "3"]) == message  # the user typed it
    assert _in_own_words("--lr must be > 0", ["pseudo-label"]) == "the lr setting must be > 0"


def test_bad_options_exit_2_before_pytorch_is_imported(tmp_path):
    cases = [["knn", "--knn-k", "-3"], ["linear-eval", "--linear-epochs", "0"], ["embed", "--output", "x.txt"],
             ["export", str(tmp_path), "--format", "tflite"], ["pretrain", "--lr", "-1"], ["run", "--epochs", "0"],
             ["presets", "--show", ""]]
    code = ("import sys, json; from gsimclr.cli import main; "
            f"print(json.dumps([(main(a), 'torch' in sys.modules) for a in {cases!r}]))")
    env = {**os.environ, "RANK": "abc"}  # checked too, before torch
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert results == [[2, False]] * len(cases), list(zip(cases, results))


def _torch_free_run(code: str, cwd: Path) -> list:
    """Run ``code`` (which prints one JSON line) in a fresh interpreter; its result and whether PyTorch
    got imported."""
    code += "\nprint(json.dumps({'torch': 'torch' in sys.modules}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    return [json.loads(lines[-2]), json.loads(lines[-1])["torch"]]


def test_every_bad_choice_and_option_combination_exits_2_before_pytorch_is_imported(tmp_path):
    """Every option with choices, on every command that takes it (read from the options themselves, so a
    new option or registry is covered), and the checks that need no data: each one line, exit 2, and
    PyTorch never imported."""
    cases = [["run", "--methods", "simclr,bogus"], ["run", "--methods", "simclr,simclr"],
             ["pretrain", "--method", "moco", "--views", "3"],
             ["run", "--methods", "gmoco", "--views-forward", "separate"],
             ["run", "--data", str(tmp_path / "missing")], ["pretrain", "--test-data", str(tmp_path / "x.parquet")],
             ["run", "--data", "no-such-source"],
             ["pretrain", "--method", "gsimclr", "--pseudo-labels", f"file:{tmp_path / 'none.npy'}"],
             ["pseudo-label", "--pseudo-labels", f"file:{tmp_path}"],
             ["knn", "--out", str(tmp_path / "no-run")], ["linear-eval", "--checkpoint", str(tmp_path / "x.pth")],
             ["finetune", "--out", str(tmp_path / "no-run")],
             ["run", "--k", "500", "--train-limit", "128"], ["pseudo-label", "--train-limit", "50"],
             ["pretrain", "--method", "gsimclr", "--batch-size", "32", "--k", "64", "--train-limit", "48"],
             ["supervised", "--batch-size", "256", "--train-limit", "128"],
             ["pretrain", "--tau-plus", "0.2"], ["run", "--loss", "debiased", "--beta", "2"],
             ["run", "--loss", "debiased", "--guidance", "attract"],
             ["pretrain", "--method", "gsimclr", "--loss", "hard-negative", "--guidance", "attract"],
             ["pretrain", "--method", "moco", "--loss", "debiased"], ["run", "--methods", "simclr,gmoco",
                                                                       "--loss", "hard-negative"],
             ["run", "--loss", "debiased", "--tau-plus", "1"], ["pretrain", "--loss", "hard-negative", "--beta", "-1"],
             ["pretrain", "--method", "moco", "--batch-size", "128", "--train-limit", "150"],
             ["pretrain", "--method", "gmoco", "--batch-size", "64", "--queue-size", "200", "--train-limit", "200"],
             ["run", "--methods", "simclr,moco", "--batch-size", "128", "--train-limit", "128"]]
    code = f"""
import contextlib, io, json, sys
from gsimclr.cli import COMMANDS, command_options, main
from gsimclr.config import FIELDS, flag
cases = {cases!r}
for name, field in FIELDS.items():
    if field.metadata["choices"] is not None:
        cases += [[command, flag(name), "bogus"] for command in COMMANDS if name in command_options(command)]
results = []
for argv in cases:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    results.append([argv, code, err.getvalue().strip()])
print(json.dumps(results))"""
    results, torch_imported = _torch_free_run(code, tmp_path)
    assert len(results) > 60  # every choice option of every command
    for argv, code, err in results:
        assert code == 2 and err.startswith("gsimclr: error: ") and "\n" not in err, (argv, code, err)
    messages = {" ".join(argv): err for argv, _, err in results}
    assert "--views 3: MoCo contrasts a query with one key" in messages["pretrain --method moco --views 3"]
    assert "data path does not exist" in messages[f"run --data {tmp_path / 'missing'}"]
    assert "no pseudo_labels.npy" in messages[f"pseudo-label --pseudo-labels file:{tmp_path}"]
    assert messages["run --k 500 --train-limit 128"].endswith("--k 500 is larger than --train-limit 128: give --k 128 "
                                                               "or less")
    # pseudo-label trains no --batch-size batches: only --k (whose default is the batch size) is checked
    assert messages["pseudo-label --train-limit 50"].endswith("--k (default: --batch-size 64) is larger than "
                                                              "--train-limit 50: give --k 50 or less")
    # MoCo's queue against --train-limit, naming what the user gave (no invented --queue-size, no "at most 0")
    assert messages["pretrain --method moco --batch-size 128 --train-limit 150"] == (
        "gsimclr: error: --batch-size 128 leaves no room for MoCo's queue (--train-limit 150 keeps at most 150 training "
        "images): the queue (by default whole batches) holds at most images - batch size keys; give --queue-size 22 "
        "or less, or --batch-size 75 or less")
    assert messages["pretrain --method gmoco --batch-size 64 --queue-size 200 --train-limit 200"] == (
        "gsimclr: error: --queue-size 200 with --batch-size 64 needs 264 training images, --train-limit 200 keeps at "
        "most 200: the queue holds at most images - batch size keys; give --queue-size 136 or less")
    assert messages["run --methods simclr,moco --batch-size 128 --train-limit 128"].endswith(
        "give --batch-size 64 or less")
    assert "--k 64 is larger than --train-limit 48" in messages[
        "pretrain --method gsimclr --batch-size 32 --k 64 --train-limit 48"]
    assert "must be one of" in messages["run --augment bogus"] and "notebook" in messages["run --augment bogus"]
    # the loss options: given for a loss that does not read them, a guidance or a method a loss cannot train with
    assert messages["pretrain --tau-plus 0.2"].endswith("--tau-plus only affects --loss debiased / hard-negative, "
                                                        "not --loss ntxent; drop it or choose --loss debiased")
    assert "--beta only affects --loss hard-negative, not --loss debiased" in messages["run --loss debiased --beta 2"]
    for argv in ("run --loss debiased --guidance attract",
                 "pretrain --method gsimclr --loss hard-negative --guidance attract"):
        assert "--guidance attract with --loss " in messages[argv] and "use --guidance mask or none" in messages[argv]
    assert "--loss debiased: MoCo contrasts a query with its queue" in messages["pretrain --method moco --loss debiased"]
    assert "--loss hard-negative: G-MoCo" in messages["run --methods simclr,gmoco --loss hard-negative"]
    assert "--tau-plus must be < 1" in messages["run --loss debiased --tau-plus 1"]
    assert "--beta must be >= 0" in messages["pretrain --loss hard-negative --beta -1"]
    assert not torch_imported


def test_choices_and_preset_validation_import_no_pytorch(tmp_path):
    """Every registry an option's choices name is read without PyTorch (a registry of heavy entries
    declares their names), every shipped preset validates without it, and every declared name is
    registered once its module is imported (no drift between the names and the entries)."""
    code = """
import json, sys
from gsimclr.config import FIELDS, choices_of, load_config, preset_names, preset_requirements
choices = {name: choices_of(name) for name, f in FIELDS.items() if f.metadata["choices"] is not None}
for preset in preset_names():
    load_config(preset, {k: "digits" for k in preset_requirements(preset)})
print(json.dumps(choices))"""
    choices, torch_imported = _torch_free_run(code, tmp_path)
    assert not torch_imported
    assert choices["augment"] == ["simclr", "paper", "notebook"] and choices["loss"] == ["ntxent", "debiased", "hard-negative"]
    assert choices["optimizer"] == ["sgd", "lars", "adam"] and choices["views_forward"] == ["joint", "separate"]

    import importlib

    from gsimclr.config import FIELDS as fields
    from gsimclr.registry import Registry

    for name, field in fields.items():
        ref = field.metadata["choices"]
        if isinstance(ref, str):
            module, _, attr = ref.partition(":")
            registry = getattr(importlib.import_module(module), attr)
            if isinstance(registry, Registry):
                assert [n for n, _ in registry.items()] == registry.names()  # imports the declared modules


def test_a_declared_name_is_loaded_on_first_lookup_and_drift_is_named(tmp_path, monkeypatch):
    from gsimclr.registry import Registry

    (tmp_path / "heavy_entries.py").write_text(
        "from gsimclr_test_registry import REG\nREG.register('a', 1)\n")
    (tmp_path / "gsimclr_test_registry.py").write_text(
        "from gsimclr.registry import Registry\nREG = Registry('thing')\n"
        "REG.declare('a', 'b', module='heavy_entries')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import gsimclr_test_registry as light

    assert light.REG.names() == ["a", "b"] and "b" in light.REG and "heavy_entries" not in sys.modules
    assert light.REG["a"] == 1 and "heavy_entries" in sys.modules
    with pytest.raises(LookupError, match="'b' is declared in heavy_entries but importing it registered no such"):
        light.REG.get("b")
    with pytest.raises(UserError, match="unknown thing 'c'; choose one of a, b"):
        light.REG.get("c")
    with pytest.raises(ValueError, match="registered twice"):
        light.REG.declare("a", module="x")
    reg = Registry("other")
    reg.register("x", 1)
    reg.declare("y", module="heavy_entries_missing")
    assert list(reg) == ["y", "x"] and len(reg) == 2


# ------------------------------------------------------------------------------- embed, logs, summary


def test_embed_honours_the_limit_and_hold_out_so_its_output_feeds_back(tmp_path, capsys):
    folder = fake_run(tmp_path / "run")
    out = tmp_path / "train.npy"
    assert main(["embed", "--out", str(folder.root), "--output", str(out), "--train-limit", "128"]) == 0
    assert np.load(out).shape[0] == 128
    assert main(["embed", "--out", str(folder.root), "--output", str(out)]) == 0
    full = np.load(out).shape[0]
    assert full == 1437 and main(["embed", "--out", str(folder.root), "--output", str(tmp_path / "t.npy"),
                                  "--split", "test"]) == 0
    assert np.load(tmp_path / "t.npy").shape[0] == 360
    # fed back as pseudo labels (embeddings to cluster): the rows match the training images
    capsys.readouterr()
    assert main(["embed", "--out", str(folder.root), "--output", str(tmp_path / "x.npy"), "--train-limit", "128"]) == 0
    assert main(["pseudo-label", "--data", "digits", "--image-size", "16", "--train-limit", "128", "--k", "8",
                 "--pseudo-labels", f"file:{tmp_path / 'x.npy'}", "--out", str(tmp_path / "pl"),
                 "--device", "cpu", "--tsne-points", "0"]) == 0, capsys.readouterr().err


def test_a_deleted_metrics_log_is_refused_on_resume(tmp_path):
    from gsimclr.tracking import RunLogger

    log = RunLogger(tmp_path, tensorboard=False)
    for epoch in (1, 2, 3):
        log.log({"epoch": epoch, "loss": 1.0})
    log.close()
    resumed = RunLogger(tmp_path, tensorboard=False, resume=True)
    resumed.truncate(2)
    assert [r["epoch"] for r in resumed.records] == [1, 2]
    (tmp_path / "metrics.jsonl").unlink()
    with pytest.raises(UserError, match="metrics.jsonl is missing, but the checkpoint is at epoch 2"):
        RunLogger(tmp_path, tensorboard=False, resume=True).truncate(2)


@pytest.mark.parametrize("record,what", [
    ("[]", "a JSON list"), ("null", "a JSON NoneType"), ('{"config": 5}', "'config': a JSON int"),
    ('{"data": [], "config": {}}', "'data': a JSON list"),
])
def test_a_provenance_record_that_is_not_an_object_is_named_on_resume(tmp_path, capsys, record, what):
    """provenance.json holding valid JSON of another shape ended in an AttributeError or TypeError traceback."""
    folder = fake_run(tmp_path / "run")
    folder.provenance_file("simclr").write_text(record + "\n")
    before = contents(folder.root)
    err = one_line(capsys, ["pretrain", "--resume", "--out", str(folder.root), "--data", "digits",
                            "--image-size", "16", "--n-blocks", "0", "--head-dims", "16,8", "--device", "cpu",
                            "--batch-size", "64", "--tsne-points", "0"])
    assert f"provenance.json is damaged: it holds {what}, not a provenance record" in err
    assert contents(folder.root) == before


TINY_RUN = ["run", "--preset", "digits-quick", "--train-limit", "300", "--epochs", "1", "--ae-epochs", "1",
            "--batch-size", "32", "--k", "32", "--linear-epochs", "2", "--finetune-head-epochs", "1",
            "--finetune-epochs", "1", "--supervised-epochs", "1", "--tsne-points", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finished") / "run"
    assert main([*TINY_RUN, "--out", str(root)]) == 0
    return root


@pytest.mark.parametrize("output,text,problem", [
    ("simclr/eval.json", "[]", "a JSON list, not an object"),
    ("supervised.json", "{bad", "Expecting property name"),
    ("supervised.json", '{"x": 1}', "no 'top1'"),
    ("pseudo_labels/pseudo_labels.json", '{"x": 1}', "no 'k'"),
])
def test_a_damaged_stage_output_is_named_on_resume(finished_run, tmp_path, capsys, output, text, problem):
    """A stage's JSON output that was not JSON or of another shape ended in a JSONDecodeError, TypeError,
    AttributeError or KeyError traceback when --resume reused the stage."""
    import shutil

    root = tmp_path / "run"
    shutil.copytree(finished_run, root)
    (root / output).write_text(text + "\n")
    outputs = lambda: {k: v for k, v in contents(root).items() if k not in ("run.json", ".lock")}  # noqa: E731
    before = outputs()
    err = one_line(capsys, [*TINY_RUN, "--resume", "--out", str(root)])
    assert f"{output} is damaged ({problem}" in err and "restore it, or " in err
    assert outputs() == before
    if "pseudo_labels" in output:   # new pseudo labels would not be those G-SimCLR's checkpoint was trained with
        assert "start a new run with another --out" in err
        return
    assert "delete it and --resume redoes what made it" in err
    (root / output).unlink()   # as the message says: --resume redoes that stage
    assert main([*TINY_RUN, "--resume", "--out", str(root)]) == 0
    assert (root / output).is_file()


@pytest.mark.parametrize("results", ['{"methods": {"simclr": 5}}', '{"methods": {"simclr": {"linear": {"P3": "x"}}}}',
                                     '{"methods": {}, "supervised": "x"}', '{"methods": {"simclr": {"knn": [1]}}}'])
def test_a_hand_edited_results_file_is_named_by_summarize_and_left_out_of_the_model_card(finished_run, tmp_path, capsys,
                                                                                       results):
    """results.json of the right top-level shape but odd values ended summarize (and export's model card) in an
    AttributeError or TypeError traceback."""
    import shutil

    root = tmp_path / "run"
    shutil.copytree(finished_run, root)
    (root / "results.json").write_text(results + "\n")
    err = one_line(capsys, ["summarize", str(root)])
    assert f"summarize: {root / 'results.json'} is damaged (" in err and "gsimclr run --resume --out" in err
    assert main(["export", str(root), "--format", "hf", "--output", str(tmp_path / "exp")]) == 0
    assert "(no results.json in the run folder" in (tmp_path / "exp" / "hf" / "README.md").read_text()


def test_summarize_prints_no_nan(tmp_path):
    from gsimclr.report import summarize_results

    results = [{"data": "d", "methods": {"simclr": {"knn": float("nan"), "linear": {"P3": 40.0}}}},
               {"data": "d", "methods": {"simclr": {"knn": float("nan"), "linear": {"P3": float("nan")}}}}]
    table = summarize_results(results)
    assert "nan" not in table and "n/a" in table and "40.00 (1 run n/a)" in table


def test_library_and_unconverted_os_errors_of_writes_are_one_line(tmp_path, monkeypatch, capsys):
    import torch

    import gsimclr.cli as cli
    from gsimclr.io import os_errno

    assert os_errno(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")) == 28
    assert os_errno(ValueError("shape mismatch")) is None

    def full(tensors, filename, metadata=None):  # safetensors' own error for ENOSPC
        Path(filename).write_bytes(b"x")
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("gsimclr.checkpoint.save_file", full)
    with pytest.raises(UserError, match="cannot write .*c.safetensors: No space left on device"):
        save_checkpoint(tmp_path / "c.safetensors", torch.nn.Linear(2, 2))
    assert list(tmp_path.iterdir()) == []

    def denied(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/file")

    monkeypatch.setattr(cli, "cmd_presets", denied)
    err = one_line(capsys, ["presets"])
    assert "cannot write /somewhere/file: Permission denied" in err


# ------------------------------------------------------------------- issue 19: backbone and export registries


def test_backbones_carry_their_export_target_and_a_new_one_is_one_registration(tmp_path):
    import torch

    from gsimclr.export import build_target, target_of, target_state_dict
    from gsimclr.models.registry import BACKBONES, create_backbone, register_backbone
    from gsimclr.models.resnet import TorchvisionResNet

    assert all(entry.export is not None for entry in BACKBONES.values())
    assert target_of("paper_resnet", 16, 0, shortcut_bn=False)["kwargs"] == {"n_blocks": 0, "shortcut_bn": False}

    @register_backbone("test_r18_cifar", export=lambda name, options: {"library": "torchvision", "name": "resnet18",
                                                                       "kwargs": {}, "cifar_stem": True})
    def _r18(**_):
        return TorchvisionResNet("resnet18", cifar_stem=True)

    register_backbone("test_no_target")(lambda **_: torch.nn.Identity())
    try:
        backbone = create_backbone("test_r18_cifar").eval()
        target = target_of("test_r18_cifar", 16)
        net = build_target(target).eval()
        net.load_state_dict(target_state_dict(backbone, target), strict=True)
        x = torch.randn(1, 3, 16, 16)
        with torch.no_grad():
            assert torch.allclose(net(x), backbone(x), atol=1e-6)
        with pytest.raises(UserError, match="has no export target"):
            target_of("test_no_target", 16)
    finally:
        del BACKBONES["test_r18_cifar"], BACKBONES["test_no_target"]


def test_resnet50_v1_stride_is_in_its_export_recipe():
    import torch

    from gsimclr.export import build_target, target_of, target_state_dict
    from gsimclr.models.registry import create_backbone

    backbone = create_backbone("resnet50", downsample_in_1x1=True).eval()
    target = target_of("resnet50", 64, downsample_in_1x1=True)
    net = build_target(target).eval()
    net.load_state_dict(target_state_dict(backbone, target), strict=True)
    namespace = {"state": target_state_dict(backbone, target)}
    exec(target["recipe"], namespace)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x), backbone(x), atol=1e-5)
        assert torch.allclose(namespace["net"].eval()(x), backbone(x), atol=1e-5)


def test_export_formats_are_a_registry_the_cli_reads(run, tmp_path, capsys):
    from gsimclr.cli import _subparsers, build_parser
    from gsimclr.export import EXPORT_FORMATS, ExportFormat
    from gsimclr.io import write_bytes

    help_text = _subparsers(build_parser())["export"].format_help()
    for name, entry in EXPORT_FORMATS.items():
        assert name in help_text and entry.help.split(",")[0][:20] in " ".join(help_text.split())

    def write_npz(job, folder):
        import io

        buffer = io.BytesIO()
        np.savez(buffer, **{k: v.numpy() for k, v in job.backbone.state_dict().items()})
        write_bytes(folder / "backbone.npz", buffer.getvalue())
        return {"npz": {"arrays": len(job.backbone.state_dict())}}

    EXPORT_FORMATS.register("npz", ExportFormat("backbone.npz, numpy arrays", ("backbone.npz",), write_npz))
    try:
        assert main(["export", str(run.root), "--output", str(tmp_path / "e"), "--format", "npz"]) == 0
        summary = json.loads((tmp_path / "e" / "export.json").read_text())
        assert summary["files"] == ["backbone.npz"] and summary["npz"]["arrays"] > 0
    finally:
        del EXPORT_FORMATS["npz"]
    err = one_line(capsys, ["export", str(run.root), "--output", str(tmp_path / "f"), "--format", "npz"])
    assert "--format must be among state_dict, hf, onnx" in err


def test_pretrain_uses_the_pipelines_resume_check(tmp_path, monkeypatch, capsys):
    import gsimclr.pipeline as pipeline

    def check(*args, **kwargs):
        raise UserError("the pipeline's check ran")

    monkeypatch.setattr(pipeline, "held_pseudo_labels", check)
    err = one_line(capsys, ["pretrain", "--data", "digits", "--method", "gsimclr", "--device", "cpu",
                            "--out", str(tmp_path / "r")])
    assert "the pipeline's check ran" in err
