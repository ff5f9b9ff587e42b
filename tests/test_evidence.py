"""scripts/evidence.py: the GPU evidence stages, run end to end at tiny sizes on the CPU (``--smoke``), so the
script works the first time a GPU is lent; plus its bookkeeping (skips, export/import, option checks)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import evidence  # noqa: E402


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


@pytest.mark.slow
@pytest.mark.evidence_smoke
def test_evidence_smoke_runs_every_stage(tmp_path):
    """`make evidence-smoke`: every part of stages a-f runs (or is skipped for a reason this checkout
    explains: lightly absent, a preset or guidance option not there yet), into a temp folder only."""
    from gsimclr.config import preset_names

    watched = (ROOT / "results", ROOT / "benchmarks" / "results", ROOT / "RESULTS.md")
    before = _snapshot(*watched)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "evidence.py"), "--smoke", "--out-root", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    states = json.loads(proc.stdout.strip().splitlines()[-1])["states"]
    stages = evidence.build_stages(evidence.SMOKE_SEEDS)
    assert set(states) == {p.name for s in stages for p in s.parts}
    lightly_parts = {"throughput-cuda-cifar", "throughput-cuda-r50", "tta-lightly"}
    for name, state in states.items():
        if state == "done now":
            continue
        assert state.startswith("skipped: "), (name, state)
        if name in lightly_parts:
            assert not _have_lightly() and "lightly is not installed" in state, (name, state)
        elif name.startswith("paper-"):
            preset = name.rsplit("-seed", 1)[0]
            assert preset not in preset_names() and "does not exist" in state, (name, state)
        elif name.startswith("guidance-"):
            method, extra = evidence.GUIDANCE_VARIANTS[name.removeprefix("guidance-").rsplit("-seed", 1)[0]]
            assert evidence.accepts("pretrain", ["--method", method, *extra]) is not None, (name, state)
        else:
            pytest.fail(f"{name} was skipped: {state}")
    # the parts that always run: the strong recipe's kNN curve, paper presets, SimCLR baseline and both checks
    for name in ("datapath-cuda-224", "tta-gsimclr", "paper-cifar10-seed0", "paper-imagenet5-seed0",
                 "guidance-simclr-seed0", "ddp-equal", "bf16-ntxent"):
        assert states[name] == "done now", (name, states[name])
        part = next(p for s in stages for p in s.parts if p.name == name)
        payload = json.loads((tmp_path / part.path).read_text())
        assert payload["smoke"] is True and payload["command"] and payload["versions"]["torch"]
        assert "no GPU used" in payload["device"]
    ddp = json.loads((tmp_path / "results/evidence/ddp-equal.json").read_text())["result"]
    assert ddp["equal"] and ddp["torchrun_vs_plain"]["same_keys"]
    bf16 = json.loads((tmp_path / "results/evidence/bf16-ntxent.json").read_text())["result"]
    assert 0 < bf16["loss_relative_error"] < 0.05 and bf16["grad_cosine"] > 0.9
    datapath = json.loads((tmp_path / "results/evidence/datapath-cuda-224.json").read_text())["result"]["result"]
    assert {"store-path", "store-decode", "store-path-torchvision", "torchvision"} <= set(datapath)
    assert all(r["images_per_s"] > 0 for k, r in datapath.items() if not k.startswith("ratio"))
    results = (tmp_path / "RESULTS.md").read_text()
    assert "data path at 224 px" in results and "datapath-cuda-224.json" in results
    assert "## a." in results and "## f." in results and "paper-cifar10-seed0.json" in results
    assert _snapshot(*watched) == before, "a smoke run wrote into the checkout's results"

    # a second run finds every part done and runs nothing
    again = subprocess.run([sys.executable, str(ROOT / "scripts" / "evidence.py"), "--smoke", "--out-root", str(tmp_path),
                            "--stage", "f"], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert set(json.loads(again.stdout.strip().splitlines()[-1])["states"].values()) == {"done"}


def test_stage_list_and_unknown_stage(tmp_path, capsys):
    assert evidence.main(["--list", "--out-root", str(tmp_path), "--cifar10", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for key in "abcdef":
        assert f"\n{key}  " in "\n" + out
    assert "paper-cifar10-clean-seed2" in out and "guidance-attract-seed1" in out
    import torch

    if not torch.cuda.is_available():  # the real stages refuse a machine without a GPU, in one line
        with pytest.raises(SystemExit) as exc:
            evidence.main(["--stage", "a", "--out-root", str(tmp_path)])
        assert exc.value.code == 2 and "no CUDA GPU" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        evidence.main(["--smoke", "--stage", "zz", "--out-root", str(tmp_path / "s")])
    assert exc.value.code == 2


def test_budget_skips_parts_that_do_not_fit(tmp_path):
    ctx = evidence.Ctx(root=tmp_path, runs=tmp_path / "runs", data={"cifar10": str(tmp_path)}, deadline=0.0)
    ran = []
    part = evidence.Part("x", "p", "results/evidence/p.json", 100, ("cifar10",), lambda c, p: ran.append(1) or {})
    assert evidence.run_part(ctx, part) == "skipped: no time left in --budget-s" and not ran
    missing = evidence.Part("x", "q", "results/evidence/q.json", 1, ("imagenet5",), lambda c, p: {})
    assert evidence.run_part(ctx, missing).startswith("skipped: data imagenet5 not found")


def test_part_result_is_written_once_and_then_skipped(tmp_path):
    ctx = evidence.Ctx(root=tmp_path, runs=tmp_path / "runs", data={}, device="cpu")
    calls = []

    def run(c, p):
        calls.append(1)
        p.command = "echo"
        return {"value": 1} if len(calls) > 1 else None  # the first call is cut short (resume)

    part = evidence.Part("x", "p-seed3", "results/evidence/p-seed3.json", 1, (), run)
    assert evidence.run_part(ctx, part) == "incomplete" and not part.done(ctx)
    assert evidence.run_part(ctx, part) == "done now"
    payload = json.loads((tmp_path / part.path).read_text())
    assert payload["result"] == {"value": 1} and payload["seed"] == 3 and payload["command"] == "echo"
    assert {"commit", "device", "versions", "date", "wall_s"} <= set(payload)
    assert evidence.run_part(ctx, part) == "done" and len(calls) == 2


def test_accepts_rejects_abbreviations_and_bad_values():
    assert evidence.accepts("pretrain", ["--method", "simclr"]) is None
    # argparse would take --sampler-tail for --sampler; the check wants the flag spelled out
    assert "--sampl" in evidence.accepts("pretrain", ["--sampl", "relax"])
    assert evidence.accepts("pretrain", ["--lr", "-1"]) is not None


def test_export_and_import_keep_only_result_files(tmp_path):
    root = tmp_path / "device"
    ctx = evidence.Ctx(root=root, runs=root / "runs", data={})
    evidence.write_json(ctx, root / "results" / "evidence" / "a.json", {"x": 1})
    evidence.write_text(ctx, root / "benchmarks" / "results" / "b.md", "table\n")
    tar_path = evidence.export(ctx, tmp_path / "out")
    with tarfile.open(tar_path, "a") as tar:  # a hostile member must not be unpacked
        data = b"bad"
        for name in ("../escape.txt", "src/gsimclr/x.py"):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    here = tmp_path / "checkout"
    names = evidence.import_tar(tar_path, here)
    assert sorted(names) == ["benchmarks/results/b.md", "results/evidence/a.json"]
    assert json.loads((here / "results/evidence/a.json").read_text()) == {"x": 1}
    assert not (tmp_path / "escape.txt").exists() and not (here / "src").exists()


def test_smoke_parquet_is_read_by_the_parquet_source(tmp_path):
    from gsimclr.data.sources import load_split

    data = evidence.make_smoke_data(tmp_path)
    train = load_split(data["imagenet5"], "train", image_size=16, cache=False)
    test = load_split(data["imagenet5"], "test", image_size=16, cache=False)
    assert train.images.shape == (100, 16, 16, 3) and len(test) == 40
    assert train.classes == [f"class{i}" for i in range(5)] and set(train.labels) == set(range(5))


def test_estimate_follows_measured_seeds(tmp_path):
    ctx = evidence.Ctx(root=tmp_path, runs=tmp_path / "runs", data={}, device="cpu")
    part = evidence.Part("c", "paper-x-seed1", "results/evidence/paper-x-seed1.json", 300, (), lambda c, p: {})
    assert evidence.estimate(ctx, part) == 300
    evidence.write_json(ctx, tmp_path / "results/evidence/paper-x-seed0.json",
                        {"part": "paper-x-seed0", "wall_s": 420.0, "smoke": False})
    evidence.write_json(ctx, tmp_path / "results/evidence/paper-x-clean-seed0.json",
                        {"part": "paper-x-clean-seed0", "wall_s": 900.0, "smoke": False})
    assert evidence.estimate(ctx, part) == 420.0
