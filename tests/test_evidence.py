"""scripts/evidence.py: the GPU evidence runner, end to end at tiny sizes on the CPU (a lease simulated:
a call cut by SIGKILL, carried into a fresh copy and resumed there), plus its bookkeeping: the lease
order, measured estimates, exports and imports, isolation of parts, bounded commands, the preflight,
the provenance stamp, the compile fallback and the torchrun process group."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from evidence_runner import plan, transport  # noqa: E402
from evidence_runner.cli import main as evidence_main  # noqa: E402
from evidence_runner.context import Ctx, Part, Stopped, accepts, run_bounded, write_json, write_text  # noqa: E402
from evidence_runner.runner import run_part  # noqa: E402
from evidence_runner.stages import SMOKE_SEEDS, build_stages  # noqa: E402


def _have_lightly() -> bool:
    try:
        import lightly  # noqa: F401
    except ImportError:
        return False
    return True


def _snapshot(*folders: Path) -> dict[str, float]:
    out = {}
    for folder in folders:
        if folder.is_file():
            out[str(folder)] = folder.stat().st_mtime
        elif folder.is_dir():
            out.update({str(p): p.stat().st_mtime for p in folder.rglob("*") if p.is_file()})
    return out


def _ctx(tmp_path, **kw) -> Ctx:
    return Ctx(root=tmp_path, runs=tmp_path / "runs", data=kw.pop("data", {}), device="cpu", **kw)


@pytest.mark.slow
@pytest.mark.evidence_smoke
def test_simulated_lease_cut_carried_and_resumed_then_every_stage(tmp_path):
    """`make evidence-smoke`: a call cut by SIGKILL, its export imported into a fresh copy of the checkout
    and resumed there (every smoke stage runs in that call) reaches the uncut run's result; every part of
    stages a-f runs (or is skipped for a reason this checkout explains), into temp folders only."""
    from gsimclr.config import preset_names
    from gsimclr.provenance import git_commit

    watched = (ROOT / "results", ROOT / "benchmarks" / "results", ROOT / "RESULTS.md")
    before = _snapshot(*watched)
    commit = git_commit(ROOT)  # the code the copies receive
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # the simulation's cut follows events (a checkpoint written, then exported), so a loaded machine only
    # makes it slower; the timeout guards against a hang, it does not decide the result
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "evidence.py"), "--simulate-lease", str(tmp_path),
                           "--full"], capture_output=True, text=True, env=env, timeout=4 * 3600)
    assert proc.returncode == 0, proc.stderr[-4000:] + (tmp_path / "call-b.log").read_text()[-4000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["same_result"] and found["state_carried"] and not found["finished_before_cut"]
    assert found["calls"] == 2  # the resumed part records the two calls (and their warm-ups)
    assert found["commit"] == commit  # the copy has no .git: the stamp, recomputed, names this code
    root = tmp_path / "root-b"
    states = found["states"]
    stages = build_stages(SMOKE_SEEDS)
    assert set(states) == {p.name for s in stages for p in s.parts}
    lightly_parts = {"throughput-cuda-cifar", "throughput-cuda-r50", "tta-lightly"}
    for name, state in states.items():
        if state == "done now":
            continue
        assert state.startswith("skipped: "), (name, state)
        if name in lightly_parts:
            assert not _have_lightly() and "lightly is not installed" in state, (name, state)
        elif name.startswith("paper-"):
            assert name.rsplit("-seed", 1)[0] not in preset_names(), (name, state)
        elif name.startswith("guidance-"):
            from evidence_runner.parts.guidance import GUIDANCE_VARIANTS

            method, extra = GUIDANCE_VARIANTS[name.removeprefix("guidance-").rsplit("-seed", 1)[0]]
            assert accepts("pretrain", ["--method", method, *extra]) is not None, (name, state)
        else:
            pytest.fail(f"{name} was skipped: {state}")
    for name in ("datapath-cuda-224", "tta-gsimclr", "paper-cifar10-seed0", "paper-imagenet5-seed0",
                 "guidance-simclr-seed0", "ddp-equal", "bf16-ntxent"):
        assert states[name] in ("done now",), (name, states[name])
        part = next(p for s in stages for p in s.parts if p.name == name)
        payload = json.loads((root / part.path).read_text())
        assert payload["smoke"] is True and payload["command"] and payload["versions"]["torch"]
        assert "no GPU used" in payload["device"] and payload["preflight"]["steps"]
        assert payload["commit"] == found["commit"]
    ddp = json.loads((root / "results/evidence/ddp-equal.json").read_text())["result"]
    assert ddp["equal"] and ddp["distributed_ok"], ddp
    one, two = ddp["probes"]["one-process"], ddp["probes"]["two-processes"]
    assert one["process_group"] and one["ddp"] and one["world_size"] == 1 and one["backend"] == "gloo"
    assert two["world_size"] == 2 and two["gathered_shape"][0] == 4 and two["ok"]
    bf16 = json.loads((root / "results/evidence/bf16-ntxent.json").read_text())["result"]
    assert 0 < bf16["loss_relative_error"] < 0.05 and bf16["grad_cosine"] > 0.9
    assert bf16["tf32"]["fp32"] == {"matmul_allow_tf32": False, "cudnn_allow_tf32": False,
                                    "float32_matmul_precision": "highest"}
    datapath = json.loads((root / "results/evidence/datapath-cuda-224.json").read_text())["result"]["result"]
    assert {"store-path", "store-decode", "store-path-torchvision", "torchvision"} <= set(datapath)
    timings = json.loads((root / plan.TIMINGS).read_text())
    cut, done = timings["tta-gsimclr"]["cpu"]  # the killed call's run is kept, with its time so far
    assert cut["state"] == "cut" and cut["wall_s"] > 0 and 0 < cut["fraction_after"] < 1
    assert done["state"] == "done" and done["fraction_before"] > 0  # it continued from the carried state
    results = (root / "RESULTS.md").read_text()
    assert "15 minutes" in results and "30 minutes" not in results
    assert "data path at 224 px" in results and "## a." in results and "## f." in results
    assert _snapshot(*watched) == before, "a smoke run wrote into the checkout's results"

    # a second call finds the parts done and runs nothing
    again = subprocess.run([sys.executable, str(tmp_path / "clone-b" / "scripts" / "evidence.py"), "--smoke",
                            "--out-root", str(root), "--stage", "f"], capture_output=True, text=True, env=env,
                           timeout=3600)   # a guard against a hang only
    assert again.returncode == 0, again.stderr[-2000:]
    assert set(json.loads(again.stdout.strip().splitlines()[-1])["states"].values()) == {"done"}


# ---------------------------------------------------------------------------------------- the plan


def test_list_shows_the_lease_order_with_compile_aware_estimates(tmp_path, capsys):
    assert evidence_main(["--list", "--out-root", str(tmp_path), "--cifar10", str(tmp_path), "--device-kind", "h100"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[2] for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert names[:6] == ["throughput-cuda-cifar", "bf16-ntxent", "tta-gsimclr", "tta-lightly", "paper-cifar10-seed0",
                         "paper-imagenet5-seed0"]
    assert out.splitlines()[1] == "lease 1:" and "15-minute lease" in out
    tta = next(line for line in out.splitlines() if " tta-gsimclr " in line)
    assert "planned + compile allowance" in tta and "~  320 s" in tta  # 200 s planned + 2 graphs x 60 s
    assert "paper-cifar10-clean-seed2" in out and "guidance-attract-seed1" in out
    with pytest.raises(SystemExit) as exc:
        evidence_main(["--smoke", "--stage", "zz", "--out-root", str(tmp_path / "s")])
    assert exc.value.code == 2


def test_parts_run_in_the_order_named():
    stages = build_stages()
    picked = [p.name for p in plan.select(stages, ["tta-gsimclr", "f", "throughput-cuda-cifar", "bf16-ntxent"])]
    assert picked == ["tta-gsimclr", "bf16-ntxent", "ddp-equal", "throughput-cuda-cifar"]  # f in lease order, no repeat
    assert [p.name for p in plan.select(stages, None)][:3] == ["throughput-cuda-cifar", "bf16-ntxent", "tta-gsimclr"]
    assert plan.unknown_names(stages, ["b", "zz"]) == ["zz"]


def test_estimates_follow_measurements_per_device_kind(tmp_path):
    ctx = _ctx(tmp_path)
    part = Part("b", "tta-x", "results/evidence/tta-x.json", 200, (), lambda c, p: {}, compiles=2, models=("m",),
                state=("tta-x",), state_mib=1)
    assert plan.estimate(ctx, part, "h100") == (320.0, 120.0, "planned + compile allowance")
    assert plan.estimate(ctx, part, "cpu")[0] == 200.0  # no compile on the CPU
    plan.record_compile(ctx, "h100", "m", 25.0)  # the preflight measured the model's compile
    assert plan.estimate(ctx, part, "h100")[:2] == (250.0, 50.0)
    # a cut run: 40% of the part in 100 s of which 30 s compiling -> 175 s of work + 30 s warm-up per call
    plan.record_run(ctx, part, "h200", 100.0, 30.0, 0.0, 0.4, "incomplete")
    whole, warm, source = plan.estimate(ctx, part, "h100")
    assert source == "measured h200" and warm == 30.0 and whole == pytest.approx(175.0 + 30.0)
    plan.record_run(ctx, part, "h100", 400.0, 40.0, 0.0, 1.0, "done")
    assert plan.estimate(ctx, part, "h100")[2] == "measured h100"
    assert plan.estimate(ctx, part, "cpu")[2] == "planned"  # a GPU's time says nothing about the CPU
    part.progress = lambda c, p: {"fraction": 0.5}
    rest, warm, _ = plan.remaining(ctx, part, "h100")
    assert rest == pytest.approx(360.0 * 0.5 + 40.0)  # the rest at the measured rate, plus one more warm-up


def test_estimate_follows_a_measured_sibling_seed(tmp_path):
    ctx = _ctx(tmp_path)
    part = Part("c", "paper-x-seed1", "results/evidence/paper-x-seed1.json", 300, (), lambda c, p: {})
    assert plan.estimate(ctx, part, "h100")[0] == 300
    write_json(ctx, tmp_path / "results/evidence/paper-x-seed0.json", {"part": "paper-x-seed0", "wall_s": 420.0, "smoke": False})
    write_json(ctx, tmp_path / "results/evidence/paper-x-clean-seed0.json",
               {"part": "paper-x-clean-seed0", "wall_s": 900.0, "smoke": False})
    assert plan.estimate(ctx, part, "h100")[0] == 420.0


@dataclass
class _Left(Ctx):
    """A call with a fixed time left: the plan's decisions, not how long the machine took to reach them."""
    left: float = 150.0

    def seconds_left(self) -> float:
        return self.left


