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


def test_a_plugin_is_a_module_a_py_file_or_a_package_folder_and_bad_ones_are_one_line(plugins, tmp_path):
    """``--plugin path/to/mine.py`` (and a package folder) loads the file as module ``mine``; a missing path,
    a folder without ``__init__.py``, a file that is not Python, an odd file name, a name taken by another
    module, sys.exit() at import and a plug-in that registers nothing are one line each."""
    (tmp_path / "pkg" / "mine_pkg").mkdir(parents=True)
    (tmp_path / "pkg" / "mine_pkg" / "__init__.py").write_text(
        "from gsimclr.loss import LOSSES, Loss\nLOSSES.register('pkg_loss', Loss('pkg', lambda cfg: None))\n")
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "empty_plugin.py").write_text("x = 1\n")
    (tmp_path / "loose" / "notes.txt").write_text("x\n")
    (tmp_path / "loose" / "my-plugin.py").write_text("x = 1\n")
    (tmp_path / "loose" / "json.py").write_text("x = 1\n")
    (tmp_path / "loose" / "exits_plugin.py").write_text("import sys\nsys.exit(3)\n")
    simsiam = str(plugins / "simsiam_plugin.py")
    code = f"""
import contextlib, io, json, os
from gsimclr.cli import main
from gsimclr.plugins import loaded_modules
out = []
for argv in {[
        ["pretrain", "--plugin", simsiam, "--method", "simsiam", "--predictor-dim", "8"],
        ["pretrain", "--plugin", str(tmp_path / "pkg" / "mine_pkg"), "--plugin", simsiam, "--loss", "pkg_loss"],
        ["presets", "--plugin", str(tmp_path / "nowhere.py")],
        ["presets", "--plugin", str(tmp_path / "loose")],
        ["presets", "--plugin", str(tmp_path / "loose" / "notes.txt")],
        ["presets", "--plugin", str(tmp_path / "loose" / "my-plugin.py")],
        ["presets", "--plugin", str(tmp_path / "loose" / "json.py")],
        ["presets", "--plugin", str(tmp_path / "loose" / "exits_plugin.py")],
        ["presets", "--plugin", "loose"],
        ["presets", "--plugin", "not a module"],
        ["presets", "--plugin", str(tmp_path / "loose" / "empty_plugin.py")]]!r}:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        out.append([main(argv + ["--data", "/no/such/data"] if argv[0] == "pretrain" else argv), err.getvalue()])
print(json.dumps([out, loaded_modules()]))"""
    done = _gsimclr(["-c", code], tmp_path, module=None)
    assert done.returncode == 0, done.stderr
    results, loaded = json.loads(done.stdout.splitlines()[-1])
    expected = [
        "data path does not exist: /no/such/data",   # --method simsiam and --predictor-dim were taken
        "data path does not exist: /no/such/data",   # so was --loss pkg_loss; the file loaded once, not twice
        f"plug-in {tmp_path / 'nowhere.py'}: no such file or folder",
        f"plug-in {tmp_path / 'loose'} is a folder without __init__.py; give the plug-in's .py file",
        f"plug-in {tmp_path / 'loose' / 'notes.txt'} is not a Python file (.py) nor a module name",
        "'my-plugin' is not a Python module name; rename it",
        "a module named json is imported already (from ",
        "failed to import: it called sys.exit(3)",
        "plug-in loose: it is a folder without __init__.py (a namespace package), not a plug-in module",
        "plug-in 'not a module' is neither a module name (such as mine or mypackage.mine) nor a .py file",
        f"gsimclr: warning: plug-in {tmp_path / 'loose' / 'empty_plugin.py'} registered nothing"]
    for (rc, err), needle in zip(results, expected):
        assert err.count("\n") == 1 and needle in err, (needle, err)
        assert rc == (0 if "warning" in needle else 2), err
    # absolute paths in load order: what --jobs workers load again and run.json records
    assert loaded == [simsiam, str(tmp_path / "pkg" / "mine_pkg"), str(tmp_path / "loose" / "empty_plugin.py")]


