"""The CPU lane: the paper's CIFAR-10 table on this CPU, in the background, carried from one working period
to the next (issue 24).

A working period's CPU is idle much of the time. ``python scripts/evidence.py --lane cpu`` (``make
evidence-cpu`` starts it in the background at ``nice -n 19``) continues the next unfinished *part* of
:data:`LANE_PARTS` (``paper-cifar10`` seed 0, then ``paper-cifar10-clean`` seed 0, then seeds 1 and 2), each as
a ``gsimclr run --resume --jobs`` child (:data:`LANE_STAGE_JOBS` stage workers), :data:`LANE_JOBS` part(s) at once, within a time budget, with a checkpoint within every pretraining epoch
every :data:`CHECKPOINT_MINUTES` minutes (``--checkpoint-minutes``), so a kill loses at most that much of a
pretraining, or the evaluation stage in flight.

**Where its state lives.** In a persistent folder outside the work tree, :func:`lane_home`
(``$GSIMCLR_LANE_HOME``, default ``~/.cache/gsimclr/evidence``): ``runs/<part>/`` (the run folders),
``lane.json`` (progress, the sessions that worked on it, each finished piece's wall and CPU seconds) and
``logs/``. The next working period on the same machine finds it there. On a new machine it resumes from the
repository: ``--save-state`` copies the running part's run folder and ``lane.json`` into one committed folder,
:data:`REPO_STATE` (replaced in place, never a new path; git stores an unchanged file once), which a lane
whose home holds less work unpacks at start.
Which copy is newer is decided by the work each holds (``work_s``: the lane's accumulated CPU seconds).

**What it writes into the checkout.** Every finished piece (the pseudo labels with NMI/ARI, each
pretraining, each evaluation, the supervised baseline, and the whole part) is a JSON file under
:data:`RESULTS_DIR`, with the command, commit, CPU, versions, date, and wall and CPU seconds summed over
every call that worked on it. ``python scripts/evidence.py --report`` puts them into ``RESULTS.md``.

``--status`` says which part runs, its progress and ETA from measured rates, what is committed and what a
kill now would lose.
"""

from __future__ import annotations

import calendar
import contextlib
import datetime as dt
import fcntl
import json
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evidence_runner.context import ROOT, _die_with_parent, log

LANE_PARTS: tuple[tuple[str, int], ...] = (
    ("paper-cifar10", 0), ("paper-cifar10-clean", 0),
    ("paper-cifar10", 1), ("paper-cifar10-clean", 1),
    ("paper-cifar10", 2), ("paper-cifar10-clean", 2))
"""The lane's order: seed 0 of the exact preset first, then its clean variant, then seeds 1 and 2."""
LANE_THREADS = 1
"""torch threads of a lane call. One: at nice 19 on a shared 2-core machine each thread is preempted whenever
the working period's own jobs run, and a 2-thread step waits for the later one. Measured side by side at load
average 21 (2026-12-07), one training step of the paper's autoencoder took 1.55 s with one thread and 4.1-4.9 s
with two; the paper model's step in benchmarks/README.md "On a loaded CPU" reversed likewise. On an idle machine
two threads would be faster (about 1.6x); ``--lane-threads 2`` when the machine is known to stay quiet."""
LANE_JOBS = 1
"""Parts run at once, each one child. One: the part in flight already keeps both cores busy with its stages
(:data:`LANE_STAGE_JOBS`), so each part is finished before the next begins (seed 0 of the exact preset first,
as the order says). Up to 2026-12-07 14:40 UTC the lane ran two parts at once, one thread each."""
LANE_STAGE_JOBS = 2
"""``gsimclr run --jobs`` of each lane call: its stages in this many worker processes of :data:`LANE_THREADS`
threads each (SimCLR and G-SimCLR pretraining side by side once the pseudo labels exist, the supervised baseline
beside them). On this 2-core machine two one-thread workers do about twice the work of one and finish a part in
about half the time; both yield to the working period's jobs (nice 19) when it is busy."""
CHECKPOINT_MINUTES = 5.0        # a checkpoint within a pretraining epoch this often: a kill loses at most this
PERIOD_GAP_S = 1800.0         # more than this between two lane calls: another working period (see period_of)
LANE_OPTIONS: tuple[str, ...] = ("--device", "cpu")
"""Options every lane call adds to ``gsimclr run``: the fastest faithful setting on this CPU (see "Paper recipe
on the CPU" in benchmarks/README.md); fp32, as the presets are."""
WORKER_LINE = re.compile(r"^(\S+): started in worker process (\d+)$", re.MULTILINE)   # gsimclr run --jobs
RESULTS_DIR = "results/evidence/cpu"
ZOO_DIR = "results/evidence/cpu/zoo"
ZOO_SEEDS = (0,)                # finished pretrainings kept in the repository (the checkpoint the state carries)
REPO_STATE = "results/evidence/cpu-lane/state"
REPO_LANE_JSON = "results/evidence/cpu-lane/lane.json"
POLL_S = float(os.environ.get("GSIMCLR_LANE_POLL_S", 10.0))   # how often the lane looks at its child
STATE_EXCLUDE = ("tensorboard", ".png", ".lock", ".tmp")
SMALL_PART_MIB = 1.0            # a part behind the first one is carried as it is now only while this small
STATE_LIMIT_MIB = 20.0          # a committed state larger than this is refused (the repository's budget)
REPO_BUDGET_MIB = 23.0
"""What the lane may add to the repository over its whole program (issue 24: "less than ~25 MB", from a
1.6 MB repository): the bytes of every file version ever committed under ``results/evidence`` (git history,
uncompressed: :func:`repo_growth_mib`). A state save or a zoo export that would pass it keeps the last
committed copy instead (the home folder still holds the newer one). A pretraining checkpoint in flight is
carried only while room remains for every method's finished checkpoint afterwards (:func:`finish_reserve_mib`):
the finished one, saved once and unchanged after, is what the part's evaluations and the zoo need on a new
machine, whereas a checkpoint in flight is replaced by the next save (4.9 MB each for the paper model)."""