def test_a_part_that_does_not_fit_is_not_started(tmp_path):
    # 150 s left at every decision (a real deadline shrank below the piece's 120 s while a loaded machine
    # ran the first calls: this test failed under load)
    ctx = _Left(root=tmp_path, runs=tmp_path / "runs", data={"cifar10": str(tmp_path)}, device="cpu", left=150.0)
    ran = []
    part = Part("x", "p", "results/evidence/p.json", 200, ("cifar10",), lambda c, p: ran.append(1) or {})
    assert run_part(ctx, part) == "skipped: no time left in --budget-s" and not ran
    # a part that continues across calls starts when its next piece fits (its state travels)
    piece = Part("x", "q", "results/evidence/q.json", 200, ("cifar10",), lambda c, p: ran.append(2) or {},
                 state=("q",), state_mib=1)
    assert run_part(ctx, piece) == "done now" and ran == [2]
    # ... but not when its state cannot come back and it has not begun on this machine
    big = Part("x", "r", "results/evidence/r.json", 200, ("cifar10",), lambda c, p: ran.append(3) or {},
               state=("r",), state_mib=500)
    assert run_part(ctx, big) == "skipped: no time left in --budget-s"
    (ctx.runs / "r").mkdir(parents=True)  # a warm machine that began it
    assert run_part(ctx, big) == "done now"
    missing = Part("x", "s", "results/evidence/s.json", 1, ("imagenet5",), lambda c, p: {})
    assert run_part(ctx, missing).startswith("skipped: data imagenet5 not found")


