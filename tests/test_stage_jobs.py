"""``gsimclr run --jobs N`` (gsimclr.stage_jobs): the stages in worker processes give the files and the table
of one stage after another; a plug-in's method trains in a worker; a worker's failure is the command's
one line; SIGTERM or SIGKILL of the command ends every worker, and --resume gives the uncut table."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gsimclr.config import load_config
from gsimclr.errors import UserError
from gsimclr.stage_jobs import SUPERVISED, Job, run_jobs, stage_graph

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--preset", "digits-quick", "--train-limit", "192", "--test-limit", "96", "--epochs", "2", "--batch-size", "32",
        "--k", "8", "--ae-epochs", "1", "--linear-epochs", "1", "--finetune-head-epochs", "1", "--finetune-epochs", "1",
        "--supervised-epochs", "1", "--tsne-points", "0", "--knn-k", "5", "--device", "cpu"]
VOLATILE = {"pretrain_s", "images_per_s", "seconds"}


def gsimclr(*args: str, path: Path | None = None, **kwargs) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([*([str(path)] if path else []), str(ROOT / "src")])}
    argv = [sys.executable, "-m", "gsimclr", "run", *args]
    if kwargs.pop("background", False):
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, **kwargs)


def stable(results: dict) -> dict:
    """results.json without the wall-clock fields."""
    if isinstance(results, dict):
        return {k: stable(v) for k, v in results.items() if k not in VOLATILE}
    return results


@pytest.fixture(scope="module")
def one_after_another(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sequential") / "run"
    done = gsimclr(*TINY, "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_jobs_give_the_files_and_table_of_one_stage_after_another(one_after_another, tmp_path):
    out = tmp_path / "run"
    done = gsimclr(*TINY, "--out", str(out), "--jobs", "2")
    assert done.returncode == 0, done.stderr
    assert "stages in up to 2 worker processes" in done.stdout and "[gsimclr]" in done.stdout
    assert stable(json.loads((out / "results.json").read_text())) == \
        stable(json.loads((one_after_another / "results.json").read_text()))
    files = {p.relative_to(one_after_another) for p in one_after_another.rglob("*") if "tensorboard" not in p.parts}
    assert files == {p.relative_to(out) for p in out.rglob("*") if "tensorboard" not in p.parts}
    for method in ("simclr", "gsimclr"):   # the same weights, bit for bit (one thread per stage in both)
        assert (out / method / "checkpoint.safetensors").read_bytes() == \
            (one_after_another / method / "checkpoint.safetensors").read_bytes()
    table = (out / "results.md").read_text().split("\n\n")[0]
    assert table == (one_after_another / "results.md").read_text().split("\n\n")[0]


def test_the_stage_graph_waits_only_where_a_stage_reads_another():
    guided = {"gsimclr": True}.get
    graph = {j.name: j.after for j in stage_graph(("simclr", "gsimclr"), True, lambda m: bool(guided(m)), True)}
    assert graph == {"pseudo_labels": (), "simclr": ("pseudo_labels",), "gsimclr": ("pseudo_labels",),
                     "supervised": ()}
    # encoder pseudo labels are made inside G-SimCLR's pretraining: nothing waits
    graph = {j.name: j.after for j in stage_graph(("simclr", "gsimclr"), False, lambda m: bool(guided(m)), False)}
    assert graph == {"simclr": (), "gsimclr": ()}


def test_a_failed_worker_is_the_commands_one_line_and_ends_the_others(tmp_path):
    cfg = load_config("digits-quick", {"train_limit": 256, "test_limit": 64, "batch_size": 32, "device": "cpu",
                                        "supervised_epochs": 200})
    payload = {"cfg": cfg, "root": str(tmp_path), "resume": False, "methods": ("nosuch",), "stop_after": None,
               "max_minutes": None, "threads": 1, "plugins": []}
    lines = []
    started = time.monotonic()
    with pytest.raises(UserError, match="nosuch"):
        run_jobs([Job(SUPERVISED), Job("nosuch")], payload, 2, lines.append)
    assert time.monotonic() - started < 300   # the supervised worker was ended, not waited for
    pids = [int(re.search(r"process (\d+)", line).group(1)) for line in lines]
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_jobs_below_one_is_one_line():
    done = gsimclr(*TINY, "--jobs", "0", "--out", "unused")
    assert done.returncode == 2 and done.stderr.strip() == "gsimclr: error: --jobs must be >= 1, got 0"


def test_a_plugin_method_trains_in_a_worker(tmp_path):
    shutil.copy(ROOT / "docs" / "examples" / "plugins" / "simsiam_plugin.py", tmp_path / "simsiam_plugin.py")
    out = tmp_path / "run"
    done = gsimclr(*TINY, "--plugin", "simsiam_plugin", "--methods", "simsiam,gsimclr", "--predictor-dim", "16",
                   "--out", str(out), "--jobs", "3", path=tmp_path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "SimSiam" in (out / "results.md").read_text()
    assert json.loads((out / "simsiam" / "provenance.json").read_text())["config"]["predictor_dim"] == 16


def _workers(log: str) -> list[int]:
    return [int(p) for p in re.findall(r"started in worker process (\d+)", log)]


def _gone(pid: int, within: float = 90) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:   # our own child that has exited: reap it
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_command_ends_its_workers_and_resume_gives_the_uncut_table(one_after_another, tmp_path, how):
    out = tmp_path / "run"
    proc = gsimclr(*TINY, "--out", str(out), "--jobs", "2", "--checkpoint-every", "1", background=True)
    log = ""
    deadline = time.monotonic() + 600
    # stop once a method's pretraining has checkpointed within its first epoch
    while not any((out / m / "checkpoint.safetensors").exists() for m in ("simclr", "gsimclr")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.1)
    os.kill(proc.pid, how)   # the command only, not its process group
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == (143 if how == signal.SIGTERM else -signal.SIGKILL), log
    workers = _workers(log)
    assert workers, log
    assert all(_gone(pid) for pid in workers), log
    done = gsimclr(*TINY, "--out", str(out), "--jobs", "2", "--resume")
    assert done.returncode == 0, done.stderr
    assert stable(json.loads((out / "results.json").read_text())) == \
        stable(json.loads((one_after_another / "results.json").read_text()))


def _large_result(name: str, payload: dict, conn) -> None:
    """A worker that sends more than a pipe holds (the pseudo labels of a large set do)."""
    import numpy as np

    conn.send(("ok", {"labels": np.arange(2_000_000, dtype=np.int64), "incomplete": False}))
    conn.close()


def test_a_result_larger_than_the_pipe_is_read_while_the_worker_sends_it():
    done = run_jobs([Job("pseudo_labels"), Job("simclr", ("pseudo_labels",))], {}, 2, lambda *a: None,
                    target=_large_result)
    assert done["pseudo_labels"]["labels"].shape == (2_000_000,) and int(done["simclr"]["labels"][-1]) == 1_999_999
