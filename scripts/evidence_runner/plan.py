"""The plan: the lease order, and estimates that are measurements.

**Order.** A lease is 15 minutes of device time in all: one full call (~9 minutes of work) and maybe a short
one. :data:`LEASE_ORDER` puts the most valuable numbers first; :func:`lease_order` is every part in that
order (the parts it does not name follow in stage order), and ``--stage`` runs parts in the order named.

**Estimates.** Every run of a part, finished or cut, records its wall time, its warm-up (compile) time and
how much of the part it did in ``results/evidence/timings.json``, per device kind (``h100``, ``h200``,
``cpu``...). :func:`estimate` uses the part's own measurements on this device kind, else on another GPU
kind, else a sibling seed's, else the planned seconds plus a compile allowance per graph the part compiles
(the preflight's measured compile time of its model when there is one). A part that has done some of
its work has a remaining estimate: the rest at its measured rate plus one more warm-up.
:func:`fits` starts a part only when its remaining estimate fits the time left, or, for a part that
continues across calls, when its next piece (warm-up plus :data:`PIECE_S`) does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading

from evidence_runner.context import STATE_OUT_MIB, Ctx, Part, Stage, write_json

LEASE_ORDER = ("throughput-cuda-cifar", "bf16-ntxent", "tta-gsimclr", "tta-lightly", "paper-cifar10-seed0",
               "paper-imagenet5-seed0", "ddp-equal", "throughput-cuda-r50", "datapath-cuda-224")
"""The first parts of a lease plan (after the preflight): lease 1 throughput at batch 512 then 1024 and
bf16 against fp32; lease 2 gsimclr's time to accuracy; lease 3 the lightly recipe's; then the paper presets
(seed 0, resumable in pieces), the distributed check, ResNet-50 throughput and the data path; then the rest."""
LEASE_WORK_S = 540            # the work of one full call of a 15-minute lease (600 s limit, start-up and export)
COMPILE_ALLOWANCE_S = {"cpu": 0.0, "gpu": 60.0}   # per compiled graph, before anything was measured
PIECE_S = 120                 # the smallest useful piece of a part that continues across calls
TIMINGS = "results/evidence/timings.json"
TIMINGS_LOCK = threading.RLock()   # the periodic export records the part in flight from its own thread


def lease_order(stages: list[Stage]) -> list[Part]:
    parts = [p for s in stages for p in s.parts]
    first = [p for name in LEASE_ORDER for p in parts if p.name == name]
    seed0 = [p for p in parts if p not in first and p.name.endswith("-seed0")]
    return first + seed0 + [p for p in parts if p not in first and p not in seed0]


def select(stages: list[Stage], wanted: list[str] | None) -> list[Part]:
    """The parts to run: ``wanted`` (stage keys, stage names or part names) in the order named, each
    stage's parts in lease order; every part in lease order when nothing is named."""
    ordered = lease_order(stages)
    if not wanted:
        return ordered
    out: list[Part] = []
    for name in wanted:
        stage = next((s for s in stages if name in (s.key, s.name)), None)
        picked = [p for p in ordered if p in stage.parts] if stage else [p for p in ordered if p.name == name]
        out += [p for p in picked if p not in out]
    return out


def unknown_names(stages: list[Stage], wanted: list[str]) -> list[str]:
    known = {s.key for s in stages} | {s.name for s in stages} | {p.name for s in stages for p in s.parts}
    return [w for w in wanted if w not in known]


# ---------------------------------------------------------------------------------------------- timings


def load_timings(ctx: Ctx) -> dict:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((ctx.root / TIMINGS).read_text())
        if isinstance(data, dict):
            return data
    return {}


def merge_timings(a: dict, b: dict) -> dict:
    """The union of two timings files (runs keyed by their date and part; compile times: the later)."""
    out = json.loads(json.dumps(a))
    for key, kinds in b.items():
        if key == "compile":
            for kind, models in kinds.items():
                out.setdefault("compile", {}).setdefault(kind, {}).update(models)
            continue
        for kind, runs in kinds.items():
            mine = out.setdefault(key, {}).setdefault(kind, [])
            for run in runs:  # one entry per run id: a run exported while in flight, then again, is the later one
                same = [i for i, r in enumerate(mine) if r.get("run", (r.get("date"), r.get("wall_s")))
                        == run.get("run", (run.get("date"), run.get("wall_s")))]
                if not same:
                    mine.append(run)
                elif run.get("wall_s", 0) >= mine[same[0]].get("wall_s", 0):
                    mine[same[0]] = run
            mine.sort(key=lambda r: r.get("date") or "")
    return out