def test_registrations_a_command_line_cannot_use_are_refused_naming_who_registered(tmp_path):
    """An entry name with a space, a comma, a capital or nothing; a name a built-in or another plug-in took;
    a method whose record is not one or names a bad recipe; an option named like the command line's own
    flags or shadowing Config's methods: each plug-in is refused in one line, and nothing half-registers."""
    head = "from gsimclr.loss import LOSSES, Loss\nfrom gsimclr.methods import METHODS, Method\n" \
           "from gsimclr.options import Option\n"
    cases = {
        "LOSSES.register('my loss', Loss('x', lambda cfg: None))":
            "loss name 'my loss' is not allowed: use lowercase letters, digits and _ . + - (such as 'my_loss')",
        "LOSSES.register('MyLoss', Loss('x', lambda cfg: None))": "loss name 'MyLoss' is not allowed",
        "LOSSES.register('a,b', Loss('x', lambda cfg: None))": "loss name 'a,b' is not allowed",
        "LOSSES.register('', Loss('x', lambda cfg: None))": "loss name '' is not allowed",
        "LOSSES.register('ntxent', Loss('x', lambda cfg: None))":
            "loss 'ntxent' is registered twice (gsimclr registered it already); choose another name",
        "METHODS.register('pseudo_labels', Method('pseudo_labels', 'P', guided=False))":
            "method name 'pseudo_labels' is reserved",
        "METHODS.register('aa', Method('bb', 'B', guided=False))": "method 'aa': its Method is named 'bb'",
        "METHODS.register('cc', Method('cc', 'C', guided=False, recipe='oops'))":
            "method 'cc': recipe must be 'module:Class'",
        "LOSSES.register('l1', Loss('x', lambda cfg: None, options=(Option('out', 1, 'h'),)))":
            "option name 'out' is taken by the command line's own --out; choose another name",
        "LOSSES.register('l2', Loss('x', lambda cfg: None, options=(Option('validate', 1, 'h'),)))":
            "loss 'l2' declares option 'validate', the name of Config.validate; choose another name",
        "LOSSES.register('l3', Loss('x', lambda cfg: None, options=(Option('Lr', 1, 'h'),)))":
            "option name 'Lr' must be lowercase",
    }
    for i, body in enumerate(cases):
        (tmp_path / f"bad{i}_plugin.py").write_text(head + body + "\n")
    (tmp_path / "first_plugin.py").write_text(head + "LOSSES.register('dupe', Loss('x', lambda cfg: None))\n")
    (tmp_path / "second_plugin.py").write_text(head + "LOSSES.register('dupe', Loss('y', lambda cfg: None))\n")
    for i, expected in enumerate(cases.values()):
        done = _gsimclr(["presets", "--plugin", f"bad{i}_plugin"], tmp_path)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr
    done = _gsimclr(["presets"], tmp_path, env_plugins="first_plugin,second_plugin")
    assert done.stderr == ("gsimclr: error: plug-in second_plugin failed to import: ValueError: loss 'dupe' is "
                           "registered twice (plug-in first_plugin registered it already); choose another name\n")
    code = head + """
from gsimclr.config import FIELDS
try:
    LOSSES.register('l2', Loss('x', lambda cfg: None, options=(Option('validate', 1, 'h'),)))
except ValueError:
    pass
LOSSES.register('l2', Loss('x', lambda cfg: None, options=(Option('fine', 1, 'h'),)))
print('validate' in FIELDS, 'fine' in FIELDS, LOSSES.origins['l2'])"""
    done = _gsimclr(["-c", code], tmp_path, module=None)
    assert done.stdout.split() == ["False", "True", "gsimclr"], done.stderr   # the refused one left nothing


def test_command_flags_lists_every_argument_that_is_no_option():
    from gsimclr.cli import _subparsers, build_parser
    from gsimclr.config import FIELDS
    from gsimclr.options import COMMAND_FLAGS

    parser = build_parser()
    dests = {a.dest for p in [parser, *_subparsers(parser).values()] for a in p._actions} - {"help", "version"}
    assert dests - set(FIELDS) <= COMMAND_FLAGS


