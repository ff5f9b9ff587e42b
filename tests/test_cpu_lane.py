"""The CPU lane (``scripts/evidence.py --lane cpu``, issue 24) at tiny size: a lane killed in the middle of a
pretraining epoch resumes to the uncut result, from its persistent home folder and, on a new machine, from
the state committed in the repository; every finished piece is a JSON file with its provenance."""

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from evidence_runner import cpu_lane  # noqa: E402

pytestmark = pytest.mark.slow
PART = "digits-quick-seed0"
TINY = ("--train-limit 128 --test-limit 64 --epochs 2 --batch-size 16 --k 8 --ae-epochs 1 --linear-epochs 1 "
        "--finetune-head-epochs 1 --finetune-epochs 1 --supervised-epochs 1 --tsne-points 0 --knn-k 5")
VOLATILE = ("pretrain_s", "images_per_s", "seconds")


def lane(home: Path, repo: Path, *extra: str, parts: str = "digits-quick:0") -> subprocess.Popen:
    env = {**os.environ, "GSIMCLR_LANE_POLL_S": "0.3", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT / "src")}
    argv = [sys.executable, str(ROOT / "scripts" / "evidence.py"), "--lane", "cpu", "--lane-parts", parts,
            "--lane-data", "digits", "--lane-options", TINY, "--lane-home", str(home), "--out-root", str(repo),
            "--checkpoint-minutes", "0.0001", "--budget-h", "0.5", *extra]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def kill_within_pretraining(proc: subprocess.Popen, home: Path, timeout: float = 600) -> dict:
    """SIGKILL the lane and its child (the whole session) once SimCLR's checkpoint holds a position within
    an epoch: the event, not a clock, decides when."""
    ckpt = home / "runs" / PART / "simclr" / "checkpoint.safetensors"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = cpu_lane.checkpoint_meta(ckpt) if ckpt.exists() else None
        lane_state = cpu_lane.read_json(home / "lane.json") or {}
        seen = ((lane_state.get("pieces") or {}).get(PART) or {}).get("simclr-pretrain", {}).get("commands")
        if meta and meta.get("partial") and seen:   # the lane has seen this pretraining in flight, cut mid-epoch
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return meta
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("the lane never checkpointed within an epoch")


