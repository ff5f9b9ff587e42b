"""benchmarks/tta_cpu.py: gsimclr pretrain and the lightly recipe side by side to an equal CPU budget."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import tta_cpu  # noqa: E402

TINY = ["--data", "digits", "--train-limit", "64", "--test-limit", "40", "--batch-size", "32",
        "--set", "image_size=16", "--set", "head_dims=16,8", "--set", "knn_k=10", "--poll-s", "0.2"]


def test_descendants_cpu_counts_a_child_process():
    """The CPU of worker processes (as a DataLoader's) is counted: a busy child's seconds show up."""
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.3: pass\ntime.sleep(30)"])
    try:
        deadline = time.time() + 60
        while tta_cpu.descendants_cpu_s() < 0.25 and time.time() < deadline:
            time.sleep(0.1)
        assert tta_cpu.descendants_cpu_s() >= 0.25
        assert tta_cpu.descendants_cpu_s(child.pid) == 0.0  # it has no children of its own
    finally:
        child.kill()
        child.wait()


def check(epoch, knn, cpu):
    return {"epoch": epoch, "knn": knn, "train_cpu_s": cpu, "train_wall_s": 2 * cpu, "wall_s": 3 * cpu + 5,
            "images": 100 if epoch else 0, "knn_cpu_s": 1.0}


def test_compare_times_the_accuracy_both_reached():
    g = tta_cpu.side_summary([{"event": "check", **c} for c in (check(0, 30, 0), check(1, 35, 10), check(2, 40, 20))])
    l = tta_cpu.side_summary([{"event": "check", **c} for c in (check(0, 30, 0), check(1, 33, 20), check(2, 36, 40))])
    c = tta_cpu.compare({"gsimclr": g, "lightly": l})
    assert c["target_knn"] == 36  # the lower of the best accuracies after training
    assert c["train_cpu_s"] == {"gsimclr": 20, "lightly": 40, "speedup": 2.0}  # 35 < 36 after epoch 1
    assert c["at_common_cpu_s"] == {"cpu_s": 20, "gsimclr": 40, "lightly": 33}
    assert g["images_per_cpu_s"] == 200 / 20 and l["best_knn"] == 36
    # a side with only its initial check has trained nothing: no comparison yet
    assert tta_cpu.compare({"gsimclr": g, "lightly": tta_cpu.side_summary([{"event": "check", **check(0, 30, 0)}])}) is None


def test_cli_args_spell_config_fields_as_pretrain_options():
    assert tta_cpu.cli_args({"head_dims": [16, 8], "head_batch_norm": False, "train_limit": 64}) == [
        "--head-dims", "16,8", "--head-batch-norm", "false", "--train-limit", "64"]


@pytest.mark.parametrize("argv, message", [
    ([], "--data is required"),
    (["--data", "digits", "--budget-cpu-minutes", "0"], "must be positive"),
    (["--data", "digits", "--set", "batch_size"], "KEY=VALUE"),
    (["--data", "digits", "--set", "no_such_option=1"], "no_such_option"),
])
def test_bad_options_are_refused_before_any_work(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        tta_cpu.main(argv + ["--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_side_by_side_run_stops_both_at_the_cpu_budget(tmp_path):
    pytest.importorskip("lightly")
    out = tmp_path / "out"
    argv = TINY + ["--epochs", "3", "--budget-cpu-minutes", "0.0001", "--out", str(out),
                   "--work-dir", str(tmp_path / "work"), "--lightly-workers", "0"]
    assert tta_cpu.main(argv) == 0
    report = json.loads((out / "tta-cpu.json").read_text())
    assert report["status"] == "finished" and report["same_config"] == {"equal": True, "differing_fields": []}
    assert report["git_commit"] and report["machine"]["cpu_cores"] >= 1 and report["versions"]["lightly"]
    for side in tta_cpu.SIDES:
        s = report["sides"][side]
        # the initial weights' check, then one epoch: a second one would end past the budget
        assert [c["epoch"] for c in s["checks"]] == [0, 1]
        assert s["status"].startswith("budget") and s["returncode"] == 0
        assert all(0 <= c["knn"] <= 100 for c in s["checks"])
        assert s["checks"][1]["train_cpu_s"] > 0 and s["checks"][1]["knn_cpu_s"] > 0
        assert s["checks"][1]["wall_s"] >= s["checks"][1]["train_wall_s"]
    # the same initial weights, the same monitor: the same accuracy before training (up to one tie of 40 queries
    # broken otherwise by float rounding: gsimclr keeps its model channels_last)
    before = [report["sides"][side]["checks"][0]["knn"] for side in tta_cpu.SIDES]
    assert abs(before[0] - before[1]) <= 100 / 40
    # gsimclr ran the real command: its run folder has the CLI's run.json and metrics
    assert json.loads((tmp_path / "work" / "gsimclr" / "run.json").read_text())["command"].startswith("gsimclr")
    md = (out / "tta-cpu.md").read_text()
    assert "| gsimclr pretrain | 1 |" in md and "| lightly recipe | 1 |" in md
    assert (out / "tta-cpu.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporaries

    # --render writes the table and plot again from the JSON alone
    rendered = tmp_path / "rendered"
    for f in (tmp_path / "work").glob("*.progress.jsonl"):
        f.unlink()
    assert tta_cpu.main(["--render", str(out / "tta-cpu.json"), "--out", str(rendered)]) == 0
    assert (rendered / "tta-cpu.md").read_text() == md
    # a work folder holding a run is not reused
    with pytest.raises(SystemExit):
        tta_cpu.main(argv)


def test_wall_limit_cuts_both_sides_and_says_so(tmp_path):
    """--max-wall-minutes stops both sides (here during their set-up); the report says they were cut."""
    out = tmp_path / "out"
    argv = TINY + ["--epochs", "1", "--max-wall-minutes", "0.01", "--out", str(out), "--work-dir", str(tmp_path / "w"),
                   "--sides", "gsimclr"]
    assert tta_cpu.main(argv) == 1
    report = json.loads((out / "tta-cpu.json").read_text())
    assert report["status"] == "stopped at --max-wall-minutes"
    assert report["sides"]["gsimclr"]["status"] == "cut (stopped at --max-wall-minutes)"
    assert report["sides"]["lightly"]["status"] == "not run" and report["comparison"] is None
    assert "| lightly recipe | 0 |" in (out / "tta-cpu.md").read_text()


def test_side_status_tells_a_failure_from_a_cut():
    report = {"status": "failed", "sides": {"gsimclr": {"returncode": 1, "log": "g.log"}}}
    assert tta_cpu.side_status(report, "gsimclr", []) == "failed (exit 1; see g.log)"
    report["sides"]["gsimclr"]["returncode"] = 0
    assert tta_cpu.side_status(report, "gsimclr", [{"event": "stop", "reason": "schedule done"}]) == "schedule done"