def test_a_plugin_loss_or_method_that_cannot_train_is_one_line(tmp_path):
    """A loss that returns a vector, a number or a detached tensor, a builder that returns nothing, and a
    method recipe that is missing or lacks its hooks: one line naming it, not a traceback from the trainer."""
    (tmp_path / "odd_plugin.py").write_text("""
import torch
from gsimclr.loss import LOSSES, Loss
from gsimclr.methods import METHODS, Method
from gsimclr.methods.base import Recipe

class Vector(torch.nn.Module):
    def forward(self, views, pseudo_labels=None):
        return views.float().pow(2).sum(-1).mean(0)

class Number(torch.nn.Module):
    def forward(self, views, pseudo_labels=None):
        return 3

class Detached(torch.nn.Module):
    def forward(self, views, pseudo_labels=None):
        return views.detach().float().pow(2).mean()

class NotFinite(torch.nn.Module):
    def forward(self, views, pseudo_labels=None):
        return views.float().pow(2).mean() * float("nan")

class Half(Recipe):
    def build_model(self, cfg):
        raise AssertionError

LOSSES.register("vector", Loss("v", lambda cfg: Vector()))
LOSSES.register("number", Loss("n", lambda cfg: Number()))
LOSSES.register("detached", Loss("d", lambda cfg: Detached()))
LOSSES.register("nothing", Loss("n", lambda cfg: None))
LOSSES.register("nan", Loss("nan", lambda cfg: NotFinite()))
METHODS.register("half", Method("half", "Half", guided=False, recipe=f"{__name__}:Half", default=False))
METHODS.register("nowhere", Method("nowhere", "Nowhere", guided=False, recipe=f"{__name__}:Nope", default=False))
""")
    tiny = [*SMALL, "--train-limit", "64", "--model", "paper_resnet", "--n-blocks", "0", "--head-dims", "16,8"]
    for extra, expected in (
            (["--loss", "vector"], "the loss of SimCLR (Vector) returned a tensor of shape (32,), not a scalar tensor: "
                                   "reduce it to one number (e.g. .mean())"),
            (["--loss", "number"], "the loss of SimCLR (Number) returned int 3, not a scalar tensor"),
            (["--loss", "detached"], "returned a tensor that does not depend on the model's parameters (detached?)"),
            (["--loss", "nothing"], "--loss nothing: its build function returned NoneType, not a criterion"),
            (["--loss", "nan"], "pretraining diverged at epoch 1 (loss nan); lower --lr (now 0.001), or raise "
                                "--temperature if it is tiny; or check that --loss nan (plug-in odd_plugin) gives a "
                                "finite loss"),
            (["--method", "half"], "method half: recipe 'odd_plugin:Half': Half does not define build_criterion, "
                                   "make_loss_fn"),
            (["--method", "nowhere"], "method nowhere: recipe 'odd_plugin:Nope': module odd_plugin has no Nope")):
        done = _gsimclr(["pretrain", *tiny, *extra, "--out", str(tmp_path / extra[1])], tmp_path,
                        env_plugins="odd_plugin")
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr


def test_reading_a_run_made_with_a_plugin_that_is_not_loaded_names_it(tmp_path, capsys):
    """run.json records the plug-ins a run was made with; a command on that run without them (an unknown
    --method, an option of its config.yaml, no checkpoint of a known method) says which to add. (Not one to
    load by itself: a run folder from elsewhere must not run code.)"""
    from gsimclr.cli import main
    from gsimclr.pipeline import write_run_info
    from gsimclr.config import load_config

    run = tmp_path / "run"
    run.mkdir()
    write_run_info(run, load_config(None, {"data": "digits"}), ["pretrain"])
    assert json.loads((run / "run.json").read_text())["plugins"] == []
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "plugins": ["simsiam_plugin"]}))
    (run / "simsiam").mkdir()
    (run / "simsiam" / "checkpoint.safetensors").write_bytes(b"")
    (run / "config.yaml").write_text("data: digits\npredictor_dim: 64\n")
    hint = f"(the run in {run} was made with plug-in simsiam_plugin, not loaded now: add --plugin simsiam_plugin)"
    for argv in (["knn", "--out", str(run), "--method", "simsiam"],
                 ["pretrain", f"--preset={run / 'config.yaml'}", "--out", str(run), "--resume"],
                 ["export", str(run)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.rstrip().endswith(hint), err
    (run / "run.json").write_text(json.dumps({"command": "gsimclr pretrain --plugin 'my dir/mine.py' --method x"}))
    assert main(["knn", "--out", str(run), "--method", "simsiam"]) == 2   # a run made before run.json said it
    assert "made with plug-in my dir/mine.py, not loaded now: add --plugin 'my dir/mine.py')" in capsys.readouterr().err
