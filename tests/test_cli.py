"""The command line: one-line errors with a non-zero exit, and a tiny end-to-end run."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gsimclr.cli import command_options, main
from gsimclr.config import FIELDS

TINY = ["--image-size", "16", "--n-blocks", "0", "--head-dims", "32,16,8", "--epochs", "1", "--batch-size", "64",
        "--ae-epochs", "1", "--k", "64", "--linear-epochs", "2", "--finetune-head-epochs", "1", "--finetune-epochs", "1",
        "--supervised-epochs", "1", "--knn-k", "10", "--device", "cpu", "--tsne-points", "100"]


def only(command: str, flags: list[str]) -> list[str]:
    """The flag/value pairs of ``flags`` that subcommand ``command`` takes."""
    accepted = {"--" + f.replace("_", "-") for f in command_options(command)}
    pairs = zip(flags[::2], flags[1::2])
    return [x for flag, value in pairs if flag in accepted for x in (flag, value)]


def _error_of(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("gsimclr: error:"), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("argv,needle", [
    (["run", "--data", "/no/such/path", "--out", "OUT"], "does not exist"),
    (["run", "--data", "digits", "--label-fraction", "1.5", "--out", "OUT"], "label-fraction"),
    (["run", "--data", "digits", "--label-fraction", "0", "--out", "OUT"], "label-fraction"),
    (["run", "--data", "digits", "--batch-size", "5000", "--out", "OUT"], "larger than the dataset"),
    (["run", "--data", "digits", "--epochs", "many", "--out", "OUT"], "--epochs"),
    (["run", "--data", "digits", "--augment", "fancy", "--out", "OUT"], "--augment"),
    (["run", "--preset", "no-such-preset", "--out", "OUT"], "unknown preset"),
    (["run", "--model", "vgg", "--out", "OUT"], "--model"),
    (["run", "--bogus-flag", "1"], "unrecognized arguments"),
    (["linear-eval", "--checkpoint", "OUT/none.safetensors"], "checkpoint not found"),
    (["frobnicate"], "invalid choice"),
])
def test_user_errors_are_one_line(capsys, tmp_path, argv, needle):
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    assert needle in _error_of(capsys, argv)


def test_folder_without_images(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    assert "no images" in _error_of(capsys, ["run", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])


def test_existing_run_folder_is_not_overwritten(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    assert "not empty" in _error_of(capsys, ["run", "--out", str(out)])
    assert (out / "results.json").read_text() == "{}"


def test_corrupt_image_skipped_or_refused(capsys, tmp_path):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(40):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    (tmp_path / "imgs" / "a" / "broken.png").write_bytes(b"\x89PNG garbage")
    err = _error_of(capsys, ["pretrain", "--data", str(tmp_path / "imgs"), "--on-corrupt", "error", *only("pretrain", TINY),
                             "--batch-size", "16", "--out", str(tmp_path / "o1")])
    assert "broken.png" in err
    code = main(["pretrain", "--data", str(tmp_path / "imgs"), *only("pretrain", TINY), "--batch-size", "16", "--out", str(tmp_path / "o2")])
    assert code == 0
    assert (tmp_path / "o2" / "simclr" / "checkpoint.safetensors").exists()


def test_end_to_end_run_prints_the_table(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--preset", "digits-quick", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for row in ("Linear P1", "Linear P2", "Linear P3", "kNN", "Fine-tune (10% labels)", "Fully supervised"):
        assert row in printed
    assert "| top-1 % | SimCLR | G-SimCLR |" in printed
    results = json.loads((out / "results.json").read_text())
    for method in ("simclr", "gsimclr"):
        r = results["methods"][method]
        assert set(r["linear"]) == {"P1", "P2", "P3"}
        assert all(0 <= v <= 100 for v in [*r["linear"].values(), r["knn"], r["finetune"]])
    assert 0 <= results["pseudo_labels"]["nmi"] <= 1
    for f in ("run.json", "config.yaml", "results.md", "loss_curves.png", "pseudo_labels/pseudo_labels.npy",
              "pseudo_labels/tsne_autoencoder.png", "simclr/tsne_encoder.png", "gsimclr/metrics.jsonl"):
        assert (out / f).exists(), f
    # the stage commands work on the run folder
    assert main(["knn", "--out", str(out), "--method", "gsimclr", "--knn-k", "5"]) == 0
    assert "knn" in json.loads((out / "gsimclr" / "knn.json").read_text())
    emb = tmp_path / "emb.npy"
    assert main(["embed", "--checkpoint", str(out / "simclr"), "--split", "test", "--point", "P1",
                 "--output", str(emb)]) == 0
    assert np.load(emb).shape == (360, 16)


def test_resume_completes_a_stopped_run(capsys, tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--preset", "digits-quick", *TINY, "--epochs", "2", "--methods", "simclr", "--out", str(out)]
    assert main(argv + ["--stop-after", "1"]) == 0
    assert "incomplete" in capsys.readouterr().out
    assert not (out / "results.json").exists()
    assert main(argv + ["--resume"]) == 0
    assert json.loads((out / "results.json").read_text())["methods"]["simclr"]["epochs"] == 2


def test_module_entry_point_and_presets():
    out = subprocess.run([sys.executable, "-m", "gsimclr", "presets"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for name in ("digits-quick", "paper-cifar10", "paper-imagenet5", "cifar10-resnet18"):
        assert name in out.stdout


def test_monitored_run_plots_knn_against_time(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--preset", "digits-quick", *TINY, "--epochs", "2", "--methods", "simclr",
                 "--monitor-every", "1", "--out", str(out)]) == 0
    records = [json.loads(x) for x in (out / "simclr" / "metrics.jsonl").read_text().splitlines()]
    assert [("knn" in r) for r in records] == [True, True]
    assert all(0 <= r["knn"] <= 100 for r in records) and records[1]["train_s"] > records[0]["train_s"]
    assert all(r["knn_k"] == 10 for r in records)  # the vote's k is recorded beside the accuracy
    assert (out / "knn_curves.png").exists()


def test_stage_commands_on_one_run_folder(tmp_path):
    out = str(tmp_path / "stages")
    base = ["--preset", "digits-quick", "--out", out]
    assert main(["pseudo-label", *base, *only("pseudo-label", TINY)]) == 0
    labels = np.load(tmp_path / "stages" / "pseudo_labels" / "pseudo_labels.npy")
    assert labels.shape == (1437,) and labels.max() < 64
    pretrain = [*base, *only("pretrain", TINY), "--method", "gsimclr"]
    assert main(["pretrain", *pretrain]) == 0                   # reuses those pseudo labels
    assert main(["pretrain", *pretrain]) == 2                   # refuses to overwrite it
    assert main(["linear-eval", "--out", out, "--method", "gsimclr", "--linear-epochs", "2"]) == 0
    linear = json.loads((tmp_path / "stages" / "gsimclr" / "linear.json").read_text())["linear"]
    assert set(linear) == {"P1", "P2", "P3"}
    assert main(["finetune", "--out", out, "--method", "gsimclr", "--label-fraction", "0.2"]) == 0
    assert 0 <= json.loads((tmp_path / "stages" / "gsimclr" / "finetune.json").read_text())["finetune"] <= 100
    assert main(["supervised", *base, *only("supervised", TINY)]) == 0
    assert json.loads((tmp_path / "stages" / "supervised.json").read_text())["epochs"] == 1


def test_each_subcommand_takes_only_its_options(capsys):
    assert "unrecognized arguments: --ae-noise" in _error_of(capsys, ["knn", "--ae-noise", "3"])
    assert "unrecognized arguments: --linear-epochs" in _error_of(capsys, ["pretrain", "--linear-epochs", "3"])
    # the message says which subcommands take a misplaced option, or the closest option of this one
    assert "--ae-noise is an option of gsimclr run / pseudo-label / pretrain, not of gsimclr knn" in _error_of(
        capsys, ["knn", "--ae-noise", "3"])
    assert "did you mean --cache-size?" in _error_of(capsys, ["pretrain", "--cache-dir", "x"])
    assert _error_of(capsys, ["pretrain", "stray"]).startswith("gsimclr: error: gsimclr pretrain: unrecognized")
    assert set(command_options("knn")) >= {"knn_k", "knn_temperature", "data", "seed"}
    assert not set(command_options("knn")) & {"ae_noise", "lr", "linear_epochs", "epochs"}
    assert set(command_options("run")) == set(json.loads(json.dumps(list(__import__("gsimclr.config").config.FIELDS))))


@pytest.mark.parametrize("argv,needle", [
    (["--lr", "-1"], "--lr must be > 0"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--head-dims", "0"], "--head-dims"),
    (["--temperature", "nan"], "--temperature"),
    (["--temperature", "inf"], "--temperature"),
    (["--momentum", "1.5"], "--momentum"),
    (["--device", "gpu0"], "--device"),
    (["--warmup-epochs", "20", "--epochs", "5"], "--warmup-epochs"),
    (["--image-size", "2"], "--image-size"),
    (["--k", "1"], "--k"),
])
def test_bad_values_fail_before_any_work(capsys, tmp_path, argv, needle):
    out = tmp_path / "out"
    assert needle in _error_of(capsys, ["run", *argv, "--out", str(out)])
    assert not out.exists()  # nothing was written


def test_bad_value_fails_fast_without_importing_torch():
    code = "import sys; from gsimclr.cli import main; rc = main(['run', '--lr', '-1']); print(rc, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False"], out.stdout + out.stderr


def test_help_lists_registry_choices_by_section():
    out = subprocess.run([sys.executable, "-m", "gsimclr", "pretrain", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0
    assert "contrastive pretraining options:" in out.stdout and "augmentation options:" in out.stdout
    assert "{sgd,lars,adam}" in out.stdout and "paper_resnet" in out.stdout
    assert "linear evaluation options" not in out.stdout


def test_every_option_shows_one_default_in_help():
    """Issue 26: a help that says its default in words (`(default: the batch size)`) is not followed by the
    field's own `(default: None)`; every option of every command shows one default."""
    from gsimclr import cli
    from gsimclr.cli import build_parser

    parser = build_parser()
    checked = 0
    for name, sub in cli._subparsers(parser).items():
        for action in sub._actions:
            if action.dest in FIELDS:
                assert action.help.count("(default") == 1, (name, action.option_strings, action.help)
                checked += 1
    assert checked > 300
    assert "(default: the batch size)" in cli._option_help("k") and "None" not in cli._option_help("k")


