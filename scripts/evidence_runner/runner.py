"""Running parts: one at a time, in the order given, each isolated from the others (any failure, an exit
included, fails that part only), its measurements kept as it goes, its time recorded for the planner."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from evidence_runner.context import Ctx, Part, Skip, Stopped, log, write_json
from evidence_runner.plan import TIMINGS_LOCK, fits, fraction_done, load_timings, record_run

STABLE_MTIME_NS = 1_700_000_000 * 10**9   # the data files' time on every machine (see stable_data)


@dataclass
class Running:
    """The part in flight, for the periodic export: its measurements so far and its time as a cut run."""
    part: Part
    kind: str
    t0: float
    before: float
    run_id: str
    closed: bool = False      # the part has ended: its own record stands

    def refresh(self, ctx: Ctx) -> None:
        progress = write_progress(ctx, self.part) or {}
        after = max(self.before, float(progress.get("fraction", self.before)))
        with TIMINGS_LOCK:
            if not self.closed:
                record_run(ctx, self.part, self.kind, time.perf_counter() - self.t0, part_compile_s(ctx, self.part),
                           self.before, after, "cut", self.run_id)

    def close(self) -> None:
        with TIMINGS_LOCK:
            self.closed = True


def partial_path(ctx: Ctx, part: Part) -> Path:
    return ctx.root / "results" / "evidence" / "partial" / f"{part.name}.json"


def write_progress(ctx: Ctx, part: Part) -> dict | None:
    """Write what ``part`` has measured so far (its ``progress``) to ``results/evidence/partial/``."""
    if part.progress is None or part.done(ctx):  # done: its result replaces the partial file
        return None
    try:
        progress = part.progress(ctx, part)
    except Exception as exc:  # a state half-written by the part in flight: the next refresh reads it
        log(f"{part.name}: progress unreadable now ({type(exc).__name__}: {exc})")
        return None
    if progress:
        write_json(ctx, partial_path(ctx, part), {
            "part": part.name, "commit": ctx.commit, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "smoke": ctx.smoke, "preflight": ctx.preflight, "progress": progress})
    return progress


def fresh_state() -> None:
    """Each part starts clean in this long-lived process: torch.compile's caches reset (the same loss
    function compiled for run after run would otherwise hit dynamo's recompile limit and fall back to
    eager, slowing later parts) and freed GPU memory returned."""
    import gc

    import torch

    gc.collect()
    with contextlib.suppress(Exception):
        torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def part_compile_s(ctx: Ctx, part: Part) -> float:
    """The warm-up this run of ``part`` paid, where the part measures it (time to accuracy), else the
    preflight's compile time of its models once per compiled graph."""
    with contextlib.suppress(Exception):
        progress = part.progress(ctx, part) if part.progress else None
        if progress and "warmup_s" in progress:
            return float(progress["warmup_s"])
    steps = (ctx.preflight or {}).get("steps", {})
    measured = [steps[m]["compile_s"] for m in part.models if m in steps]
    return part.compiles * max(measured) if measured else 0.0


