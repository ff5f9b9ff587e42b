"""A lease simulated on the CPU (``scripts/evidence.py --simulate-lease``, ``make evidence-smoke``).

1. call A, in a fresh copy of this checkout (what the device receives: tracked and untracked-not-ignored
   files), runs ``tta-gsimclr`` at smoke sizes with ``--budget-s`` and ``--export OUT`` refreshed every
   second, and is killed by SIGKILL ``cut_s`` seconds after its export first holds a checkpoint (a call
   cut at its time limit, or crashed). The cut follows events, not the clock, so that a loaded machine
   cannot let call A finish first: once its training has written its first checkpoint the training
   process is stopped (SIGSTOP), and call A is killed once its export holds that checkpoint;
2. what call A left in OUT is imported into another fresh copy (``--import``: results into the
   checkout, state into ``.evidence/state.tar``), as this machine does between leases;
3. call B, in that copy and its own results root (a fresh machine: nothing of call A but the import),
   runs ``--smoke`` (every stage, or ``tta-gsimclr`` alone), continuing ``tta-gsimclr`` from the
   carried state;
4. an uncut run of ``tta-gsimclr`` gives the reference: the resumed part must reach the same result
   (every epoch's loss and kNN accuracy), with two calls and their warm-ups recorded.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from evidence_runner.context import ROOT, log


def copy_checkout(dest: Path) -> Path:
    """The files the device would receive: tracked and untracked files that git does not ignore."""
    listing = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True).stdout.decode().split("\0")
    for rel in listing:
        src = ROOT / rel
        if rel and src.is_file():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    from gsimclr.provenance import write_stamp

    write_stamp(ROOT, dest)  # as scripts/pack_for_device.py stamps what the device receives
    return dest


def _has_checkpoint(out: Path) -> bool:
    for chunk in out.glob("state-*.tgz"):
        try:
            with tarfile.open(chunk) as tar:
                if any(n.endswith("checkpoint.safetensors") for n in tar.getnames()):
                    return True
        except (OSError, tarfile.TarError, EOFError):  # being replaced right now
            continue
    return False


def _descendants(pid: int) -> list[int]:
    """The process ids below ``pid`` (children, their children, ...), read from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:          # the process ended meanwhile
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_for(event, proc: subprocess.Popen, what: str, safety_s: float) -> bool:
    """Poll until ``event()`` holds (True), or ``proc`` has exited (False); ``safety_s`` only guards
    against a hung call (a RuntimeError naming ``what``), it never decides the outcome."""
    t0 = time.monotonic()
    while not event():
        if proc.poll() is not None:
            return event()
        if time.monotonic() - t0 > safety_s:
            raise RuntimeError(f"lease simulation: no {what} after {safety_s:g} s")
        time.sleep(0.05)
    return True


def simulate(work: Path, cut_s: float = 0.0, full: bool = False, timeout: float = 3600) -> dict:
    """Run the simulation in ``work`` (a scratch folder); returns what it found (``same_result`` is the
    verdict). ``full``: call B runs every smoke stage, not only the cut part."""
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               GSIMCLR_EVIDENCE_DATA_HOME=str(work / "data-home"))  # the device's fixed data path
    env.pop("PYTHONPATH", None)

    def evidence(clone: Path, *args: str, **kw):
        return [sys.executable, str(clone / "scripts" / "evidence.py"), *args]

    clone_a, clone_b = copy_checkout(work / "clone-a"), copy_checkout(work / "clone-b")
    out_a = work / "out-a"
    log(f"lease simulation: call A in {clone_a}, cut {cut_s:g} s after its first exported checkpoint")
    t0 = time.monotonic()
    # a budget that never binds (the cut below ends the call), but makes the training a child process
    call_a = subprocess.Popen(evidence(clone_a, "--smoke", "--stage", "tta-gsimclr", "--budget-s", "86400",
                                       "--export", str(out_a), "--export-every", "1", "--out-root", str(work / "root-a")),
                              env=env, stderr=open(work / "call-a.log", "w"))
    trained = work / "root-a" / "runs" / "tta-gsimclr" / "run" / "simclr" / "checkpoint.safetensors"
    frozen: list[int] = []
    try:
        if _wait_for(trained.exists, call_a, "checkpoint from call A's training", timeout):
            frozen = _descendants(call_a.pid)         # the training: it cannot finish before the cut
            _signal_all(frozen, signal.SIGSTOP)
            if _wait_for(lambda: _has_checkpoint(out_a), call_a, "exported checkpoint", timeout) and cut_s > 0:
                _signal_all(frozen, signal.SIGCONT)   # a later cut: the training goes on until then
                time.sleep(cut_s)
    finally:
        if call_a.poll() is None:
            call_a.send_signal(signal.SIGKILL)
        _signal_all(frozen, signal.SIGKILL)           # stopped processes die of SIGKILL too
    call_a.wait()
    cut_at = time.monotonic() - t0
    finished_before_cut = call_a.returncode == 0
    exported = sorted(p.name for p in out_a.iterdir()) if out_a.exists() else []
    log(f"lease simulation: call A {'finished before the cut' if finished_before_cut else 'killed'} at {cut_at:.1f} s; "
        f"its export: {', '.join(exported) or 'nothing'}")

    root_b = work / "root-b"
    subprocess.run(evidence(clone_b, "--import", str(out_a), "--out-root", str(root_b)), env=env, check=True)
    carried = (root_b / ".evidence" / "state.tar").exists()
    stage = [] if full else ["--stage", "tta-gsimclr"]
    call_b = subprocess.run(evidence(clone_b, "--smoke", *stage, "--out-root", str(root_b)), env=env,
                            capture_output=True, text=True, timeout=timeout)
    (work / "call-b.log").write_text(call_b.stderr)
    uncut = subprocess.run(evidence(clone_a, "--smoke", "--stage", "tta-gsimclr", "--out-root", str(work / "root-uncut")),
                           env=env, capture_output=True, text=True, timeout=timeout)
    (work / "uncut.log").write_text(uncut.stderr)

    def result(root: Path) -> dict | None:
        path = root / "results" / "evidence" / "tta-gsimclr.json"
        return json.loads(path.read_text())["result"] if path.exists() else None

    resumed, reference = result(root_b), result(work / "root-uncut")
    same = bool(resumed and reference) and _same(resumed, reference)
    states = json.loads(call_b.stdout.strip().splitlines()[-1])["states"] if call_b.returncode in (0, 1) and call_b.stdout.strip() else {}
    commit = json.loads((root_b / "results" / "evidence" / "tta-gsimclr.json").read_text())["commit"] if resumed else None
    return {"cut_at_s": round(cut_at, 1), "commit": commit, "finished_before_cut": finished_before_cut, "exported": exported,
            "state_carried": carried, "call_b_status": call_b.returncode, "uncut_status": uncut.returncode,
            "states": states, "calls": (resumed or {}).get("calls"), "resumed": resumed, "uncut": reference,
            "same_result": same, "work": str(work)}


def _same(a: dict, b: dict) -> bool:
    """The same training: every epoch's loss (to float rounding) and every kNN check."""
    if a["epochs"] != b["epochs"] or len(a["losses"]) != len(b["losses"]):
        return False
    if any(not math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) for x, y in zip(a["losses"], b["losses"])):
        return False
    return [(c["epoch"], round(c["knn"], 4)) for c in a["curve"]] == [(c["epoch"], round(c["knn"], 4)) for c in b["curve"]]