def table(repo: Path, part: str = PART) -> dict:
    """The part's results without the timings (which differ between runs)."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in VOLATILE}
        return obj
    return strip(json.loads((repo / cpu_lane.RESULTS_DIR / f"{part}.json").read_text())["result"])


@pytest.fixture(scope="module")
def uncut(tmp_path_factory):
    root = tmp_path_factory.mktemp("uncut")
    session = finish(lane(root / "home", root / "repo"))
    assert session["resumed_from"] == "fresh"
    return root / "repo"


def test_a_lane_killed_within_an_epoch_resumes_from_its_home_to_the_uncut_result(uncut, tmp_path):
    home, repo = tmp_path / "home", tmp_path / "repo"
    meta = kill_within_pretraining(lane(home, repo), home)
    assert meta["epoch"] < 2 and meta["partial"]["steps"] > 0
    session = finish(lane(home, repo))
    assert session["resumed_from"] == "home"
    assert table(repo) == table(uncut)
    state = json.loads((home / "lane.json").read_text())
    assert [s["resumed_from"] for s in state["sessions"]] == ["fresh", "home"]
    # every piece is a JSON file with its provenance
    pieces = sorted(p.stem for p in (repo / cpu_lane.RESULTS_DIR / PART).glob("*.json"))
    assert pieces == sorted(["pseudo_labels", "simclr-pretrain", "simclr-eval", "gsimclr-pretrain", "gsimclr-eval",
                             "supervised"])
    piece = json.loads((repo / cpu_lane.RESULTS_DIR / PART / "simclr-pretrain.json").read_text())
    for key in ("command", "commit", "cpu", "versions", "date", "wall_s", "cpu_s"):
        assert piece[key] not in (None, ""), key
    assert len(piece["commands"]) == 2   # the cut call and the one that finished it
    assert piece["result"]["epoch"] == 2


def test_a_lane_on_a_new_machine_resumes_from_the_committed_state(uncut, tmp_path):
    home, repo = tmp_path / "home", tmp_path / "repo"
    kill_within_pretraining(lane(home, repo), home)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "evidence.py"), "--lane", "cpu", "--save-state",
                           "--lane-home", str(home), "--out-root", str(repo), "--lane-parts", "digits-quick:0",
                           "--lane-data", "digits"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr
    saved = json.loads(proc.stdout)
    assert saved["parts"] == [PART] and (repo / cpu_lane.REPO_STATE / "lane.json").is_file()
    shutil.rmtree(home)                  # a new machine: nothing in the home folder
    session = finish(lane(home, repo))
    assert session["resumed_from"] == "repository"
    assert table(repo) == table(uncut)
    status = subprocess.run([sys.executable, str(ROOT / "scripts" / "evidence.py"), "--lane", "cpu", "--status",
                             "--lane-home", str(home), "--out-root", str(repo), "--lane-parts", "digits-quick:0"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert status.returncode == 0, status.stderr
    assert f"{PART}: complete" in status.stdout and "committed state" in status.stdout


def test_two_parts_at_once_each_give_the_table_they_give_alone(uncut, tmp_path):
    """--lane-jobs 2 runs the next two parts side by side, one child each: each part's table is the one it
    gives alone, and each child's CPU seconds go to its own part."""
    home, repo = tmp_path / "home", tmp_path / "repo"
    session = finish(lane(home, repo, "--lane-jobs", "2", parts="digits-quick:0,digits-quick:1"))
    assert session["jobs"] == 2 and sorted(session["parts"]) == [PART, "digits-quick-seed1"]
    assert table(repo) == table(uncut)
    assert table(repo, "digits-quick-seed1") != table(uncut)   # another seed: another table
    state = json.loads((home / "lane.json").read_text())
    for part in (PART, "digits-quick-seed1"):
        pieces = state["pieces"][part]
        # a piece that begins and ends between two polls is timed with the one before, so count per part
        assert all(p["finished"] for p in pieces.values()) and sum(p["cpu_s"] for p in pieces.values()) > 1, pieces
    total = sum(p["cpu_s"] for part in state["pieces"].values() for p in part.values())
    assert 0 < total <= state["work_s"] + 1e-6   # start-up and the final table belong to no piece
    # side by side: the second part began before the first one's last piece finished
    first, second = state["pieces"][PART], state["pieces"]["digits-quick-seed1"]
    assert min(p["started"] for p in second.values()) <= max(p["finished"] for p in first.values())
    assert state["current"] is None


def test_working_periods_are_told_apart_by_boot_gap_and_data_mount(tmp_path):
    """A lane call starts a new working period on a new boot, after more than PERIOD_GAP_S without the lane,
    or when the data was mounted anew (its folder's time changed); a restart within a period does not."""
    data = tmp_path / "data"
    data.mkdir()
    first = {"started": "2026-12-07 04:47:36 UTC", "ended": "2026-12-07 07:36:44 UTC", "boot_id": "a",
             **cpu_lane.period_of([], {"started": "2026-12-07 04:47:36 UTC", "boot_id": "a"}, str(data))}
    assert first["period"] == 1 and first["gap_s"] is None and first["data_mounted"]
    soon = cpu_lane.period_of([first], {"started": "2026-12-07 07:40:00 UTC", "boot_id": "a"}, str(data))
    assert soon["period"] == 1 and soon["gap_s"] == 196.0
    later = cpu_lane.period_of([first], {"started": "2026-12-07 11:47:42 UTC", "boot_id": "a"}, str(data))
    assert later["period"] == 2 and later["gap_s"] > cpu_lane.PERIOD_GAP_S
    assert cpu_lane.period_of([first], {"started": "2026-12-07 07:40:00 UTC", "boot_id": "b"}, str(data))["period"] == 2
    os.utime(data, (1, 1))   # mounted anew within the gap
    assert cpu_lane.period_of([first], {"started": "2026-12-07 07:40:00 UTC", "boot_id": "a"}, str(data))["period"] == 2