def record_run(ctx: Ctx, part: Part, kind: str, wall_s: float, compile_s: float, fraction_before: float,
               fraction_after: float, state: str, run: str | None = None) -> None:
    """Add one run of ``part`` to the timings (written at once: a cut call keeps it). A run with an id
    (``run``) replaces its earlier entry: a part in flight is recorded as ``cut`` with its time so far at
    every periodic export, so a call killed mid-part still leaves its measurement."""
    with TIMINGS_LOCK:
        _record_run(ctx, part, kind, wall_s, compile_s, fraction_before, fraction_after, state, run)


def _record_run(ctx, part, kind, wall_s, compile_s, fraction_before, fraction_after, state, run) -> None:
    timings = load_timings(ctx)
    runs = timings.setdefault(part.name, {}).setdefault(kind, [])
    entry = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), "wall_s": round(wall_s, 1),
             "compile_s": round(compile_s, 1), "fraction_before": round(fraction_before, 4),
             "fraction_after": round(fraction_after, 4), "state": state, "smoke": ctx.smoke, "commit": ctx.commit}
    if run is not None:
        entry["run"] = run
        earlier = [i for i, r in enumerate(runs) if r.get("run") == run]
        if earlier:
            entry["date"] = runs[earlier[0]]["date"]
            runs[earlier[0]] = entry
            write_json(ctx, ctx.root / TIMINGS, timings)
            return
    runs.append(entry)
    write_json(ctx, ctx.root / TIMINGS, timings)


def record_compile(ctx: Ctx, kind: str, model: str, seconds: float) -> None:
    with TIMINGS_LOCK:
        timings = load_timings(ctx)
        timings.setdefault("compile", {}).setdefault(kind, {})[model] = round(seconds, 1)
        write_json(ctx, ctx.root / TIMINGS, timings)


def _rate(runs: list[dict]) -> tuple[float, float] | None:
    """(seconds for the whole part without warm-up, warm-up per call) from measured runs, or None."""
    runs = [r for r in runs if r.get("state") != "failed"]  # a failure measures nothing about the part
    work = sum(r["fraction_after"] - r["fraction_before"] for r in runs)
    if work <= 0:
        return None
    steady = sum(max(0.0, r["wall_s"] - r.get("compile_s", 0.0)) for r in runs)
    warm = max((r.get("compile_s", 0.0) for r in runs), default=0.0)
    return steady / work, warm


def compile_allowance(ctx: Ctx, part: Part, kind: str, timings: dict) -> float:
    if not part.compiles:
        return 0.0
    measured = [timings.get("compile", {}).get(kind, {}).get(m) for m in part.models]
    measured = [m for m in measured if m is not None]
    if measured:
        return part.compiles * max(measured)
    return part.compiles * COMPILE_ALLOWANCE_S["cpu" if kind == "cpu" else "gpu"]


def estimate(ctx: Ctx, part: Part, kind: str, timings: dict | None = None) -> tuple[float, float, str]:
    """``(whole part in seconds, warm-up per call, where the number comes from)`` on device kind ``kind``."""
    timings = load_timings(ctx) if timings is None else timings
    runs = {k: [r for r in v if r.get("smoke", False) == ctx.smoke] for k, v in timings.get(part.name, {}).items()}
    candidates = [kind] + sorted(k for k in runs if k != kind and (k == "cpu") == (kind == "cpu"))
    for k in candidates:
        rate = _rate(runs.get(k, []))
        if rate:
            return rate[0] + rate[1], rate[1], f"measured {k}"
    if "-seed" in part.name:  # a sibling seed of the same preset or variant, on this kind
        stem = part.name.rsplit("-seed", 1)[0]
        for name, kinds in timings.items():
            if name != part.name and name.rsplit("-seed", 1)[0] == stem and "-seed" in name:
                rate = _rate([r for r in kinds.get(kind, []) if r.get("smoke", False) == ctx.smoke])
                if rate:
                    return rate[0] + rate[1], rate[1], f"measured {kind} ({name})"
        sibling = _sibling_payload(ctx, part, stem)
        if sibling is not None:
            return sibling, compile_allowance(ctx, part, kind, timings), f"measured ({stem} seed)"
    warm = compile_allowance(ctx, part, kind, timings)
    return part.est_s + warm, warm, "planned + compile allowance" if warm else "planned"


