"""Plug-ins from outside the package: the walk-through of docs/extending.md (a method, a loss and a
sampler, each one file in a temporary folder) trains from ``gsimclr pretrain`` and ``gsimclr run``
and appears in the generated CLI reference, with no edit to gsimclr; entry points and failures.

Every plug-in runs in a subprocess, so that its registrations never reach the other tests' registries."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples" / "plugins"
SMALL = ["--data", "digits", "--image-size", "16", "--train-limit", "160", "--test-limit", "64", "--epochs", "1",
         "--batch-size", "32", "--device", "cpu", "--optimizer", "adam", "--lr", "1e-3", "--tsne-points", "0"]


def _gsimclr(args, path, env_plugins="", module="gsimclr", timeout=900):
    """``python -m module args`` (module None: ``python args``) with ``path`` and gsimclr's src on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), str(ROOT / "src")]), "OMP_NUM_THREADS": "1",
           "GSIMCLR_PLUGINS": env_plugins}
    command = [sys.executable, *(["-m", module] if module else []), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=path)


@pytest.fixture
def plugins(tmp_path):
    """The walk-through's three modules, copied into a folder of their own (not gsimclr's)."""
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("simsiam_plugin.py", "align_uniform_plugin.py", "interleave_plugin.py"):
        shutil.copy(EXAMPLES / name, folder / name)
    return folder


def test_walkthrough_plugins_pretrain_run_and_document(plugins, tmp_path):
    every = "simsiam_plugin,align_uniform_plugin,interleave_plugin"
    done = _gsimclr(["pretrain", *SMALL, "--plugin", "simsiam_plugin", "--method", "simsiam", "--predictor-dim", "32",
                     "--out", str(tmp_path / "p")], plugins)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p" / "simsiam" / "checkpoint.safetensors").exists()
    provenance = json.loads((tmp_path / "p" / "simsiam" / "provenance.json").read_text())
    assert provenance["config"]["predictor_dim"] == 32   # the method's option is part of what its stage is made of

    fast = ["--linear-epochs", "2", "--finetune-head-epochs", "1", "--finetune-epochs", "0", "--supervised-epochs", "1",
            "--knn-k", "5", "--ae-epochs", "1", "--k", "8"]
    done = _gsimclr(["run", *SMALL, *fast, "--methods", "simsiam,gsimclr", "--loss", "align_uniform", "--uniform-t", "3",
                     "--sampler", "interleave", "--interleave-order", "random", "--out", str(tmp_path / "r")],
                    plugins, env_plugins=every)
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "r" / "results.md").read_text()
    assert "SimSiam" in table and "G-SimCLR" in table
    config = (tmp_path / "r" / "config.yaml").read_text()
    assert "uniform_t: 3.0" in config and "interleave_order: random" in config and "predictor_dim: 64" in config
    metrics = [json.loads(line) for line in (tmp_path / "r" / "gsimclr" / "metrics.jsonl").read_text().splitlines()]
    assert metrics and all(m["loss"] == m["loss"] for m in metrics)  # finite, trained with the plug-in loss

    page = tmp_path / "cli.md"
    done = _gsimclr(["--plugin", "simsiam_plugin", "--output", str(page)], plugins, env_plugins="align_uniform_plugin,"
                    "interleave_plugin", module="gsimclr.docs_cli")
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    for row in ("| `--predictor-dim` | int, >= 1 |", "| `--uniform-t` | float, > 0 |", "| `--interleave-order` | str |"):
        assert text.count(row) == 2, row  # under gsimclr run and gsimclr pretrain
    assert "`align_uniform`" in text and "`interleave`" in text and "simsiam" in text