def lane_home() -> Path:
    return Path(os.environ.get("GSIMCLR_LANE_HOME") or Path.home() / ".cache" / "gsimclr" / "evidence")


def part_name(preset: str, seed: int) -> str:
    return f"{preset}-seed{seed}"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return "unknown"


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return None


def checkpoint_meta(path: Path) -> dict | None:
    """A gsimclr checkpoint's metadata, read from the safetensors header without PyTorch (None if unreadable)."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        return json.loads(header["__metadata__"]["gsimclr"])
    return None


# ------------------------------------------------------------------------------------------ the plan


@dataclass
class LanePlan:
    """What the lane runs: its parts (preset, seed), the data, the options added to every call, and where
    results and the committed state go (the checkout, or a test's folder)."""

    parts: tuple[tuple[str, int], ...] = LANE_PARTS
    data: str = ""
    options: tuple[str, ...] = LANE_OPTIONS
    checkpoint_minutes: float = CHECKPOINT_MINUTES
    threads: int = LANE_THREADS
    jobs: int = LANE_JOBS
    stage_jobs: int = LANE_STAGE_JOBS
    repo: Path = ROOT
    home: Path | None = None

    def __post_init__(self):
        self.home = Path(self.home) if self.home is not None else lane_home()
        self.repo = Path(self.repo)

    @property
    def lane_json(self) -> Path:
        return self.home / "lane.json"

    def run_dir(self, part: str) -> Path:
        return self.home / "runs" / part

    def result_path(self, part: str, piece: str | None = None) -> Path:
        return self.repo / RESULTS_DIR / (f"{part}.json" if piece is None else f"{part}/{piece}.json")

    def names(self) -> list[str]:
        return [part_name(p, s) for p, s in self.parts]


def pieces_of(run_dir: Path, methods: tuple[str, ...] = ("simclr", "gsimclr"), epochs: int | None = None) -> dict:
    """The pieces of a ``gsimclr run`` folder in the order the run makes them, each ``True`` once finished:
    ``pseudo_labels``, then per method ``<method>-pretrain`` and ``<method>-eval``, then ``supervised``."""
    out = {"pseudo_labels": (run_dir / "pseudo_labels" / "pseudo_labels.npy").exists()}
    for m in methods:
        meta = checkpoint_meta(run_dir / m / "checkpoint.safetensors") or {}
        want = epochs or (meta.get("config") or {}).get("epochs")
        out[f"{m}-pretrain"] = bool(want) and int(meta.get("epoch", 0)) >= int(want) and not meta.get("partial")
        out[f"{m}-eval"] = (run_dir / m / "eval.json").exists()
    out["supervised"] = (run_dir / "supervised.json").exists()
    return out


def piece_kind(piece: str) -> str:
    """``pseudo_labels``, ``pretrain``, ``eval`` or ``supervised``."""
    return piece.rsplit("-", 1)[-1] if "-" in piece else piece


def pretrain_position(run_dir: Path, method: str) -> dict:
    """Where a method's pretraining stands: whole epochs, steps into the next, images/s measured, when its
    checkpoint was written."""
    ckpt = run_dir / method / "checkpoint.safetensors"
    meta = checkpoint_meta(ckpt) or {}
    partial = meta.get("partial") or {}
    records = []
    with contextlib.suppress(OSError):
        records = [json.loads(line) for line in (run_dir / method / "metrics.jsonl").read_text().splitlines() if line]
    rates = [r["images_per_s"] for r in records if r.get("images_per_s")]
    if partial.get("seconds"):
        rates.append(partial["seen"] / partial["seconds"])
    cfg = meta.get("config") or {}
    return {"epoch": int(meta.get("epoch", 0)), "epochs": cfg.get("epochs"), "steps_into_epoch": partial.get("steps"),
            "images_into_epoch": partial.get("seen", 0), "images": meta.get("images"),
            "images_per_s": rates[-1] if rates else None,
            "checkpoint_age_s": time.time() - ckpt.stat().st_mtime if ckpt.exists() else None,
            "last_loss": records[-1]["loss"] if records else None}


# ------------------------------------------------------------------------------------------ lane.json


def new_lane_state() -> dict:
    return {"format": 1, "work_s": 0.0, "updated": None, "sessions": [], "pieces": {}, "current": None}


def load_lane(plan: LanePlan) -> dict:
    state = read_json(plan.lane_json)
    return state if isinstance(state, dict) and state.get("format") == 1 else new_lane_state()


def save_lane(plan: LanePlan, state: dict) -> None:
    state["updated"] = utc_now()
    write_json_atomic(plan.lane_json, state)


def repo_lane_state(plan: LanePlan) -> dict | None:
    """``lane.json`` of the committed state (None when there is none)."""
    state = read_json(plan.repo / REPO_STATE / "lane.json")
    return state if isinstance(state, dict) else None


def restore(plan: LanePlan) -> tuple[dict, str]:
    """The lane's state at start: the home folder's, or the committed one when it holds more work (a new
    machine, or a home older than the repository). Returns the state and where it came from."""
    home = load_lane(plan) if plan.lane_json.exists() else None
    committed = repo_lane_state(plan)
    if committed is not None and (home is None or committed.get("work_s", 0) > home.get("work_s", 0)):
        unpack_state(plan)
        return load_lane(plan), "repository"
    if home is not None:
        return home, "home"
    return new_lane_state(), "fresh"


def unpack_state(plan: LanePlan) -> None:
    """Put the committed state into the home folder: its run folders replace the home's, whole."""
    import shutil

    src = plan.repo / REPO_STATE
    plan.home.mkdir(parents=True, exist_ok=True)
    for run in sorted((src / "runs").iterdir()) if (src / "runs").is_dir() else []:
        dest = plan.run_dir(run.name)
        tmp = dest.with_name(f".{run.name}.unpacking")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(run, tmp, symlinks=False)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    shutil.copyfile(src / "lane.json", plan.lane_json)


def repo_growth_mib(repo: Path, under: str = "results/evidence") -> float:
    """MiB of every distinct file version ever committed under ``under`` in ``repo``'s git history
    (uncompressed; 0 outside a git checkout): what the lane has added to the repository so far."""
    try:
        objects = subprocess.run(["git", "-C", str(repo), "rev-list", "--objects", "--all", "--", under],
                                 capture_output=True, text=True, timeout=120, check=True).stdout
        sizes = subprocess.run(["git", "-C", str(repo), "cat-file", "--batch-check=%(objecttype) %(objectsize)"],
                               input="\n".join(line.split(" ", 1)[0] for line in objects.splitlines()),
                               capture_output=True, text=True, timeout=120, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0.0
    return sum(int(size) for kind, size in (line.split() for line in sizes.splitlines() if line.strip())
               if kind == "blob") / 2**20


def finish_reserve_mib(run_dir: Path, methods: tuple[str, ...] = ("simclr", "gsimclr")) -> float:
    """MiB to keep free for the finished checkpoints of ``run_dir``'s methods whose pretraining is not finished
    (each the size of its checkpoint in flight, else 5 MiB)."""
    done = pieces_of(run_dir, methods)
    reserve = 0.0
    for method in methods:
        if not done.get(f"{method}-pretrain"):
            ckpt = run_dir / method / "checkpoint.safetensors"
            reserve += ckpt.stat().st_size / 2**20 if ckpt.exists() else 5.0
    return reserve


def sha256_of(path: Path) -> str:
    """A file's SHA-256 (the package's own, which also names store and cache files)."""
    from gsimclr.data.checksums import sha256

    return sha256(path)


def in_history(repo: Path, path: Path) -> bool:
    """Whether a file with ``path``'s exact content is already stored in ``repo``'s git objects (then
    committing it again costs nothing)."""
    try:
        blob = subprocess.run(["git", "-C", str(repo), "hash-object", str(path)], capture_output=True, text=True,
                              timeout=60, check=True).stdout.strip()
        return subprocess.run(["git", "-C", str(repo), "cat-file", "-e", blob], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _new_bytes(files: list[Path], root: Path, committed: Path) -> int:
    """Bytes of ``files`` (under ``root``) whose committed copy (under ``committed``) is missing or differs:
    what saving them would add to the repository."""
    new = 0
    for path in files:
        old = committed / path.relative_to(root)
        if not (old.is_file() and old.stat().st_size == path.stat().st_size and old.read_bytes() == path.read_bytes()):
            new += path.stat().st_size
    return new


def save_state(plan: LanePlan) -> dict:
    """Copy the unfinished parts' run folders (without TensorBoard files and plots) and ``lane.json`` into
    the folder :data:`REPO_STATE`, replacing what it held: one path, whose unchanged files (a finished
    pretraining's checkpoint) git stores once, so each working period's commit adds only what changed.

    The repository's growth is the price of this insurance (a new machine; the same machine keeps the home
    folder), so only the first unfinished part (the one the lane finishes first) is carried as it is now.
    A part behind it (``--lane-jobs 2``) is carried as it is now only while it is small (under
    :data:`SMALL_PART_MIB`: no checkpoint yet); otherwise its last committed copy is kept unchanged (a
    consistent earlier snapshot, which git already holds), or, if none was committed, it is not carried (a
    new machine would start it again). A part whose changed files would take the lane past
    :data:`REPO_BUDGET_MIB` of repository growth is kept as committed too (``over_budget``)."""
    import shutil

    state = load_lane(plan)
    unfinished = [p for p in plan.names() if plan.run_dir(p).exists() and not plan.result_path(p).exists()]
    dest = plan.repo / REPO_STATE
    tmp = dest.with_name(f".{dest.name}.saving")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "runs").mkdir(parents=True)
    size = 0
    carried, kept, dropped, over = [], [], [], []
    grown = repo_growth_mib(plan.repo)
    for i, part in enumerate(unfinished):
        root = plan.run_dir(part)
        files = [p for p in sorted(root.rglob("*")) if p.is_file()
                 and not any(x in p.relative_to(root).as_posix() for x in STATE_EXCLUDE)]
        part_size = sum(p.stat().st_size for p in files)
        adds = _new_bytes(files, root, dest / "runs" / part) / 2**20
        if grown + adds + finish_reserve_mib(root) > REPO_BUDGET_MIB and adds > 0:
            over.append(part)
        if (i > 0 and part_size / 2**20 > SMALL_PART_MIB) or part in over:
            old = dest / "runs" / part
            if old.is_dir():
                shutil.copytree(old, tmp / "runs" / part)
                size += sum(p.stat().st_size for p in old.rglob("*") if p.is_file())
                kept.append(part)
            else:
                dropped.append(part)
            continue
        grown += adds
        for path in files:
            target = tmp / "runs" / part / path.relative_to(root).as_posix()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        size += part_size
        carried.append(part)
    # which lane work each committed run folder holds: a part kept as committed is older than lane.json's work
    previous = read_json(dest / "lane.json") or {}
    snaps = dict(previous.get("snapshots") or {})
    for part in kept:
        snaps.setdefault(part, {"saved": previous.get("updated"), "work_s": previous.get("work_s")})
    for part in carried:
        snaps[part] = {"saved": utc_now(), "work_s": state.get("work_s")}
    state = {**state, "snapshots": {p: snaps[p] for p in carried + kept}}
    write_json_atomic(tmp / "lane.json", state)
    if size / 2**20 > STATE_LIMIT_MIB:
        shutil.rmtree(tmp)
        raise SystemExit(f"--save-state: the state would be {size / 2**20:.1f} MiB, over {STATE_LIMIT_MIB:.0f} MiB; "
                         "not written")
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    write_json_atomic(plan.repo / REPO_LANE_JSON, state)
    return {"path": str(dest), "mib": round(size / 2**20, 2), "parts": carried, "kept_as_committed": kept,
            "not_carried": dropped, "over_budget": over, "repo_growth_mib": round(grown, 2),
            "repo_budget_mib": REPO_BUDGET_MIB, "work_s": state.get("work_s")}


# ------------------------------------------------------------------------------------------ the supervisor


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) and its waited-for children, from /proc."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = sum(int(x) for x in fields[11:15])   # utime stime cutime cstime
        return ticks / os.sysconf("SC_CLK_TCK")
    return 0.0


def lowest_priority(pid: int) -> None:
    """The child's whole scheduling group at the lowest priority. With autogroup scheduling (Linux's default
    on desktops and on this machine: /proc/sys/kernel/sched_autogroup_enabled = 1) a process's nice value
    ranks it only within its session's group, and the child, in a session of its own, would otherwise share
    the CPU equally with the working period's jobs: measured here, the nice-19 lane took 55% of a core beside
    a test run (50%) until its group's nice was set to 19."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, 19)
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text("19")


def machine() -> dict:
    try:
        from gsimclr.provenance import cpu_name
        cpu = cpu_name()
    except Exception:  # noqa: BLE001 - provenance is best effort
        cpu = platform.processor()
    return {"cpu": cpu, "cpu_cores": os.cpu_count(), "host": socket.gethostname(), "boot_id": boot_id(),
            "python": platform.python_version()}


def data_mounted(data: str) -> str | None:
    """When the data folder was last put in place (its modification time, UTC): a working period that
    mounts or copies the data anew changes it."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(os.stat(data).st_mtime)) if data else None
    except OSError:
        return None


def period_of(sessions: list[dict], session: dict, data: str) -> dict:
    """Which working period a lane call belongs to: a new one when the machine booted anew, the data was
    mounted anew, or more than :data:`PERIOD_GAP_S` passed since the last call ended (a working period is
    3 hours; the lane is restarted within it only after a short stop). ``gap_s``: the time between."""
    mounted = data_mounted(data)
    if not sessions:
        return {"period": 1, "gap_s": None, "data_mounted": mounted}
    last = sessions[-1]
    gap = None
    with contextlib.suppress(TypeError, ValueError):
        ended = calendar.timegm(time.strptime(last.get("ended") or last["started"], "%Y-%m-%d %H:%M:%S UTC"))
        gap = round(calendar.timegm(time.strptime(session["started"], "%Y-%m-%d %H:%M:%S UTC")) - ended, 1)
    new = (last.get("boot_id") != session.get("boot_id") or (gap is not None and gap > PERIOD_GAP_S)
           or (mounted is not None and last.get("data_mounted") not in (None, mounted)))
    period = int(last.get("period") or len({s.get("period") for s in sessions}) or 1) + (1 if new else 0)
    return {"period": period, "gap_s": gap, "data_mounted": mounted}


def versions_now() -> dict:
    from gsimclr.provenance import package_version

    return {k: package_version(k) for k in ("torch", "torchvision", "numpy", "scikit-learn", "gsimclr")}


@dataclass
class Call:
    """A ``gsimclr run`` child of the lane: its part, process, log file and what was accounted of it."""

    part: str
    preset: str
    seed: int
    proc: subprocess.Popen
    logf: Any
    shown: str
    pieces: dict
    started: float
    last_wall: float
    last_cpu: float = 0.0
    log_offset: int = 0                              # where this call's lines begin in the part's log
    workers: dict = field(default_factory=dict)      # pid -> stage, from "<stage>: started in worker process <pid>"
    worker_cpu: dict = field(default_factory=dict)   # pid -> its CPU seconds at the last poll


class Lane:
    """One working period's lane: restore, then run parts in order until the budget ends."""

    def __init__(self, plan: LanePlan, budget_s: float):
        self.plan, self.budget_s = plan, budget_s
        self.deadline = time.monotonic() + budget_s
        self.state: dict = {}
        self.session: dict = {}
        self.stop = False

    # the one lane of a home folder at a time
    @contextlib.contextmanager
    def locked(self):
        self.plan.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.plan.home / "lane.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
                raise SystemExit(f"a CPU lane already runs from {self.plan.home} (pid {pid or '?'}); "
                                 "see --status") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)

    def run(self) -> dict:
        from gsimclr.provenance import git_commit

        with self.locked():
            self.state, source = restore(self.plan)
            commit = git_commit(ROOT)
            self.session = {"started": utc_now(), "ended": None, "resumed_from": source, **machine(),
                            "commit": commit, "budget_s": self.budget_s, "jobs": self.plan.jobs,
                            "stage_jobs": self.plan.stage_jobs, "threads": self.plan.threads,
                            "work_s_at_start": self.state["work_s"],
                            "pieces_at_start": sum(len(v) for v in self.state["pieces"].values() if isinstance(v, dict)),
                            "cpu_s": 0.0, "wall_s": 0.0, "calls": 0}
            self.session.update(period_of(self.state["sessions"], self.session, self.plan.data))
            if source == "repository":   # a run folder kept as committed is older than the lane's work
                for part, snap in (self.state.get("snapshots") or {}).items():
                    lost = self.state.get("work_s", 0) - (snap.get("work_s") or 0)
                    if lost > 60:
                        self.session.setdefault("notes", []).append(
                            f"resumed from the repository: {part}'s run folder is the snapshot saved {snap.get('saved')} "
                            f"(at {(snap.get('work_s') or 0) / 3600:.2f} CPU h of lane work); the "
                            f"{lost / 3600:.2f} CPU h after it were not carried (repository budget) and are done again")
            self.state["sessions"].append(self.session)
            save_lane(self.plan, self.state)
            log(f"CPU lane: home {self.plan.home}, resumed from {source}, commit {commit}, budget {self.budget_s:.0f} s, "
                f"{self.plan.jobs} part(s) at once, {self.plan.stage_jobs} stage worker(s) each")
            signal.signal(signal.SIGTERM, self._on_term)
            calls: dict[str, Call] = {}
            failures: dict[str, int] = {}
            retry_at: dict[str, float] = {}
            try:
                while not self.stop and self.seconds_left() > 60:
                    for preset, seed in self.plan.parts:   # the next unfinished parts, in order, up to --lane-jobs
                        part = part_name(preset, seed)
                        if (len(calls) >= self.plan.jobs or part in calls or self.plan.result_path(part).exists()
                                or failures.get(part, 0) >= 3 or retry_at.get(part, 0) > time.monotonic()):
                            continue
                        calls[part] = self.start_call(preset, seed)
                    if not calls:
                        pending = [p for p in self.plan.names()
                                   if not self.plan.result_path(p).exists() and failures.get(p, 0) < 3]
                        if not pending:
                            break    # every part complete, or failed three times in this call
                        time.sleep(min(POLL_S, max(0.0, self.seconds_left() - 60)))   # a retry's wait
                        continue
                    time.sleep(POLL_S)
                    for part, call in list(calls.items()):
                        code = self.poll_call(call)
                        if code is None:
                            continue
                        del calls[part]
                        self.end_call(call)
                        if code != 0:
                            failures[part] = failures.get(part, 0) + 1
                            retry_at[part] = time.monotonic() + 60
                            if failures[part] >= 3:
                                log(f"CPU lane: {part} failed {failures[part]} times; not retried in this call "
                                    f"(see {self.log_path(part)})")
                if calls:
                    log(f"CPU lane: budget over or asked to stop; stopping {', '.join(calls)}")
            finally:
                for call in calls.values():
                    self.stop_call(call)
                    self.end_call(call)
                self.session["ended"] = utc_now()
                save_lane(self.plan, self.state)
            return self.session

    def _on_term(self, *_):
        self.stop = True

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def log_path(self, part: str) -> Path:
        return self.plan.home / "logs" / f"{part}.log"

    def command(self, preset: str, seed: int) -> list[str]:
        out = self.plan.run_dir(part_name(preset, seed))
        minutes = max(1.0, (self.seconds_left() - 30) / 60)
        argv = [sys.executable, "-m", "gsimclr", "run", "--preset", preset, "--data", self.plan.data, "--seed", str(seed),
                "--out", str(out), *self.plan.options, "--checkpoint-minutes", f"{self.plan.checkpoint_minutes:g}",
                "--max-minutes", f"{minutes:.1f}", "--jobs", str(self.plan.stage_jobs)]
        if out.exists():
            argv.append("--resume")
        return argv

    def start_call(self, preset: str, seed: int) -> "Call":
        """One ``gsimclr run`` child for the part, at the lowest priority, in a session of its own (the lane
        stops it as a group) and killed with the lane (PR_SET_PDEATHSIG): a lane killed by SIGKILL leaves no
        child writing into its run folder."""
        part = part_name(preset, seed)
        argv = self.command(preset, seed)
        shown = " ".join(shlex.quote(a) for a in ["gsimclr", *argv[3:]])
        self.log_path(part).parent.mkdir(parents=True, exist_ok=True)
        # the call's threads: LANE_THREADS for each of its --jobs workers (each gets the call's share)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(self.plan.threads * self.plan.stage_jobs)}
        src = str(ROOT / "src")
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        pieces = self.state["pieces"].setdefault(part, {})
        if part not in self.session.setdefault("parts", []):
            self.session["parts"].append(part)
        logf = open(self.log_path(part), "a")
        logf.write(f"\n[{utc_now()}] {shown}\n")
        logf.flush()
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True, preexec_fn=_die_with_parent)
        lowest_priority(proc.pid)
        self.session["calls"] += 1
        self.state["current"] = [c for c in (self.state.get("current") or []) if isinstance(c, dict)
                                 and c.get("part") != part] + [
            {"part": part, "pid": proc.pid, "since": utc_now(), "command": shown}]
        now = time.monotonic()
        return Call(part, preset, seed, proc, logf, shown, pieces, now, now, log_offset=logf.tell())

    def poll_call(self, call: "Call") -> int | None:
        """Account the child's wall and CPU seconds since the last poll; its exit code once it exited. Its CPU
        seconds come from /proc while it runs and, at exit, from the kernel's accounting of that one child
        (wait4), so two children at once are told apart."""
        pid, status, usage = os.wait4(call.proc.pid, os.WNOHANG)
        by_stage = self.stage_cpu(call)
        if pid == 0:
            # the child's own seconds and its reaped workers' (cutime), plus its workers still alive or unreaped
            live = sum(call.worker_cpu.get(w, 0.0) for w in call.workers if Path(f"/proc/{w}").exists())
            cpu, code = max(call.last_cpu, process_cpu_s(call.proc.pid) + live), None
        else:
            code = os.waitstatus_to_exitcode(status)
            call.proc.returncode = code
            cpu = max(call.last_cpu, usage.ru_utime + usage.ru_stime)
        now = time.monotonic()
        self.account(call.part, call.pieces, now - call.last_wall, max(0.0, cpu - call.last_cpu), call.shown,
                     call.preset, call.seed, by_stage)
        call.last_wall, call.last_cpu = now, cpu
        return code

    def stage_cpu(self, call: "Call") -> dict[str, float]:
        """The CPU seconds of each stage's worker (``gsimclr run --jobs``) since the last poll, by stage; {} for
        a call without workers. A worker is named by the line ``<stage>: started in worker process <pid>`` of the
        call's log; its last poll interval before it exits is counted in the call's total only."""
        with contextlib.suppress(OSError):
            with open(self.log_path(call.part), "rb") as f:
                f.seek(call.log_offset)
                text = f.read().decode(errors="replace")
            complete = text.rsplit("\n", 1)[0] if "\n" in text else ""
            call.log_offset += len(complete.encode()) + (1 if complete else 0)
            for stage, pid in WORKER_LINE.findall(complete):
                call.workers[int(pid)] = stage
        by_stage: dict[str, float] = {}
        for pid, stage in call.workers.items():
            now = process_cpu_s(pid) if Path(f"/proc/{pid}").exists() else 0.0
            if now > call.worker_cpu.get(pid, 0.0):
                by_stage[stage] = by_stage.get(stage, 0.0) + now - call.worker_cpu.get(pid, 0.0)
                call.worker_cpu[pid] = now
        return by_stage

    def stop_call(self, call: "Call") -> None:
        """SIGTERM to the child's group (a pretraining saves its position and exits), SIGKILL after 30 s."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(call.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while self.poll_call(call) is None:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(call.proc.pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.2)

    def end_call(self, call: "Call") -> None:
        call.logf.close()
        self.state["current"] = [c for c in (self.state.get("current") or []) if isinstance(c, dict)
                                 and c.get("part") != call.part] or None
        self.export_zoo(call.part, call.seed)
        self.finish_part(call.part, call.preset, call.seed, call.shown, time.monotonic() - call.started)
        save_lane(self.plan, self.state)

    def account(self, part: str, pieces: dict, wall: float, cpu: float, command: str, preset: str, seed: int,
                by_stage: dict[str, float] | None = None) -> None:
        """Add this poll's wall and CPU seconds to the pieces in flight when the interval began, and write each
        piece that has finished. A call without stage workers runs one piece at a time: the first unfinished
        one at the previous poll gets the call's CPU seconds. With workers (``--jobs``), each worker's seconds
        (``by_stage``) go to its stage's first unfinished piece (a method's pretraining, then its evaluation)."""
        done = pieces_of(self.plan.run_dir(part))
        self.state["work_s"] += cpu
        self.session["cpu_s"] += cpu
        self.session["wall_s"] += wall
        for name in done:
            pieces.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "commands": [], "finished": None})
        unfinished = [name for name, entry in pieces.items() if entry["finished"] is None and name in done]
        if by_stage:
            shares: dict[str, float] = {}
            for stage, seconds in by_stage.items():
                name = next((n for n in unfinished if n == stage or n.startswith(stage + "-")), None)
                if name is not None:
                    shares[name] = shares.get(name, 0.0) + seconds
        else:
            shares = {unfinished[0]: cpu} if unfinished else {}
        for name, seconds in shares.items():
            entry = pieces[name]
            entry["wall_s"] += wall
            entry["cpu_s"] += seconds
            if command not in entry["commands"]:
                entry["commands"].append(command)
            entry.setdefault("started", utc_now())   # when the lane first saw it run
        now_flight = next((name for name, ok in done.items() if not ok), None)
        if now_flight is not None and command not in pieces[now_flight]["commands"] and not by_stage:
            pieces[now_flight]["commands"].append(command)   # it began in this call (timed from the next poll)
        for name, ok in done.items():
            entry = pieces[name]
            if ok and entry["finished"] is None:
                if not entry["commands"]:   # began and finished within one poll interval (timed with the one before)
                    entry["commands"].append(command)
                entry.setdefault("started", utc_now())   # first seen finished: its start is that poll's time
                entry["finished"] = utc_now()
                self.write_piece(part, preset, seed, name, entry)
        save_lane(self.plan, self.state)

    def export_zoo(self, part: str, seed: int) -> None:
        """Each finished pretraining of a :data:`ZOO_SEEDS` seed, kept once (after the call: the run holds its
        folder's lock while it runs) in :data:`ZOO_DIR`/<part>-<method>/: its checkpoint, byte for byte (the
        project's own loader reads it strictly, ``gsimclr export`` turns it into a torchvision, Hugging Face or
        ONNX backbone), and ``zoo.json`` (what it is and how to use it). The checkpoint is the one a state save
        carries once its pretraining has finished, so git stores the two as one file: the zoo costs the
        repository nothing more than the insurance does (:data:`REPO_BUDGET_MIB`)."""
        import shutil

        if seed not in ZOO_SEEDS:
            return
        run_dir = self.plan.run_dir(part)
        done = pieces_of(run_dir)
        for method in ("simclr", "gsimclr"):
            dest = self.plan.repo / ZOO_DIR / f"{part}-{method}"
            weights = run_dir / method / "checkpoint.safetensors"
            if not done.get(f"{method}-pretrain") or (dest / "zoo.json").exists():
                continue
            cost = 0.0 if in_history(self.plan.repo, weights) else weights.stat().st_size / 2**20
            grown = repo_growth_mib(self.plan.repo)
            if grown + cost > REPO_BUDGET_MIB:
                log(f"CPU lane: {part} {method} backbone not kept in the repository: it would pass the lane's "
                    f"budget ({grown:.1f} of {REPO_BUDGET_MIB:g} MiB used; its checkpoint stays in {weights.parent})")
                continue
            meta = checkpoint_meta(weights) or {}
            tmp = dest.with_name(f".{dest.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            shutil.copyfile(weights, tmp / "checkpoint.safetensors")
            rel = dest.relative_to(self.plan.repo).as_posix()
            write_json_atomic(tmp / "zoo.json", {
                "part": part, "seed": seed, "method": method, "preset": part.rsplit("-seed", 1)[0],
                "model": (meta.get("config") or {}).get("model"), "epoch": meta.get("epoch"),
                "bytes": weights.stat().st_size, "sha256": sha256_of(weights),
                "load": f"from gsimclr.training.pretrain import load_encoder; model, cfg, meta = load_encoder('{rel}')",
                "export": f"gsimclr export {rel} --format hf --output {part}-{method}-hf",
                "results": f"{RESULTS_DIR}/{part}/{method}-eval.json"})
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
            log(f"CPU lane: {part} {method} backbone kept in {dest}")

    def provenance(self, part: str, preset: str, seed: int, entry: dict) -> dict:
        from gsimclr.provenance import git_commit

        with contextlib.suppress(OSError):
            load = os.getloadavg()
        return {"part": part, "preset": preset, "seed": seed, "lane": "cpu", "command": entry["commands"][-1],
                "commands": entry["commands"], "commit": git_commit(ROOT), "date": entry["finished"],
                "wall_s": round(entry["wall_s"], 1), "cpu_s": round(entry["cpu_s"], 1), **machine(),
                "versions": versions_now(), "load_average": [round(x, 2) for x in load],
                "data": self.plan.data, "options": list(self.plan.options)}

    def write_piece(self, part: str, preset: str, seed: int, name: str, entry: dict) -> None:
        run_dir = self.plan.run_dir(part)
        if name == "pseudo_labels":
            result = read_json(run_dir / "pseudo_labels" / "pseudo_labels.json")
        elif name.endswith("-pretrain"):
            method = name.rsplit("-", 1)[0]
            result = pretrain_position(run_dir, method)
            with contextlib.suppress(OSError, ValueError):
                lines = (run_dir / method / "metrics.jsonl").read_text().splitlines()
                result["final"] = json.loads(lines[-1])
            result.pop("checkpoint_age_s", None)
        elif name.endswith("-eval"):
            result = read_json(run_dir / name.rsplit("-", 1)[0] / "eval.json")
        else:
            result = read_json(run_dir / "supervised.json")
        write_json_atomic(self.plan.result_path(part, name), {**self.provenance(part, preset, seed, entry),
                                                              "piece": name, "result": result})
        log(f"CPU lane: {part} {name} finished ({entry['wall_s']:.0f} s wall, {entry['cpu_s']:.0f} CPU s)")

    def finish_part(self, part: str, preset: str, seed: int, command: str, wall: float) -> None:
        results = read_json(self.plan.run_dir(part) / "results.json")
        if not results or results.get("incomplete"):
            return
        pieces = self.state["pieces"].get(part, {})
        entry = {"commands": sorted({c for p in pieces.values() for c in p.get("commands", [])}) or [command],
                 "finished": utc_now(), "wall_s": sum(p.get("wall_s", 0) for p in pieces.values()),
                 "cpu_s": sum(p.get("cpu_s", 0) for p in pieces.values())}
        keys = ("started", "ended", "period", "gap_s", "resumed_from", "host", "boot_id", "commit", "cpu_s", "wall_s",
                "notes")
        payload = {**self.provenance(part, preset, seed, entry), "result": results,
                   "sessions": [{k: s.get(k) for k in keys} for s in self.state["sessions"] if part in s.get("parts", [])],
                   "pieces": {k: {kk: v.get(kk) for kk in ("wall_s", "cpu_s", "finished")} for k, v in pieces.items()}}
        write_json_atomic(self.plan.result_path(part), payload)
        log(f"CPU lane: {part} complete")


# ------------------------------------------------------------------------------------------ status


def status(plan: LanePlan) -> str:
    state = load_lane(plan)
    committed = repo_lane_state(plan)
    lines = [f"CPU lane home: {plan.home}"]
    running = None
    with contextlib.suppress(OSError):
        fd = os.open(plan.home / "lane.lock", os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            running = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        finally:
            os.close(fd)
    machines = len({s.get("boot_id") for s in state["sessions"]})
    periods = len({s.get("period", 1) for s in state["sessions"]})
    lines.append(f"running: {'yes, pid ' + running if running else 'no'}; work so far {state['work_s'] / 3600:.2f} CPU h "
                 f"over {len(state['sessions'])} lane call(s) in {periods} working period(s) on {machines} machine "
                 "boot(s)")
    rates = measured_rates(plan, state)
    for name in plan.names():
        run_dir = plan.run_dir(name)
        if plan.result_path(name).exists():
            lines.append(f"- {name}: complete ({plan.result_path(name).relative_to(plan.repo)})")
            continue
        if not run_dir.exists():
            lines.append(f"- {name}: not started")
            continue
        done = pieces_of(run_dir)
        flights = in_flight(done, plan.stage_jobs)
        current = state.get("current") or []
        current = [current] if isinstance(current, dict) else current
        part_runs = bool(running) and name in {c.get("part") for c in current if isinstance(c, dict)}
        lines.append(f"- {name}: {sum(done.values())} of {len(done)} pieces done; "
                     f"{'in flight' if part_runs else 'next'}: {', '.join(flights) or None}")
        eta, left_s = 0.0, {}
        for piece, ok in done.items():
            if ok:
                continue
            if piece.endswith("-pretrain"):
                pos = pretrain_position(run_dir, piece.rsplit("-", 1)[0])
                images = pos["images"] or 50_000
                total = (pos["epochs"] or 15) * images
                left = total - pos["epoch"] * images - pos["images_into_epoch"]
                rate = pos["images_per_s"] or rates.get("images_per_s") or benchmark_rate(plan)
                left_s[piece] = left / rate
                if piece in flights:
                    lines.append(f"  {piece}: epoch {pos['epoch']}/{pos['epochs']}"
                                 + (f", {pos['steps_into_epoch']} steps into the next" if pos["steps_into_epoch"] else "")
                                 + f", {rate:.1f} images/s measured, last loss {pos['last_loss']}")
                    if pos["checkpoint_age_s"] is not None and part_runs:
                        lost = pretrain_kill_loss(state, run_dir, pos["checkpoint_age_s"])
                        lines.append(f"  a kill now loses about {lost / 60:.1f} min of pretraining "
                                     f"(checkpoints every {plan.checkpoint_minutes:g} min)")
            else:
                kind = piece_kind(piece)
                left_s[piece] = rates.get(kind, DEFAULT_PIECE_S.get(kind, 1800))
                if piece in flights and part_runs:
                    spent = (state.get("pieces", {}).get(name, {}).get(piece, {}) or {}).get("wall_s", 0)
                    lines.append(f"  {piece}: {spent / 60:.1f} min of lane time so far; " + kill_loss(state, run_dir, piece))
        eta = part_eta(left_s, plan.stage_jobs)
        lines.append(f"  ETA of the part: {eta / 3600:.1f} h of lane time at the measured rates"
                     + (f", {plan.stage_jobs} stages at once" if plan.stage_jobs > 1 else ""))
    if committed is None:
        lines.append("committed state: none")
    else:
        lines.append(f"committed state ({REPO_STATE}): {committed.get('work_s', 0) / 3600:.2f} CPU h of work, "
                     f"updated {committed.get('updated')}; home holds {state['work_s'] / 3600:.2f} CPU h"
                     + (" (newer: run --save-state before stopping)" if state["work_s"] > committed.get("work_s", 0) else ""))
        for part, snap in (committed.get("snapshots") or {}).items():
            if (snap.get("work_s") or 0) < committed.get("work_s", 0) - 60:
                lines.append(f"  {part}: its committed run folder is the snapshot saved {snap.get('saved')} (at "
                             f"{(snap.get('work_s') or 0) / 3600:.2f} CPU h; kept within the repository budget)")
    return "\n".join(lines)


def in_flight(done: dict, stage_jobs: int = 1) -> list[str]:
    """The pieces a part's call runs now: the first unfinished one, or with ``gsimclr run --jobs`` (``stage_jobs``
    > 1) the first unfinished piece of each stage whose inputs exist (a method after the pseudo labels, up to
    ``stage_jobs`` of them in the run's order).

    >>> done = {"pseudo_labels": True, "simclr-pretrain": False, "simclr-eval": False, "gsimclr-pretrain": False,
    ...         "gsimclr-eval": False, "supervised": False}
    >>> in_flight(done), in_flight(done, 2)
    (['simclr-pretrain'], ['simclr-pretrain', 'gsimclr-pretrain'])
    """
    unfinished = [k for k, ok in done.items() if not ok]
    if stage_jobs <= 1:
        return unfinished[:1]
    stages = []
    for piece in unfinished:
        stage = piece.rsplit("-", 1)[0] if piece.endswith(("-pretrain", "-eval")) else piece
        waits = piece not in ("pseudo_labels", "supervised") and not done.get("pseudo_labels", True)
        if stage not in {s for s, _ in stages} and not waits:
            stages.append((stage, piece))
        elif stage not in {s for s, _ in stages}:
            stages.append((stage, None))   # its turn comes after the pseudo labels
    return [piece for _, piece in stages if piece is not None][:stage_jobs]


def part_eta(left_s: dict[str, float], stage_jobs: int = 1) -> float:
    """Seconds of lane time until a part is complete, from each unfinished piece's seconds: their sum one after
    another; with ``stage_jobs`` stages at once, the longer of the longest chain (the pseudo labels, then a
    method's pretraining and evaluation) and the work shared evenly by the workers.

    >>> part_eta({"simclr-pretrain": 10, "gsimclr-pretrain": 10, "supervised": 4}, 2)
    12.0
    """
    total = float(sum(left_s.values()))
    if stage_jobs <= 1:
        return total
    chains = [left_s.get(f"{m}-pretrain", 0.0) + left_s.get(f"{m}-eval", 0.0)
              for m in {k.rsplit("-", 1)[0] for k in left_s if k.endswith(("-pretrain", "-eval"))}]
    longest = left_s.get("pseudo_labels", 0.0) + max(chains, default=0.0)
    return max(longest, left_s.get("supervised", 0.0), total / stage_jobs)


def call_started(state: dict, run_dir: Path) -> float | None:
    """When the lane's current call for this part began (epoch seconds), if one runs."""
    current = state.get("current") or []
    current = [current] if isinstance(current, dict) else current   # one call at a time before --lane-jobs
    since = next((c.get("since") for c in current if isinstance(c, dict) and c.get("part") == run_dir.name), None)
    return utc_seconds(since) if since else None


def utc_seconds(stamp: str) -> float:
    """Epoch seconds of a lane time stamp (``utc_now``'s ``%Y-%m-%d %H:%M:%S UTC``)."""
    return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=dt.timezone.utc).timestamp()


def pretrain_kill_loss(state: dict, run_dir: Path, checkpoint_age_s: float) -> float:
    """Seconds of pretraining a kill now would lose: the time since the checkpoint, but never more than the
    current call has run (a checkpoint written before the lane stopped loses nothing of the pause)."""
    started = call_started(state, run_dir)
    return checkpoint_age_s if started is None else max(0.0, min(checkpoint_age_s, time.time() - started))


def kill_loss(state: dict, run_dir: Path, piece: str) -> str:
    """What a kill now would lose of a piece other than pretraining: the autoencoder's epoch in flight (it
    saves its progress after every epoch), else the piece's time in this call: since the call began, or since
    the piece began within it (an evaluation that follows its pretraining in the same call)."""
    started = call_started(state, run_dir)
    own = (state.get("pieces", {}).get(run_dir.name, {}).get(piece) or {}).get("started")
    if started is not None and own:
        started = max(started, utc_seconds(own))
    progress = run_dir / "pseudo_labels" / "autoencoder_progress.safetensors"
    if piece == "pseudo_labels" and progress.exists() and (started is None or progress.stat().st_mtime > started):
        return f"a kill now loses the autoencoder epoch in flight ({(time.time() - progress.stat().st_mtime) / 60:.1f} min)"
    # the supervised baseline and each evaluation keep their training's progress after every epoch
    folders = [run_dir / "supervised.progress"] if piece == "supervised" else \
        sorted((run_dir / piece.rsplit("-", 1)[0]).glob("*.progress")) if piece.endswith("-eval") else []
    saved = [p.stat().st_mtime for f in folders for p in f.glob("fit-*.progress.pt")]
    if saved and (started is None or max(saved) > started):
        return f"a kill now loses the epoch in flight ({(time.time() - max(saved)) / 60:.1f} min since the last save)"
    if started is None:
        return "a kill now loses this piece's time in the current call"
    return f"a kill now loses about {(time.time() - started) / 60:.1f} min (no checkpoint within this piece yet)"


def benchmark_rate(plan: LanePlan) -> float:
    """Pretraining images/s of a lane child before its part measured any: the paper model's one-thread rate in
    ``benchmarks/results/paper-cpu.json`` (variant ``eager-1t``, as the lane runs it), else 40."""
    bench = read_json(plan.repo / "benchmarks" / "results" / "paper-cpu.json") or {}
    with contextlib.suppress(AttributeError, KeyError, TypeError):
        return float(bench["summary"]["variants"]["eager-1t"]["images_per_s"])
    return 40.0


DEFAULT_PIECE_S = {"pseudo_labels": 1800.0, "eval": 2400.0, "supervised": 3 * 3600.0}
"""Planned seconds of the pieces other than pretraining before any was measured on this machine. The supervised
ResNet-20: 3.2-3.8 h at most by FLOPs at the 2-thread step rate (benchmarks/results/paper-cpu*.md, 75 epochs;
early stopping ends it sooner), so 3 h on one core is a middle guess (it was 1 h until 2026-12-07)."""


def measured_rates(plan: LanePlan, state: dict) -> dict:
    """Measured wall seconds of each kind of piece (the latest finished one of that kind), and images/s."""
    out: dict[str, float] = {}
    for part, pieces in state.get("pieces", {}).items():
        for name, entry in pieces.items():
            if entry.get("finished") and not name.endswith("-pretrain"):
                out[piece_kind(name)] = entry["wall_s"]
    return out