def run_part(ctx: Ctx, part: Part, kind: str = "cpu", exporter=None) -> str:
    """Run one part if it is not done; returns its state word for the log."""
    if part.done(ctx):
        return "done"
    missing = [d for d in part.needs if not ctx.data.get(d)]
    if missing:
        reason = f"data {', '.join(missing)} not found (scripts/pack_for_device.py, or --{missing[0]})"
        log(f"{part.name}: skipped: {reason}")
        return f"skipped: {reason}"
    left = ctx.seconds_left()
    ok, rest = fits(ctx, part, kind, left, load_timings(ctx))
    if not ctx.forced and not ok:
        log(f"{part.name}: not started: {rest:.0f} s remaining, {max(left, 0):.0f} s left in --budget-s")
        return "skipped: no time left in --budget-s"
    log(f"{part.name}: running ({rest:.0f} s remaining by the estimate)")
    fresh_state()
    before = fraction_done(ctx, part)
    t0 = time.perf_counter()
    run_id = f"{ctx.invocation}:{part.name}"
    record_run(ctx, part, kind, 0.0, 0.0, before, before, "cut", run_id)  # what stays if the call is killed
    running = Running(part, kind, t0, before, run_id)
    if exporter is not None:
        exporter.running = running
    try:
        result = part.run(ctx, part)
    except Skip as exc:
        log(f"{part.name}: skipped: {exc}")
        return f"skipped: {exc}"
    except Stopped as exc:
        log(f"{part.name}: {exc}")
        result = None
    except (Exception, SystemExit) as exc:  # one broken part (a script's exit included) must not stop the others
        traceback.print_exc()
        state = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        log(f"{part.name}: {state}")
        write_progress(ctx, part)
        record_run(ctx, part, kind, time.perf_counter() - t0, 0.0, before, before, "failed", run_id)
        return state
    finally:
        running.close()
        if exporter is not None:
            exporter.running = None
    wall = time.perf_counter() - t0
    compile_s = part_compile_s(ctx, part)
    if result is None:
        progress = write_progress(ctx, part) or {}
        after = float(progress.get("fraction", before))
        record_run(ctx, part, kind, wall, compile_s, before, max(before, after), "incomplete", run_id)
        log(f"{part.name}: unfinished after {wall:.0f} s ({100 * after:.0f}% done); the next call continues it")
        return "incomplete"
    seed = int(part.name.rsplit("-seed", 1)[1]) if "-seed" in part.name else None
    from gsimclr.provenance import device_name, versions

    payload = {"stage": part.stage, "part": part.name, "seed": seed, "command": part.command, "commit": ctx.commit,
               "device": device_name(ctx.device), "versions": versions(),
               "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "wall_s": round(wall, 1),
               "compile_s": round(compile_s, 1), "smoke": ctx.smoke, "preflight": ctx.preflight, "result": result}
    write_json(ctx, ctx.root / part.path, payload)
    record_run(ctx, part, kind, wall, compile_s, before, 1.0, "done", run_id)
    with contextlib.suppress(OSError):
        partial_path(ctx, part).unlink()
    log(f"{part.name}: done in {wall:.0f} s -> {part.path}")
    return "done now"


def stable_data(ctx: Ctx, home: Path) -> None:
    """Give each data set that this call owns (a copy carried to this machine, or the smoke data) the same
    absolute path and file times on every machine: gsimclr names data by its resolved path, size and time,
    and a run resumed on a fresh machine must find "the same data" as the call that began it. The files are
    copied to ``home/<name>`` (the same path everywhere; skipped when already there) with their times set
    to :data:`STABLE_MTIME_NS`. Data outside the call's own folders (``../shared/data``) is left as it is."""
    import shutil

    owned = [Path(ctx.root).resolve() / ".evidence", Path(ctx.root).resolve() / "data",
             Path(__file__).resolve().parents[2] / ".evidence"]
    for name, path in list(ctx.data.items()):
        if not path:
            continue
        real = Path(path).resolve()
        if not any(real == o or o in real.parents for o in owned):
            continue
        dest = home / name
        for f in sorted(real.rglob("*")):
            if not f.is_file():
                continue
            target = dest / f.relative_to(real)
            if not (target.exists() and target.stat().st_size == f.stat().st_size
                    and target.stat().st_mtime_ns == STABLE_MTIME_NS and _same_bytes(f, target)):
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                shutil.copyfile(f, tmp)
                os.utime(tmp, ns=(STABLE_MTIME_NS, STABLE_MTIME_NS))
                os.replace(tmp, target)
        wanted = {dest / f.relative_to(real) for f in real.rglob("*") if f.is_file()}
        for f in list(dest.rglob("*")):
            if f.is_file() and f not in wanted:
                f.unlink()  # another data set's file: gsimclr would read every parquet file there
        ctx.data[name] = str(dest)


def _same_bytes(a: Path, b: Path) -> bool:
    import filecmp

    return filecmp.cmp(a, b, shallow=False)