def test_save_state_carries_the_first_part_and_keeps_a_later_large_one_as_committed(tmp_path):
    """The committed state grows the repository: the first unfinished part is carried as it is now; a part
    behind it only while it is small, else its last committed copy stays unchanged (or it is not carried)."""
    home, repo = tmp_path / "home", tmp_path / "repo"
    plan = cpu_lane.LanePlan(parts=(("p", 0), ("q", 0)), data="digits", home=home, repo=repo)
    for part in ("p-seed0", "q-seed0"):
        (home / "runs" / part / "stage").mkdir(parents=True)
        (home / "runs" / part / "stage" / "small.json").write_text("{}")
    saved = cpu_lane.save_state(plan)
    assert saved["parts"] == ["p-seed0", "q-seed0"]            # both small: both carried
    for part in ("p-seed0", "q-seed0"):
        (home / "runs" / part / "stage" / "big.bin").write_bytes(os.urandom(int(1.5 * 2**20)))
    saved = cpu_lane.save_state(plan)
    state = repo / cpu_lane.REPO_STATE / "runs"
    assert saved["parts"] == ["p-seed0"] and saved["kept_as_committed"] == ["q-seed0"]
    assert (state / "p-seed0" / "stage" / "big.bin").is_file() and not (state / "q-seed0" / "stage" / "big.bin").exists()
    assert (state / "q-seed0" / "stage" / "small.json").is_file()   # the earlier snapshot, unchanged
    shutil.rmtree(state / "q-seed0")
    cpu_lane.write_json_atomic(repo / cpu_lane.REPO_STATE / "lane.json", {})
    saved = cpu_lane.save_state(plan)
    assert saved["not_carried"] == ["q-seed0"] and not (state / "q-seed0").exists()


def test_a_piece_begun_and_ended_within_one_poll_has_a_start(tmp_path, monkeypatch):
    """A piece first seen already finished (it began and ended between two polls) still gets ``started``
    (the poll that first saw it), so every finished piece can be placed in time."""
    lane_ = cpu_lane.Lane(cpu_lane.LanePlan(home=tmp_path / "home", repo=tmp_path / "repo"), budget_s=60)
    lane_.state, lane_.session = {"work_s": 0.0}, {"cpu_s": 0.0, "wall_s": 0.0}
    written = []
    monkeypatch.setattr(cpu_lane, "save_lane", lambda plan, state: None)
    monkeypatch.setattr(lane_, "write_piece", lambda *args: written.append(args[3]))
    polls = iter([{"pseudo_labels": False}, {"pseudo_labels": True, "simclr-pretrain": True}])
    monkeypatch.setattr(cpu_lane, "pieces_of", lambda run_dir: next(polls))
    pieces: dict = {}
    lane_.account(PART, pieces, 1.0, 1.0, "cmd", "digits-quick", 0)
    lane_.account(PART, pieces, 1.0, 1.0, "cmd", "digits-quick", 0)
    assert written == ["pseudo_labels", "simclr-pretrain"]
    for name, entry in pieces.items():
        assert entry["finished"] and entry["started"] <= entry["finished"], (name, entry)
    assert pieces["simclr-pretrain"]["cpu_s"] == 0 and pieces["pseudo_labels"]["cpu_s"] == 2.0


def test_a_parts_stages_run_side_by_side_and_each_workers_cpu_goes_to_its_stage(uncut, tmp_path):
    """Each lane call is ``gsimclr run --jobs 2`` (LANE_STAGE_JOBS): SimCLR and G-SimCLR pretrain at once,
    each worker's CPU seconds go to its own stage's piece, and the table is the one of stages run one after
    another (``--lane-stage-jobs 1``)."""
    home, repo = tmp_path / "home", tmp_path / "repo"
    session = finish(lane(home, repo, "--lane-stage-jobs", "1"))
    assert session["stage_jobs"] == 1 and table(repo) == table(uncut)
    state = json.loads((tmp_path / "home" / "lane.json").read_text())
    assert "--jobs 1" in state["pieces"][PART]["simclr-pretrain"]["commands"][0]
    state = json.loads((uncut.parent / "home" / "lane.json").read_text())
    assert state["sessions"][-1]["stage_jobs"] == 2
    simclr, gsimclr = (state["pieces"][PART][f"{m}-pretrain"] for m in ("simclr", "gsimclr"))
    assert "--jobs 2" in simclr["commands"][0]
    assert simclr["cpu_s"] > 0 and gsimclr["cpu_s"] > 0, (simclr, gsimclr)
    assert gsimclr["started"] <= simclr["finished"] and simclr["started"] <= gsimclr["finished"]   # side by side
    log = (uncut.parent / "home" / "logs" / f"{PART}.log").read_text()
    assert re.search(r"^simclr: started in worker process \d+$", log, re.MULTILINE)