# ----------------------------------------------------------------------------------------- the runner


def test_a_part_that_exits_fails_alone(tmp_path):
    """A part raising SystemExit (data_path.py's children did) fails that part only; the next one runs."""
    ctx = _ctx(tmp_path)
    ran = []

    def exits(c, p):
        raise SystemExit("child failed")

    first = Part("x", "exits", "results/evidence/exits.json", 1, (), exits)
    second = Part("x", "runs", "results/evidence/runs.json", 1, (), lambda c, p: ran.append(1) or {"v": 1})
    assert run_part(ctx, first).startswith("failed: SystemExit") and run_part(ctx, second) == "done now" and ran
    assert json.loads((tmp_path / plan.TIMINGS).read_text())["exits"]["cpu"][0]["state"] == "failed"


def test_data_path_child_failure_raises_an_error_not_an_exit(tmp_path):
    import argparse

    import data_path

    args = argparse.Namespace(folder=str(tmp_path / "missing"), cache_dir=str(tmp_path), stored_size=8, size=8,
                              batch_size=2, batches=1, warmup=0, threads=1, torch_threads=1, seed=0, rebuild=False,
                              decoder="pil", decode_only=False, device="cpu", epoch=False)
    with pytest.raises(RuntimeError, match="store-path failed"):
        data_path.child("store-path", args)