def test_a_plugins_options_checks_and_refusals_come_before_any_data(plugins):
    cases = {  # argv -> the one line it gets
        ("pretrain", "--uniform-t", "3"): "--uniform-t only affects --loss align_uniform, not --loss ntxent; drop it "
                                          "or choose --loss align_uniform",
        ("pretrain", "--loss", "align_uniform", "--uniform-t", "0"): "--uniform-t must be > 0, got 0.0",
        ("pretrain", "--method", "gsimclr", "--loss", "align_uniform", "--guidance", "mask"):
            "--guidance mask with --loss align_uniform: it reads no pseudo labels; use --guidance none",
        ("pretrain", "--method", "simsiam", "--views", "3"): "--views 3: SimSiam compares two views",
        ("pretrain", "--predictor-dim", "8"): "--predictor-dim only affects simsiam, which this command does not train",
        ("pretrain", "--method", "gsimclr", "--interleave-order", "random"):
            "--interleave-order only affects --sampler interleave, not --sampler spread; drop it or choose "
            "--sampler interleave",
        ("knn", "--uniform-t", "3"): "unrecognized arguments: --uniform-t 3 (--uniform-t is an option of gsimclr run",
    }
    code = f"""
import contextlib, io, json, sys
from gsimclr.cli import main
out = []
for argv in {[list(a) for a in cases]!r}:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        out.append([main(argv + ["--data", "/no/such/data"]), err.getvalue()])
print(json.dumps([out, "torch" in sys.modules]))"""
    done = _gsimclr(["-c", code], plugins, env_plugins="simsiam_plugin,align_uniform_plugin,interleave_plugin",
                    module=None)
    assert done.returncode == 0, done.stderr
    results, _ = json.loads(done.stdout.splitlines()[-1])  # (the plug-ins' own modules import PyTorch)
    for (argv, expected), (rc, err) in zip(cases.items(), results):
        assert rc == 2 and err.count("\n") == 1 and expected in err, (argv, err)


def test_an_entry_point_plugin_is_loaded_without_a_flag(plugins, tmp_path):
    """A tiny installed distribution: its module and a .dist-info with entry_points.txt on the path."""
    site = tmp_path / "site"
    info = site / "gsimclr_interleave-0.1.dist-info"
    info.mkdir(parents=True)
    shutil.copy(plugins / "interleave_plugin.py", site / "interleave_plugin.py")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gsimclr-interleave\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[gsimclr.plugins]\ninterleave = interleave_plugin\n")
    done = _gsimclr(["pretrain", *SMALL, "--method", "gsimclr", "--sampler", "interleave", "--pseudo-labels", "encoder",
                     "--recluster-warmup", "0", "--k", "8", "--out", str(tmp_path / "p")], site)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p" / "gsimclr" / "checkpoint.safetensors").exists()


def test_a_plugin_that_fails_to_import_is_one_line(tmp_path):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('needs a GPU driver\\nsecond line')\n")
    (tmp_path / "clash_plugin.py").write_text(
        "from gsimclr.loss import LOSSES, Loss\nfrom gsimclr.options import Option\n"
        "LOSSES.register('clash', Loss('clash', lambda cfg: None, options=(Option('lr', 0.1, 'again'),)))\n")
    for argv, env, expected in (
            (["pretrain", "--plugin", "no_such_plugin"], "",
             "plug-in no_such_plugin failed to import: ModuleNotFoundError: No module named 'no_such_plugin'"),
            (["knn"], "broken_plugin", "plug-in broken_plugin failed to import: RuntimeError: needs a GPU driver"),
            (["presets", "--plugin=clash_plugin"], "",
             "plug-in clash_plugin failed to import: ValueError: loss 'clash' declares option 'lr', a core option")):
        done = _gsimclr(argv, tmp_path, env_plugins=env)
        assert done.returncode == 2 and done.stderr == f"gsimclr: error: {expected}\n", done.stderr


def _code_lines(text):
    lines = (line.split("  #")[0].rstrip() for line in text.splitlines())
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_the_walkthrough_shows_the_files_the_test_runs():
    """Every code line of docs/extending.md's walk-through is a line of the plug-ins tests run."""
    import re

    page = (ROOT / "docs" / "extending.md").read_text()
    walkthrough = page[page.index("## Walk-through"):page.index("## A method")]
    blocks = re.findall(r"```python\n(.*?)```", walkthrough, re.DOTALL)
    assert len(blocks) == 3
    source = set(_code_lines("\n".join(p.read_text() for p in EXAMPLES.glob("*_plugin.py"))))
    for block in blocks:
        missing = [line for line in _code_lines(block) if line not in source]
        assert not missing, missing