def test_save_state_keeps_the_committed_copy_where_the_repository_budget_would_pass(tmp_path, monkeypatch):
    """Every saved file version stays in git's history: a save whose changed files would take the lane past
    REPO_BUDGET_MIB keeps the last committed copy of that part (its home folder keeps the newer one); files
    already committed cost nothing; the growth is measured from the repository's history."""
    home, repo = tmp_path / "home", tmp_path / "repo"
    plan = cpu_lane.LanePlan(parts=(("p", 0),), data="digits", home=home, repo=repo)
    (home / "runs" / "p-seed0" / "stage").mkdir(parents=True)
    (home / "runs" / "p-seed0" / "stage" / "ckpt.bin").write_bytes(os.urandom(2**20))
    monkeypatch.setattr(cpu_lane, "finish_reserve_mib", lambda run_dir: 0.0)
    monkeypatch.setattr(cpu_lane, "repo_growth_mib", lambda repo: cpu_lane.REPO_BUDGET_MIB - 1.5)
    saved = cpu_lane.save_state(plan)
    assert saved["parts"] == ["p-seed0"] and saved["over_budget"] == []
    monkeypatch.setattr(cpu_lane, "repo_growth_mib", lambda repo: cpu_lane.REPO_BUDGET_MIB - 0.5)
    assert cpu_lane.save_state(plan)["parts"] == ["p-seed0"]   # unchanged: nothing new to store
    before = (repo / cpu_lane.REPO_STATE / "runs" / "p-seed0" / "stage" / "ckpt.bin").read_bytes()
    (home / "runs" / "p-seed0" / "stage" / "ckpt.bin").write_bytes(os.urandom(2**20))
    saved = cpu_lane.save_state(plan)
    assert saved["over_budget"] == ["p-seed0"] and saved["kept_as_committed"] == ["p-seed0"] and saved["parts"] == []
    assert (repo / cpu_lane.REPO_STATE / "runs" / "p-seed0" / "stage" / "ckpt.bin").read_bytes() == before
    # lane.json says which lane work the kept run folder holds
    committed = json.loads((repo / cpu_lane.REPO_STATE / "lane.json").read_text())
    assert committed["snapshots"]["p-seed0"]["work_s"] == 0.0
    # room left, but not for the finished checkpoints still to come: the checkpoint in flight is not carried
    monkeypatch.setattr(cpu_lane, "repo_growth_mib", lambda repo: cpu_lane.REPO_BUDGET_MIB - 3)
    assert cpu_lane.save_state(plan)["parts"] == ["p-seed0"]
    (home / "runs" / "p-seed0" / "stage" / "ckpt.bin").write_bytes(os.urandom(2**20))
    monkeypatch.setattr(cpu_lane, "finish_reserve_mib", lambda run_dir: 2.5)
    assert cpu_lane.save_state(plan)["over_budget"] == ["p-seed0"]
    monkeypatch.setattr(cpu_lane, "finish_reserve_mib", lambda run_dir: 1.5)
    assert cpu_lane.save_state(plan)["parts"] == ["p-seed0"]
    # the measure itself: every version ever committed under results/evidence, from git
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "s"], check=True)
    monkeypatch.undo()
    assert abs(cpu_lane.repo_growth_mib(repo) - 1.0) < 0.01   # the last save's one file version
    reserve = cpu_lane.finish_reserve_mib(home / "runs" / "p-seed0")
    assert reserve == 10.0   # two methods, no checkpoint yet: 5 MiB each
    assert cpu_lane.repo_growth_mib(tmp_path / "not-a-repository") == 0.0