def test_part_result_is_written_once_and_then_skipped(tmp_path):
    ctx = _ctx(tmp_path)
    calls = []

    def run(c, p):
        calls.append(1)
        p.command = "echo"
        return {"value": 1} if len(calls) > 1 else None  # the first call is cut short (resume)

    part = Part("x", "p-seed3", "results/evidence/p-seed3.json", 1, (), run)
    assert run_part(ctx, part) == "incomplete" and not part.done(ctx)
    assert run_part(ctx, part) == "done now"
    payload = json.loads((tmp_path / part.path).read_text())
    assert payload["result"] == {"value": 1} and payload["seed"] == 3 and payload["command"] == "echo"
    assert {"commit", "device", "versions", "date", "wall_s", "compile_s", "preflight"} <= set(payload)
    assert run_part(ctx, part) == "done" and len(calls) == 2


def test_a_bounded_command_stops_at_the_deadline(tmp_path):
    from evidence_runner.context import EXIT_MARGIN_S

    # events, not elapsed time: the child says it started (its pid in a file), and after Stopped it has
    # exited (reaped: no such process), long before the hour it would sleep
    pid_file = tmp_path / "child.pid"
    child = f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(3600)"
    ctx = _ctx(tmp_path, deadline=time.monotonic() + EXIT_MARGIN_S + 1)
    t0 = time.monotonic()
    with pytest.raises(Stopped):
        run_bounded(ctx, ["-c", child], lambda: 0, "python -c sleep", "sleep")
    assert time.monotonic() - t0 < 1800      # stopped at the deadline, not after the child's hour
    if pid_file.exists():              # under load it may be stopped before it wrote its pid: still stopped
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)
    with pytest.raises(RuntimeError, match="exit 3 exited with status 3"):
        run_bounded(_ctx(tmp_path, deadline=time.monotonic() + 3600), ["-c", "raise SystemExit(3)"], lambda: 0,
                    "python -c exit", "exit 3")