def _sibling_payload(ctx: Ctx, part: Part, stem: str) -> float | None:
    """The longest committed run of another seed of the same part (its JSON's wall time)."""
    measured = []
    for path in (ctx.root / part.path).parent.glob(f"{stem}-seed*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            payload = json.loads(path.read_text())
            if payload["part"].rsplit("-seed", 1)[0] == stem and payload.get("smoke") == ctx.smoke:
                measured.append(float(payload["wall_s"]))
    return max(measured) if measured else None


def fraction_done(ctx: Ctx, part: Part) -> float:
    """How much of ``part`` its state here holds (0 without state; 1 once its JSON exists)."""
    if part.done(ctx):
        return 1.0
    if part.progress is None:
        return 0.0
    try:
        progress = part.progress(ctx, part) or {}
    except Exception:  # a state written by a cut call that cannot be read: start again
        return 0.0
    return float(min(1.0, max(0.0, progress.get("fraction", 0.0))))


def remaining(ctx: Ctx, part: Part, kind: str, timings: dict | None = None) -> tuple[float, float, str]:
    """``(remaining seconds, warm-up per call, source)``: the rest at the measured rate plus a warm-up."""
    whole, warm, source = estimate(ctx, part, kind, timings)
    done = fraction_done(ctx, part)
    if done <= 0:
        return whole, warm, source
    return (whole - warm) * (1 - done) + warm, warm, source


def travels(part: Part) -> bool:
    """Whether an unfinished ``part``'s state can come back from a call (and so continue on any machine)."""

    return bool(part.state) and part.state_mib <= STATE_OUT_MIB


def fits(ctx: Ctx, part: Part, kind: str, left: float, timings: dict | None = None) -> tuple[bool, float]:
    """Whether to start ``part`` with ``left`` seconds: its remaining estimate fits, or it continues across
    calls and its next piece (warm-up + :data:`PIECE_S`) fits. It continues across calls when its state
    travels, or when its state is already on this machine (a warm machine's next call). Returns (ok,
    remaining)."""
    rest, warm, _ = remaining(ctx, part, kind, timings)
    if rest <= left:
        return True, rest
    here = any(d.exists() for d in part.state_dirs(ctx))
    return (travels(part) or here) and warm + PIECE_S <= left, rest


def list_plan(ctx: Ctx, stages: list[Stage], kind: str) -> str:
    """The lease order with each part's state and estimate, packed into 15-minute leases."""
    timings = load_timings(ctx)
    lines = [f"Lease order ({LEASE_WORK_S} s of work per 15-minute lease; estimates for device kind {kind}); "
             "first in every lease: the preflight (~30 s)"]
    lease, used, data = 1, 0.0, None
    lines.append(f"lease {lease}:")
    for i, p in enumerate(lease_order(stages), 1):
        no_data = [d for d in p.needs if not ctx.data.get(d)]
        if p.done(ctx):
            state, rest, source = "done", 0.0, "-"
        else:
            rest, warm, source = remaining(ctx, p, kind, timings)
            frac = fraction_done(ctx, p)
            state = f"{100 * frac:.0f}% done" if frac > 0 else "todo"
            if no_data:
                state += " (no data here)"
        new_data = rest > 0 and data is not None and p.needs != data  # a call carries one data set
        if rest > 0 and used > 0 and (new_data or used + rest > LEASE_WORK_S and (rest <= LEASE_WORK_S or not p.state)):
            lease, used = lease + 1, 0.0
            lines.append(f"lease {lease}:")
        if rest > 0:
            used, data = used + rest, p.needs
        resume = ("-" if not p.state else "across leases" if travels(p) else
                  f"same machine only ({p.state_mib:.0f} MiB state)")
        if rest > LEASE_WORK_S and not travels(p):
            resume += ": LONGER THAN A CALL, its state cannot travel: needs a longer lease"
        lines.append(f"  {i:3d}. {p.stage} {p.name:30s} {state:18s} ~{rest:5.0f} s  [{source}; resumes {resume}]  "
                     f"needs {','.join(p.needs)}")
        while used > LEASE_WORK_S and travels(p):  # a part longer than a call runs in pieces over several leases
            used -= LEASE_WORK_S
            lease += 1
            lines.append(f"lease {lease}: ({p.name} continues)")
    return "\n".join(lines)