def test_a_finished_seed0_pretraining_is_kept_in_the_zoo_loadable_and_exportable(uncut, tmp_path):
    """The zoo keeps each finished pretraining of seed 0 byte for byte (the checkpoint the state carries, so
    git stores it once), with zoo.json; the project's loader reads it and ``gsimclr export`` exports it."""
    from gsimclr.training.pretrain import load_encoder

    home = uncut.parent / "home"
    for method in ("simclr", "gsimclr"):
        entry = uncut / cpu_lane.ZOO_DIR / f"{PART}-{method}"
        kept = (entry / "checkpoint.safetensors").read_bytes()
        assert kept == (home / "runs" / PART / method / "checkpoint.safetensors").read_bytes()
        info = json.loads((entry / "zoo.json").read_text())
        assert info["method"] == method and info["preset"] == "digits-quick" and info["epoch"] == 2
        assert info["sha256"] == cpu_lane.sha256_of(entry / "checkpoint.safetensors")
        model, cfg, meta = load_encoder(entry)
        assert meta["method"] == method and cfg.epochs == 2
    out = tmp_path / "hf"
    done = subprocess.run([sys.executable, "-m", "gsimclr", "export", str(uncut / cpu_lane.ZOO_DIR / f"{PART}-gsimclr"),
                           "--format", "hf", "--output", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr
    assert (out / "hf" / "model.safetensors").is_file()


def test_a_new_machine_says_which_work_a_kept_snapshot_lacks(tmp_path, monkeypatch):
    """After a save kept a part's older run folder (the repository budget), a lane on a new machine resumes
    from it and its session notes how much lane work was not carried."""
    home, repo = tmp_path / "home", tmp_path / "repo"
    plan = cpu_lane.LanePlan(parts=(("p", 0),), data="digits", home=home, repo=repo)
    (home / "runs" / "p-seed0").mkdir(parents=True)
    (home / "runs" / "p-seed0" / "ckpt.bin").write_bytes(b"early")
    cpu_lane.save_lane(plan, {**cpu_lane.new_lane_state(), "work_s": 3600.0})
    monkeypatch.setattr(cpu_lane, "finish_reserve_mib", lambda run_dir: 0.0)
    assert cpu_lane.save_state(plan)["parts"] == ["p-seed0"]
    (home / "runs" / "p-seed0" / "ckpt.bin").write_bytes(b"later")
    cpu_lane.save_lane(plan, {**cpu_lane.load_lane(plan), "work_s": 4 * 3600.0})
    monkeypatch.setattr(cpu_lane, "repo_growth_mib", lambda repo: cpu_lane.REPO_BUDGET_MIB)
    assert cpu_lane.save_state(plan)["over_budget"] == ["p-seed0"]
    shutil.rmtree(home)   # a new machine
    lane_ = cpu_lane.Lane(plan, budget_s=0)   # no time to run anything: restore and record the session only
    previous = signal.getsignal(signal.SIGTERM)
    try:
        session = lane_.run()
    finally:
        signal.signal(signal.SIGTERM, previous)   # the lane's own handler, installed in this process
    assert session["resumed_from"] == "repository"
    assert (home / "runs" / "p-seed0" / "ckpt.bin").read_bytes() == b"early"
    assert any("3.00 CPU h after it were not carried" in n for n in session["notes"]), session


def test_a_kill_loses_no_more_pretraining_than_the_current_call_has_run(tmp_path, monkeypatch):
    """The status's "a kill now loses" counts from the checkpoint or from the start of the lane's current
    call, whichever is later: a checkpoint written before the lane last stopped loses nothing of the pause."""
    run_dir = tmp_path / PART
    now = 1_800_000_000.0
    monkeypatch.setattr(cpu_lane.time, "time", lambda: now)
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now - 120))
    state = {"current": [{"part": PART, "pid": 1, "since": since}]}
    assert cpu_lane.pretrain_kill_loss(state, run_dir, 3600.0) == pytest.approx(120.0)   # the pause is not lost
    assert cpu_lane.pretrain_kill_loss(state, run_dir, 60.0) == pytest.approx(60.0)      # saved within this call
    assert cpu_lane.pretrain_kill_loss({"current": None}, run_dir, 3600.0) == 3600.0      # no call: the age
    other = {"current": [{"part": "another-part", "pid": 1, "since": since}]}
    assert cpu_lane.pretrain_kill_loss(other, run_dir, 3600.0) == 3600.0