def test_warmup_is_reported_apart_from_training_time():
    from evidence_runner.parts.tta import tta_result, warmup_split

    epochs = [{"epoch": e, "epoch_s": s, "loss": 1.0} for e, s in [(1, 50.0), (2, 10.0), (3, 10.0), (4, 30.0), (5, 10.0)]]
    assert warmup_split(epochs, [0, 3]) == {1: 40.0, 4: 20.0}  # each call's first epoch over the steady median
    curve = [{"epoch": 2, "train_s": 60.0, "knn": 50.0}, {"epoch": 5, "train_s": 110.0, "knn": 70.0}]
    r = tta_result("gsimclr", 5, epochs, curve, [0, 3], 100.0)
    assert r["train_s"] == 110.0 and r["warmup_s"] == 60.0 and r["train_s_without_warmup"] == 50.0 and r["calls"] == 2
    assert [c["train_s_without_warmup"] for c in r["curve"]] == [20.0, 50.0]


def test_tf32_is_off_for_the_fp32_reference_and_restored():
    import torch

    from evidence_runner.parts.checks import tf32

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    with tf32(enabled=False) as state:
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "highest" and state["cudnn_allow_tf32"] is False
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision()) == before


def test_preflight_on_the_cpu_notes_what_it_skips_and_fails_in_one_line(tmp_path, capsys):
    from evidence_runner.preflight import PreflightFailed, preflight

    ctx = _ctx(tmp_path, smoke=True)
    part = Part("b", "p", "x.json", 1, (), lambda c, p: {}, models=("digits-quick",))
    result = preflight(ctx, [part], need_gpu=False)
    assert result["steps"]["digits-quick"]["step_s"] > 0 and result["versions"]["torch"]
    assert result["shm_gib"] is not None and "lightly" in result and "triton" in result["versions"]
    assert any("skipped" in n for n in result["notes"]) and result["nvjpeg"]["ok"] is False
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(PreflightFailed, match="no CUDA GPU"):
            preflight(ctx, [part], need_gpu=True)
        assert evidence_main(["--stage", "a", "--out-root", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("preflight failed: no CUDA GPU")


def test_accepts_rejects_abbreviations_and_bad_values():
    assert accepts("pretrain", ["--method", "simclr"]) is None
    # argparse would take --sampler-tail for --sampler; the check wants the flag spelled out
    assert "--sampl" in accepts("pretrain", ["--sampl", "relax"])
    assert accepts("pretrain", ["--lr", "-1"]) is not None


# -------------------------------------------------------------------------------------- the transport


def test_each_invocation_exports_its_own_file_and_imports_merge(tmp_path):
    out = tmp_path / "out"
    tars = []
    for i in (1, 2):
        ctx = _ctx(tmp_path / f"call{i}", invocation=f"call{i}")
        write_json(ctx, ctx.root / "results" / "evidence" / f"a{i}.json", {"x": i})
        part = Part("b", f"p{i}", f"results/evidence/p{i}.json", 1, (), lambda c, p: {})
        plan.record_run(ctx, part, "h100", 10.0 * i, 1.0, 0.0, 1.0, "done")
        tars.append(transport.export(ctx, out)[0])
    assert len({t.name for t in tars}) == 2 and all(t.exists() for t in tars)  # the second did not overwrite the first
    with tarfile.open(tars[0], "a") as tar:  # a hostile member must not be unpacked
        for name in ("../escape.txt", "src/gsimclr/x.py"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
    here = tmp_path / "checkout"
    names = transport.import_paths([out], here)
    assert {"results/evidence/a1.json", "results/evidence/a2.json"} <= set(names)
    timings = json.loads((here / plan.TIMINGS).read_text())
    assert {"p1", "p2"} <= set(timings)  # merged, not replaced
    assert not (tmp_path / "escape.txt").exists() and not (here / "src").exists()


def test_unfinished_state_travels_back_into_a_fresh_machine(tmp_path):
    ctx = _ctx(tmp_path / "device", invocation="one")
    part = Part("b", "tta-gsimclr", "results/evidence/tta-gsimclr.json", 1, (), lambda c, p: {}, state=("tta-gsimclr",),
                state_mib=1)
    big = Part("b", "tta-lightly", "results/evidence/tta-lightly.json", 1, (), lambda c, p: {}, state=("tta-lightly",),
               state_mib=1)
    run = ctx.runs / "tta-gsimclr" / "run" / "simclr"
    run.mkdir(parents=True)
    (run / "checkpoint.safetensors").write_bytes(os.urandom(3 * 2**20))
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2, "cut')  # a line cut by the kill
    (run / ".lock").write_text("123")
    (ctx.runs / "tta-lightly").mkdir(parents=True)
    with open(ctx.runs / "tta-lightly" / "state.pt", "wb") as f:  # larger than a file that comes back
        f.truncate((transport.CHUNK_MIB + 1) * 2**20)
    files = transport.export(ctx, tmp_path / "out", [part, big])
    assert [f.name for f in files] == ["evidence-one.tar", "state-one-0.tgz"]
    skipped = json.loads((ctx.root / "results/evidence/partial/state-skipped.json").read_text())
    assert "tta-lightly" in skipped and "same warm machine" in skipped["tta-lightly"]
    checkout = tmp_path / "checkout"
    transport.import_paths([tmp_path / "out"], checkout)
    assert (checkout / transport.STATE_TAR).exists()
    fresh = _ctx(checkout, invocation="two")
    assert transport.unpack_state(fresh, [part, big]) == ["tta-gsimclr"]
    restored = fresh.runs / "tta-gsimclr" / "run" / "simclr"
    assert (restored / "checkpoint.safetensors").read_bytes() == (run / "checkpoint.safetensors").read_bytes()
    assert (restored / "metrics.jsonl").read_text() == '{"epoch": 1}\n' and not (restored / ".lock").exists()
    (restored / "metrics.jsonl").write_text("newer\n")  # a warm machine's own state is never replaced
    assert transport.unpack_state(fresh, [part]) == [] and (restored / "metrics.jsonl").read_text() == "newer\n"
    # once the part's result is imported, its state is dropped from the packed file
    write_text(fresh, checkout / part.path, "{}")
    transport.merge_state([], checkout)
    assert not (checkout / transport.STATE_TAR).exists()


def test_smoke_parquet_is_read_by_the_parquet_source(tmp_path):
    from evidence_runner.smoke_data import make_smoke_data
    from gsimclr.data.sources import load_split

    data = make_smoke_data(tmp_path)
    train = load_split(data["imagenet5"], "train", image_size=16, cache=False)
    test = load_split(data["imagenet5"], "test", image_size=16, cache=False)
    assert train.images.shape == (100, 16, 16, 3) and len(test) == 40
    assert train.classes == [f"class{i}" for i in range(5)] and set(train.labels) == set(range(5))


# ---------------------------------------------------------------------------------- provenance, runtime


def test_commit_names_the_code_as_it_is_with_and_without_git(tmp_path):
    from gsimclr import provenance

    repo = tmp_path / "repo"
    (repo / "src" / "pkg").mkdir(parents=True)
    (repo / "src" / "pkg" / "a.py").write_text("x = 1\n")
    (repo / "results").mkdir()
    (repo / "results" / "r.json").write_text("{}")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "c"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert provenance.git_commit(repo) == head
    (repo / "results" / "r.json").write_text('{"changed": 1}')  # results are not code
    assert provenance.git_commit(repo) == head
    (repo / "src" / "pkg.egg-info").mkdir()  # what `pip install -e` (make install) writes beside the package
    (repo / "src" / "pkg.egg-info" / "SOURCES.txt").write_text("src/pkg/a.py\n")
    (repo / "src" / "pkg" / "__pycache__").mkdir()
    (repo / "src" / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert provenance.git_commit(repo) == head
    copy = tmp_path / "copy"  # what the device receives: no .git, the stamp
    (copy / "src" / "pkg").mkdir(parents=True)
    (copy / "src" / "pkg" / "a.py").write_text("x = 1\n")
    provenance.write_stamp(repo, copy)
    assert provenance.git_commit(copy) == head
    (copy / "src" / "pkg" / "a.py").write_text("x = 2\n")  # changed after packing: never the packed commit
    dirty = provenance.git_commit(copy)
    assert dirty.startswith(head + "+dirty.") and dirty != head
    (repo / "src" / "pkg" / "a.py").write_text("x = 2\n")
    assert provenance.git_commit(repo) == dirty  # the same code has the same name here and there
    (copy / "src" / "pkg" / "new.py").write_text("")
    assert provenance.git_commit(copy) not in (head, dirty)


def test_compile_fallback_runs_eagerly_when_compiling_fails(monkeypatch):
    """torch.compile fails at the first call, not when wrapped: the wrapper must fall back there."""
    import torch

    from gsimclr import runtime

    def failing_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, backend=failing_backend))

    def double(x):
        return x * 2

    fn = runtime.maybe_compile(double, torch.device("cpu"), "on")
    assert fn is not double and fn.compiled is None  # wrapping succeeded: nothing compiled yet
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(torch.ones(3))
    assert torch.equal(out, torch.full((3,), 2.0)) and fn.compiled is False
    assert any("torch.compile failed" in str(w.message) and "running eagerly" in str(w.message) for w in caught)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert torch.equal(fn(torch.ones(2)), torch.full((2,), 2.0))
    assert not caught  # warned once
    # a genuine error of the function is not hidden by the fallback
    fn = runtime.maybe_compile(lambda x: x @ x, torch.device("cpu"), "on")
    with pytest.raises(RuntimeError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn(torch.ones(2, 3))
    torch._dynamo.reset()


def _one_process_torchrun_env(monkeypatch) -> None:
    """The variables torchrun sets for one process, on a free local port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)


def test_torchrun_with_one_process_starts_a_process_group(monkeypatch):
    """Launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK set), even alone: a gloo group on the CPU, and the
    world trains through the distributed path (DDP, SyncBatchNorm, gathered negatives)."""

    import torch.distributed as dist

    from gsimclr.distributed import World, close_world, current_world, init_world

    _one_process_torchrun_env(monkeypatch)
    try:
        world = init_world("cpu")
        assert dist.is_initialized() and dist.get_backend() == "gloo"
        assert world.group and world.distributed and world.size == 1 and current_world().distributed
    finally:
        close_world()
    assert not dist.is_initialized()
    monkeypatch.delenv("LOCAL_RANK")
    assert init_world("cpu") == World() and not World().distributed  # a plain process: nothing started


@pytest.mark.skipif(not _have_lightly(), reason="benchmarks/throughput.py needs lightly (the bench extra)")
def test_throughput_writes_as_it_measures_and_resumes(tmp_path, monkeypatch):
    """A failure at batch 1024 keeps batch 512 (written after each window and config); --resume measures
    only what is missing."""
    import throughput

    calls = []

    def fake_config(name, spec, device, args, matmul, state, progress=lambda partial: None):
        calls.append(name)
        progress({"config": name, "windows_done": 1})
        partial = json.loads((tmp_path / "t.json").read_text())
        assert partial["in_progress"]["config"] == name and partial["complete"] is False  # on disk mid-config
        if name == "r18-cifar-b1024" and len(calls) == 2:
            raise RuntimeError("out of memory")
        return {"config": name}

    monkeypatch.setattr(throughput, "run_config", fake_config)
    monkeypatch.setattr(throughput, "matmul_rate", lambda device, quick=False: {"flops_per_s": 1.0, "dtype": "fp32"})
    monkeypatch.setattr(throughput, "markdown", lambda report: "table\n")
    argv = ["--device", "cpu", "--configs", "r18-cifar-b512", "r18-cifar-b1024", "--name", "t", "--out", str(tmp_path)]
    with pytest.raises(RuntimeError, match="out of memory"):
        throughput.main(argv)
    kept = json.loads((tmp_path / "t.json").read_text())
    assert [r["config"] for r in kept["results"]] == ["r18-cifar-b512"] and not kept["complete"]
    assert throughput.main([*argv, "--resume"]) == 0
    assert calls == ["r18-cifar-b512", "r18-cifar-b1024", "r18-cifar-b1024"]
    final = json.loads((tmp_path / "t.json").read_text())
    assert [r["config"] for r in final["results"]] == ["r18-cifar-b512", "r18-cifar-b1024"] and final["complete"]


def test_data_path_keeps_each_child_run_and_resumes_the_rest(tmp_path, monkeypatch):
    import argparse

    import data_path

    calls = []

    def fake_child(kind, args, src=None):
        calls.append((kind, args.decoder if kind != "torchvision" else None))
        if len(calls) == 4:
            raise data_path.ChildFailed("torchvision failed")
        return {"pipeline": kind, "images_per_s": float(len(calls)), "peak_rss_gib": 0.1}

    monkeypatch.setattr(data_path, "child", fake_child)
    written = []
    args = argparse.Namespace(decoders="pil", rounds=2, progress=written.append)
    with pytest.raises(data_path.ChildFailed):
        data_path.cmd_path(args)
    kept = written[-1]["rounds_done"]
    assert {k: len(v) for k, v in kept.items()} == {"store-path": 1, "store-decode": 1, "torchvision": 1}
    args = argparse.Namespace(decoders="pil", rounds=2, progress=written.append, resume_rounds=kept)
    summary = data_path.cmd_path(args)
    assert len(calls) == 4 + 3  # only the three missing runs
    assert all(len(summary[k]["rounds"]) == 2 for k in ("store-path", "store-decode", "torchvision"))


@pytest.mark.slow
def test_a_one_process_group_trains_like_a_plain_run_with_a_knn_monitor(tmp_path, monkeypatch):
    """The distributed path (DDP over a one-process gloo group) with a kNN monitor between epochs gives the
    plain run's checkpoint: extracting the monitor's features once re-laid out the DDP-wrapped model and
    the epochs after it diverged."""

    import torch
    from safetensors.torch import load_file

    from gsimclr.cli import main

    options = ["pretrain", "--preset", "digits-quick", "--train-limit", "128", "--test-limit", "64", "--epochs", "2",
               "--batch-size", "64", "--head-dims", "32,16", "--monitor-every", "1", "--device", "cpu"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*options, "--out", str(tmp_path / "plain")]) == 0
        _one_process_torchrun_env(monkeypatch)
        assert main([*options, "--out", str(tmp_path / "group")]) == 0
    finally:
        torch.set_num_threads(threads)
    a = load_file(tmp_path / "plain" / "simclr" / "checkpoint.safetensors")
    b = load_file(tmp_path / "group" / "simclr" / "checkpoint.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_lease_simulation_waits_for_events_not_the_clock(tmp_path):
    """Issue 26 (a failure under load): the simulated cut follows events. `_wait_for` returns when the
    event holds, or False when the process exits first (never because time passed), and the training
    below call A is found among its descendants to be stopped."""
    from evidence_runner.lease_sim import _descendants, _wait_for

    flag = tmp_path / "flag"
    writer = subprocess.Popen([sys.executable, "-c", f"import pathlib, time; time.sleep(1); "
                               f"pathlib.Path({str(flag)!r}).write_text('x'); time.sleep(3600)"])
    try:
        assert _wait_for(flag.exists, writer, "flag", safety_s=3600)
    finally:
        writer.kill()
        writer.wait()
    quitter = subprocess.Popen([sys.executable, "-c", "pass"])
    assert _wait_for((tmp_path / "never").exists, quitter, "never", safety_s=3600) is False
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)']); "
                               "time.sleep(3600)"])
    try:
        assert _wait_for(lambda: len(_descendants(parent.pid)) == 1, parent, "grandchild", safety_s=3600)
    finally:
        for pid in _descendants(parent.pid):
            os.kill(pid, 9)
        parent.kill()
        parent.wait()