def test_encoder_and_file_pseudo_labels_with_attraction_end_to_end(capsys, tmp_path):
    """--pseudo-labels encoder (re-clustered during pretraining) and file:PATH (embeddings written by
    gsimclr embed, clustered), both with --guidance attract, from the command line."""
    enc = tmp_path / "enc"
    assert main(["run", "--preset", "digits-quick", *TINY, "--epochs", "2", "--methods", "gsimclr",
                 "--pseudo-labels", "encoder", "--recluster-warmup", "1", "--guidance", "attract",
                 "--out", str(enc)]) == 0
    printed = capsys.readouterr().out
    assert "| Same-class pairs / batch (random " in printed and "Pseudo labels (encoder, after epoch 1)" in printed
    records = [json.loads(x) for x in (enc / "gsimclr" / "metrics.jsonl").read_text().splitlines()]
    assert records[0].get("reclustered") == 1 and "pseudo_pairs_per_batch" in records[1]
    assert json.loads((enc / "results.json").read_text())["pseudo_labels"]["source"] == "encoder"
    assert not (enc / "pseudo_labels").exists()                 # nothing computed before pretraining
    assert (enc / "false_negatives.png").exists()
    emb = tmp_path / "emb.npy"
    assert main(["embed", "--checkpoint", str(enc / "gsimclr"), "--split", "train", "--output", str(emb)]) == 0
    out = tmp_path / "file"
    assert main(["pretrain", "--preset", "digits-quick", *only("pretrain", TINY), "--method", "gsimclr",
                 "--pseudo-labels", f"file:{emb}", "--k", "32", "--guidance", "attract", "--out", str(out)]) == 0
    described = json.loads((out / "pseudo_labels" / "pseudo_labels.json").read_text())
    assert described["k"] == 32 and described["source"] == f"file:{emb}" and 0 <= described["nmi"] <= 1
    record = json.loads((out / "gsimclr" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["class_pairs_in_loss"] <= record["class_pairs_per_batch"]
    assert "--pseudo-labels encoder: the labels are computed during" in _error_of(
        capsys, ["pseudo-label", "--preset", "digits-quick", "--pseudo-labels", "encoder", "--out", str(tmp_path / "x")])
    assert "--pseudo-labels must be autoencoder, encoder or file:PATH" in _error_of(
        capsys, ["run", "--preset", "digits-quick", "--pseudo-labels", "somewhere.npy", "--out", str(tmp_path / "y")])


@pytest.mark.parametrize("argv,needle", [
    # a negative number in scientific notation, or -inf, is a value (its range is checked), not an option
    (["run", "--weight-decay", "-1e-6"], "--weight-decay must be >= 0, got -1e-06"),
    (["run", "--lr", "-inf"], "--lr: invalid value '-inf'"),
    (["run", "--stop-after", "0"], "--stop-after must be >= 1"),
    (["run", "--stop-after", "-1"], "--stop-after must be >= 1"),
    (["pretrain", "--max-minutes", "-1"], "--max-minutes must be a finite number > 0"),
    (["run", "--max-minutes", "nan"], "--max-minutes must be a finite number > 0"),
    (["run", "--max-minutes", "inf"], "--max-minutes must be a finite number > 0"),
    (["run", "--data", ""], "--data needs a value"),
    (["run", "--model", " "], "--model needs a value"),
    (["run", "--preset", ""], "--preset needs a value"),
    (["presets", "--show", ""], "--show needs a preset"),
    (["run", "--methods", "simclr", "--sampler", "greedy"], "--sampler only affects the guided methods (G-SimCLR, "
     "G-MoCo: their batches and loss), but --methods simclr trains none; drop it or add gsimclr"),
    (["pretrain", "--method", "simclr", "--guidance", "attract"], "--guidance only affects the guided methods"),
    (["pretrain", "--method", "moco", "--guidance", "mask"], "drop it or use --method gmoco"),
    (["run", "--methods", "simclr,moco", "--guidance", "mask"], "drop it or add gsimclr or gmoco"),
    (["run", "--label-sampling", "uniform_replace"], "--label-sampling uniform_replace"),
    (["embed", "--output", "features.txt"], "--output must be a file ending in .npy or .parquet"),
    (["embed", "--output", ""], "--output must be a file ending in .npy or .parquet"),
    # a doubled or trailing comma was dropped silently: 256,,50 built a 256,50 head
    (["pretrain", "--preset", "digits-quick", "--epochs", "1", "--ae-epochs", "1", "--train-limit", "200", "--head-dims", "256,,50"],
     "--head-dims: invalid value '256,,50' (an empty item between commas)"),
    (["pretrain", "--preset", "digits-quick", "--epochs", "1", "--ae-epochs", "1", "--train-limit", "200", "--head-dims", "32,16,"],
     "--head-dims: invalid value '32,16,' (an empty item between commas)"),
    # past 2**64 - 1 PyTorch's seeding raised a traceback (and seed + 1 of the fine-tuning past 2**64 - 2)
    (["pretrain", "--preset", "digits-quick", "--epochs", "1", "--ae-epochs", "1", "--train-limit", "200", "--seed", "18446744073709551616"],
     "--seed must be <= 4294967295, got 18446744073709551616"),
    # sizes past what any machine holds were tracebacks: numpy's MemoryError, PyTorch's allocator or overflow
    (["pretrain", "--preset", "digits-quick", "--epochs", "1", "--ae-epochs", "1", "--train-limit", "200", "--head-dims", "99999999999999999999"], "--head-dims widths must be >= 1 and <= 16777216"),
    (["pretrain", "--preset", "digits-quick", "--epochs", "1", "--ae-epochs", "1", "--train-limit", "200", "--cache-size", "99999999999999999999"], "--cache-size must be <= 65536"),
    # --n-blocks 100000 spent many minutes building a model that could not train
    (["pretrain", "--preset", "digits-quick", "--epochs", "1", "--ae-epochs", "1", "--train-limit", "200", "--n-blocks", "100000"], "--n-blocks must be <= 1000, got 100000"),
    (["supervised", "--preset", "digits-quick", "--supervised-n-blocks", "1001"], "--supervised-n-blocks must be <= 1000, got 1001"),
    # --methods dropped a blank item (simclr,,gsimclr) where --head-dims refuses it
    (["run", "--preset", "digits-quick", "--methods", "simclr,,gsimclr"], "--methods: invalid value 'simclr,,gsimclr' (an empty item between commas)"),
    (["run", "--preset", "digits-quick", "--methods", "simclr,"], "--methods: invalid value 'simclr,' (an empty item between commas)"),
    # --resume belongs to the commands that continue a run's stages; a reading command ignored it
    (["knn", "--resume"], "unrecognized arguments: --resume"),
    (["embed", "--output", "f.npy", "--resume"], "unrecognized arguments: --resume"),
    (["supervised", "--resume"], "unrecognized arguments: --resume"),
])
def test_more_user_errors_are_one_line(capsys, tmp_path, argv, needle):
    out = tmp_path / "out"
    assert needle in _error_of(capsys, [*argv, "--out", str(out)] if argv[0] != "presets" else argv)
    assert not out.exists()


def test_out_of_memory_is_one_line(capsys, tmp_path):
    """Options asking for more memory than the machine has (here 1,437 decoded digits at 65536 px, 5.6 TiB)
    ended in numpy's MemoryError traceback (PyTorch's allocator and a GPU's OutOfMemoryError alike)."""
    err = _error_of(capsys, ["pretrain", "--preset", "digits-quick", "--epochs", "1", "--ae-epochs", "1", "--train-limit", "200", "--cache-size", "65536", "--out", str(tmp_path / "out")])
    assert "out of memory (Unable to allocate" in err and "--cache-size" in err


@pytest.mark.parametrize("argv,needle", [
    # an empty path was read as "not given": --out "" wrote runs/<preset>-<time>, export --output "" the current folder
    (["pretrain", "--preset", "digits-quick", "--epochs", "1", "--train-limit", "200", "--out", ""],
     "--out needs a value, got an empty string"),
    (["pretrain", "--preset", "digits-quick", "--epochs", "1", "--train-limit", "200", "--out", " "],
     "--out needs a value, got an empty string"),
    (["linear-eval", "--checkpoint", ""], "--checkpoint needs a value, got an empty string"),
    (["export", "RUN", "--output", ""], "--output needs a value, got an empty string"),
    (["export", ""], "CHECKPOINT needs a value, got an empty string"),
    (["summarize", "RUN", "", "--output", "x.md"], "RUNS needs a value, got an empty string"),
    (["summarize", "RUN", "--output", ""], "--output needs a value, got an empty string"),
])
def test_empty_paths_are_refused_not_read_as_not_given(capsys, tmp_path, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)   # an empty --out or --output meant a folder here
    run = tmp_path / "run"
    run.mkdir()
    assert needle in _error_of(capsys, [str(run) if a == "RUN" else a for a in argv])
    assert [p.name for p in tmp_path.iterdir()] == ["run"] and not any(run.iterdir())


def test_a_leading_tilde_is_the_home_folder_in_every_path(capsys, tmp_path, monkeypatch):
    """--data and --init expanded ~, but --out=~/run (which the shell leaves as it is) made a folder named ~
    in the current one, and --checkpoint, summarize's runs and --output, --pseudo-labels file:~/... were
    not found."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    quick = ["--preset", "digits-quick", "--epochs", "1", "--ae-epochs", "1", "--train-limit", "200"]
    assert main(["pretrain", *quick, "--out=~/run"]) == 0
    assert (home / "run" / "simclr" / "checkpoint.safetensors").is_file() and not any(work.iterdir())
    capsys.readouterr()
    np.save(home / "labels.npy", np.zeros(10, np.int64))
    err = _error_of(capsys, ["pretrain", *quick, "--method", "gsimclr", "--k", "16", "--pseudo-labels",
                             "file:~/labels.npy", "--out", str(tmp_path / "other")])
    assert "holds 10 rows for" in err   # found and read
    err = _error_of(capsys, ["summarize", "~/run", "--output", "~/table.md"])
    assert f"summarize: {home / 'run'} has no results.json" in err
    assert not any(work.iterdir())


def test_preset_file_errors_name_the_file(capsys, tmp_path):
    bad_type = tmp_path / "bad.yaml"
    bad_type.write_text("epochs: many\n")
    bad_range = tmp_path / "range.yaml"
    bad_range.write_text("lr: -1\n")
    no_suffix = tmp_path / "recipe"
    no_suffix.write_text("epochs: 2\n")
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    assert f"preset {bad_type}: --epochs: invalid value 'many'" in _error_of(capsys, ["run", "--preset", str(bad_type)])
    assert f"preset {bad_range}: --lr must be > 0" in _error_of(capsys, ["run", "--preset", str(bad_range)])
    assert "is a folder, not a YAML file" in _error_of(capsys, ["run", "--preset", str(folder)])
    assert "preset file not found" in _error_of(capsys, ["run", "--preset", str(tmp_path / "missing")])
    assert main(["presets", "--show", str(no_suffix)]) == 0  # a YAML file without the suffix is still a file
    assert "epochs: 2" in capsys.readouterr().out


def test_embed_output_checked_before_loading_anything(capsys, tmp_path):
    (tmp_path / "feats.npy").mkdir()
    # no checkpoint exists: the --output problem is reported first, before any checkpoint or data is read
    assert "is a folder" in _error_of(capsys, ["embed", "--checkpoint", str(tmp_path / "none"),
                                               "--output", str(tmp_path / "feats.npy")])


def test_knn_k_larger_than_the_training_set_is_refused(capsys, tmp_path):
    out = tmp_path / "run"
    tiny = only("pretrain", TINY)
    assert main(["pretrain", *tiny, "--out", str(out), "--method", "simclr"]) == 0
    capsys.readouterr()
    err = _error_of(capsys, ["knn", "--out", str(out), "--knn-k", "100000", "--device", "cpu"])
    assert "--knn-k 100000 is larger than the training set" in err
    assert not (out / "simclr" / "knn.json").exists()
    # run checks it before pretraining anything
    err = _error_of(capsys, ["run", *TINY, "--knn-k", "100000", "--out", str(tmp_path / "r2")])
    assert "--knn-k 100000 is larger" in err and not (tmp_path / "r2").exists()


def test_label_fraction_leaving_a_class_empty_is_said():
    """A uniform draw may miss classes (that is the protocol), but the user is told how many."""
    from gsimclr.evaluation.notebook import sample_labelled
    from gsimclr.evaluation.standard_linear import label_fraction_indices

    labels = np.repeat(np.arange(10), 100)
    with pytest.warns(UserWarning, match="leaves 9 of 10 classes without one"):
        assert len(label_fraction_indices(labels, 0.001, "uniform")) == 1
    with pytest.warns(UserWarning, match="classes without one"):
        sample_labelled(labels, 0.001, "uniform_replace", 0)
    assert len(np.unique(labels[label_fraction_indices(labels, 0.001, "stratified")])) == 10
    assert len(label_fraction_indices(labels, 0.5, "uniform")) == 500


def test_sigterm_during_pretraining_exits_with_one_line_and_resumes(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "gsimclr", "pretrain", "--data", "digits", "--device", "cpu", "--batch-size", "32",
            "--n-blocks", "0", "--image-size", "16", "--head-dims", "32,16,8", "--epochs", "50", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "simclr" / "provenance.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == [err.strip()] and err.startswith("gsimclr: terminated"), err
    assert not list(out.rglob(".*.tmp"))  # nothing half-written
    # the folder is resumable: --resume continues it (to 1 epoch here, --epochs may change on --resume)
    done = subprocess.run([*argv[:-4], "--epochs", "1", "--out", str(out), "--resume"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "simclr" / "checkpoint.safetensors").exists() and not list(out.rglob(".*.tmp"))


def test_a_diverged_pretraining_names_both_options_that_cause_it(capsys, tmp_path):
    """A NaN loss was blamed on --lr alone, also when a tiny --temperature (1e-300: 0 in float32) caused it."""
    err = _error_of(capsys, ["pretrain", "--preset", "digits-quick", "--epochs", "1", "--ae-epochs", "1",
                             "--train-limit", "128", "--temperature", "1e-300", "--device", "cpu",
                             "--out", str(tmp_path / "out")])
    assert "pretraining diverged at epoch 1" in err and "--lr (now" in err and "--temperature" in err


def test_preset_typos_and_repeated_keys_are_named(capsys, tmp_path):
    """A mistyped preset name or option suggests the closest; a key given twice is refused (YAML alone keeps
    the last value without a word), while YAML's merge keys still override; a preset of another shape says
    what it found."""
    for typed in ("paper-cifar1", "paper_cifar10", "PAPER-CIFAR10"):
        err = _error_of(capsys, ["presets", "--show", typed])
        assert f"unknown preset {typed!r} (did you mean 'paper-cifar10'?); choose one of" in err, err
    assert "(did you mean" not in _error_of(capsys, ["presets", "--show", "xyz"])
    typo, twice, merged, scalar = (tmp_path / n for n in ("typo.yaml", "twice.yaml", "merged.yaml", "scalar.yaml"))
    typo.write_text("lrr: 0.1\n")
    twice.write_text("epochs: 2\nlr: 0.1\nlr: 0.2\n")
    merged.write_text("base: &b {lr: 0.5, epochs: 3}\n")
    scalar.write_text("lr = 0.1\n")
    assert f"preset {typo}: unknown option 'lrr' (did you mean 'lr'?)" in _error_of(capsys, ["run", "--preset", str(typo)])
    assert f"preset {twice}: option 'lr' is given twice (line 3); keep one" in \
        _error_of(capsys, ["run", "--preset", str(twice)])
    assert f"preset {scalar} must be a YAML mapping of options (one 'option: value' a line), not a str" in \
        _error_of(capsys, ["run", "--preset", str(scalar)])
    from gsimclr.config import _preset_mapping

    merged.write_text("base: &b {lr: 0.5, epochs: 3}\nrun:\n  <<: *b\n  lr: 0.2\n")
    assert _preset_mapping(str(merged))["run"] == {"lr": 0.2, "epochs": 3}