def test_a_kill_loses_no_more_of_an_evaluation_than_it_has_run(tmp_path, monkeypatch):
    """An evaluation that began after its pretraining, within the lane's current call, loses its own time at a
    kill, not the whole call's (the status said 24 minutes of an evaluation 2 minutes old)."""
    run_dir = tmp_path / PART
    (run_dir / "simclr").mkdir(parents=True)
    now = 1_800_000_000.0
    monkeypatch.setattr(cpu_lane.time, "time", lambda: now)
    stamp = lambda ago: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now - ago))  # noqa: E731
    state = {"current": [{"part": PART, "pid": 1, "since": stamp(1440)}],
             "pieces": {PART: {"simclr-eval": {"started": stamp(120)}}}}
    assert "about 2.0 min" in cpu_lane.kill_loss(state, run_dir, "simclr-eval")
    state["pieces"][PART]["simclr-eval"]["started"] = stamp(3 * 3600)   # begun in an earlier call: this call's time
    assert "about 24.0 min" in cpu_lane.kill_loss(state, run_dir, "simclr-eval")


def test_the_cpu_table_has_every_row_of_the_protocol_the_preset_evaluates_with(tmp_path, monkeypatch):
    """RESULTS.md's CPU table takes its rows from the evaluation registry: a ``paper-cifar10`` part (the
    notebooks' protocol: ``linear_notebook``, ``finetune_notebook``) shows Linear P1/P2/P3 and the 10%
    fine-tune beside the paper's numbers, as a ``digits-quick`` part (ours) shows its own rows."""
    from evidence_runner.context import Ctx
    from evidence_runner.report import cpu_lane_results

    def piece(part: str, name: str, result: dict) -> None:
        path = tmp_path / cpu_lane.RESULTS_DIR / part / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"piece": name, "result": result, "cpu_s": 36.0, "wall_s": 36.0,
                                    "date": "2026-12-07 17:00:00 UTC", "commit": "0" * 40}))

    def notebook(offset: float) -> dict:
        return {"knn": 30.0 + offset, "class_pairs_per_batch": 201.5,
                "linear_notebook": {p: {"top1": 35.0 + i + offset, "selected_on": "test"} for i, p in enumerate(("P1", "P2", "P3"))},
                "finetune_notebook": {"top1": 41.0 + offset, "selected_on": "test"}}

    piece("paper-cifar10-seed0", "simclr-eval", notebook(0.0))
    piece("paper-cifar10-seed0", "gsimclr-eval", notebook(0.5))
    piece("paper-cifar10-seed0", "supervised", {"top1": 70.25})
    text = cpu_lane_results(Ctx(root=tmp_path, runs=tmp_path / "runs", data={}, device="cpu"))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["Linear P1 (notebook protocol)"] == "| Linear P1 (notebook protocol) | 35.00 | 35.50 | 37.69 | 38.15 |"
    assert rows["Linear P3 (notebook protocol)"].split(" | ")[1:3] == ["37.00", "37.50"]
    assert rows["Fine-tune (10% labels, notebook protocol)"].endswith("| 41.00 | 41.50 | 42.21 | 43.1 |")
    assert rows["kNN (k=200)"].split(" | ")[1:3] == ["30.00", "30.50"]
    assert "Fully supervised (all labels)" in rows and "70.25" in rows["Fully supervised (all labels)"]
    order = [name for name in rows if name != "top-1 %"]
    assert order.index("Fine-tune (10% labels, notebook protocol)") < order.index("kNN (k=200)")   # the paper's rows first
    assert not any("(ours)" in name for name in rows)   # no empty rows of the other protocol

    piece("digits-quick-seed0", "simclr-eval", {"linear": {"P1": 80.0, "P2": 81.0, "P3": 82.0}, "knn": 90.0, "finetune": 85.0})
    monkeypatch.setattr(cpu_lane, "LANE_PARTS", [("digits-quick", 0)])
    text = cpu_lane_results(Ctx(root=tmp_path, runs=tmp_path / "runs", data={}, device="cpu"))
    assert "| Linear P2 (ours) | 81.00 |" in text and "| Fine-tune (10% labels) | 85.00 |" in text
