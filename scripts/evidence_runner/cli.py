"""``scripts/evidence.py``: the command line of the evidence runner (see that file's help)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

from evidence_runner.context import ROOT, Ctx, log, rel, resolve_data

USAGE = """Each stage is a list of *parts*; a part is one unit of work that writes one JSON file (under
``results/evidence/`` or ``benchmarks/results/``) holding its numbers beside the command, commit, device,
versions, date and the call's preflight. A part whose JSON exists is done and skipped; an unfinished part
continues in the next call, on this machine or, with its exported state carried back, on a fresh one.

    python scripts/evidence.py --list                 # the lease order, each part's state and estimate
    python scripts/evidence.py                        # every unfinished part, in the lease order
    python scripts/evidence.py --stage tta-gsimclr b  # parts (or stages) in the order named
    python scripts/evidence.py --budget-s 540         # start only what fits (measured or compile-aware estimates)
    python scripts/evidence.py --export $OUT          # results and unfinished state into $OUT, kept up to date
    python scripts/evidence.py --import DIR_OR_FILES  # here: results into the checkout, state into .evidence/state.tar
    python scripts/evidence.py --report               # rewrite the tables and RESULTS.md from the JSON files
    python scripts/evidence.py --preflight            # the preflight alone
    python scripts/evidence.py --smoke                # every stage at tiny sizes on the CPU, into a temp folder

Data: ``.evidence/cifar10`` and ``.evidence/imagenet5`` (made by ``scripts/pack_for_device.py``; they travel
to the GPU machine as carried paths), else ``../shared/data/...``; ``--cifar10``/``--imagenet5`` name others.
A part whose data, preset, option or package (lightly) is missing is skipped with a one-line reason.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/evidence.py", description="GPU evidence: stages that turn "
                                     "lent GPU time into committed numbers.", epilog=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="show the lease order, each part's state and estimate")
    parser.add_argument("--stage", nargs="+", help="stage keys (a-f), stage names or part names, run in the order named")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="this call's seconds: a part starts only when its remaining estimate (or, for a part that "
                             "continues across calls, its next piece) fits, and every command stops before the end")
    parser.add_argument("--smoke", action="store_true",
                        help="every stage at tiny sizes on the CPU, into a temporary folder (never results/)")
    parser.add_argument("--out-root", help="where results go (default: this checkout; --smoke: a temporary folder)")
    parser.add_argument("--cifar10", help="CIFAR-10 parquet folder (default: .evidence/cifar10, ../shared/data/cifar10)")
    parser.add_argument("--imagenet5", help="ImageNet subset (default: .evidence/imagenet5, ../shared/data/imagenet5)")
    parser.add_argument("--export", help="write this call's results (evidence-<id>.tar) and the state of unfinished "
                                         "parts (state-<id>-<k>.tgz) into EXPORT ($OUT on the device)")
    parser.add_argument("--export-every", type=float, default=60.0,
                        help="with --export: also refresh the export every this many seconds while a part runs (0: off)")
    parser.add_argument("--import", dest="import_paths", nargs="+",
                        help="files or folders a device call brought back: results into this checkout, state into "
                             ".evidence/state.tar (carried by the next call)")
    parser.add_argument("--report", action="store_true", help="rewrite the tables and RESULTS.md, run nothing")
    parser.add_argument("--preflight", action="store_true", help="run the preflight only")
    parser.add_argument("--simulate-lease", metavar="FOLDER", help="a lease simulated on the CPU in FOLDER: a call "
                        "cut by SIGKILL, its export carried into a fresh copy, resumed there, compared with an uncut run")
    parser.add_argument("--cut-s", type=float, default=0.0,
                        help="--simulate-lease: kill the call this many seconds after its export first holds a checkpoint")
    parser.add_argument("--full", action="store_true", help="--simulate-lease: the resumed call runs every smoke stage")
    parser.add_argument("--device-kind", help="--list: plan for this device kind (default: this machine's GPU, else h100)")
    lane = parser.add_argument_group("CPU lane (issue 24: the paper's CIFAR-10 table on this CPU, in the background)")
    lane.add_argument("--lane", choices=["cpu"], help="continue the CPU lane's next part within --budget-h; start it "
                      "at the lowest priority: nohup nice -n 19 python scripts/evidence.py --lane cpu & (make evidence-cpu)")
    lane.add_argument("--budget-h", type=float, default=2.9, help="--lane: hours this lane call may run (default 2.9)")
    lane.add_argument("--status", action="store_true", help="--lane: which part runs, its progress and ETA, what is "
                      "committed and what a kill now would lose")
    lane.add_argument("--save-state", action="store_true", help="--lane: pack the unfinished part's run folder and "
                      "progress into results/evidence/cpu-lane/state/ (commit it before a working period stops)")
    lane.add_argument("--lane-home", help="--lane: the lane's persistent folder (default $GSIMCLR_LANE_HOME or "
                      "~/.cache/gsimclr/evidence)")
    lane.add_argument("--lane-parts", help="--lane: PRESET:SEED,... instead of paper-cifar10 and -clean, seeds 0-2")
    lane.add_argument("--lane-data", help="--lane: the data (default: the CIFAR-10 folder, see --cifar10)")
    lane.add_argument("--lane-options", default="", help="--lane: more gsimclr run options for every call (quoted)")
    lane.add_argument("--lane-threads", type=int, default=None, help="--lane: torch threads of each call (default 1: "
                      "a background job on a shared 2-core machine; see LANE_THREADS)")
    lane.add_argument("--lane-jobs", type=int, default=None, help="--lane: parts run at once, each one child "
                      "(default 1: each part's stages already use both cores; see LANE_JOBS)")
    lane.add_argument("--lane-stage-jobs", type=int, default=None, help="--lane: gsimclr run --jobs of each call, "
                      "its stages in this many worker processes of --lane-threads each (default 2: one per core of "
                      "this 2-core machine; see LANE_STAGE_JOBS)")
    lane.add_argument("--checkpoint-minutes", type=float, default=None,
                      help="--lane: pretraining checkpoints within an epoch this often (default 5)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from evidence_runner.stages import SEEDS, SMOKE_SEEDS, build_stages

    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("cifar10", "imagenet5", "out_root", "export"):  # before any chdir
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    if args.simulate_lease:
        from evidence_runner.lease_sim import simulate

        found = simulate(Path(args.simulate_lease).resolve(), args.cut_s, args.full)
        print(json.dumps({k: v for k, v in found.items() if k not in ("resumed", "uncut")}))
        ok = found["same_result"] and not found["finished_before_cut"] and found["state_carried"]
        log(f"lease simulation: {'the resumed run reached the uncut result' if ok else 'FAILED'}")
        return 0 if ok else 1
    if args.lane or args.status or args.save_state:
        return run_lane(parser, args)
    if args.import_paths:
        from evidence_runner.transport import import_paths

        paths = [Path(p).resolve() for p in args.import_paths]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            parser.error(f"--import: {', '.join(missing)} does not exist")
        print("\n".join(import_paths(paths, Path(args.out_root or ROOT))))
        return 0

    from gsimclr.provenance import git_commit

    if args.smoke:
        root = Path(args.out_root or tempfile.mkdtemp(prefix="gsimclr-evidence-smoke-"))
        if root.resolve() == ROOT.resolve() or (root / "src" / "gsimclr").exists():
            parser.error("--smoke must not write into a checkout: give --out-root a scratch folder")
        from evidence_runner.smoke_data import make_smoke_data

        data = make_smoke_data(root / "data")
        if args.cifar10 or args.imagenet5:
            data.update({k: getattr(args, k) for k in ("cifar10", "imagenet5") if getattr(args, k)})
        import torch

        torch.set_num_threads(1)  # tiny tensors: one thread; 2 threads on a shared 2-core machine ran 10x slower
        ctx = Ctx(root=root, runs=root / "runs", data=data, smoke=True, device="cpu")
    else:
        os.chdir(ROOT)  # commands and paths in the JSON read relative to the checkout
        root = Path(rel(args.out_root or ROOT))
        ctx = Ctx(root=root, runs=root / "runs" / "evidence", data=resolve_data(args.cifar10, args.imagenet5))
    stages = build_stages(SMOKE_SEEDS if args.smoke else SEEDS)
    from evidence_runner import plan
    from evidence_runner.report import write_reports

    if args.list:
        print(plan.list_plan(ctx, stages, args.device_kind or this_kind(ctx, default="h100")))
        print(f"data: {json.dumps(ctx.data)}")
        return 0
    if args.report:
        write_reports(ctx, stages)
        print(f"wrote {ctx.root / 'RESULTS.md'}")
        return 0
    if args.stage:
        unknown = plan.unknown_names(stages, args.stage)
        if unknown:
            parser.error(f"unknown stage or part {', '.join(unknown)}; see --list")
        ctx.forced = args.budget_s is None
    if args.budget_s is not None:
        ctx.deadline = time.monotonic() + args.budget_s

    # every call: the code's name now (a stale stamp never names the numbers), then the preflight
    ctx.commit = git_commit(ROOT)
    ctx.invocation = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    stamp_call(ctx)
    selected = plan.select(stages, args.stage)
    from evidence_runner.preflight import PreflightFailed, preflight
    from evidence_runner.runner import run_part, stable_data
    from evidence_runner.transport import PeriodicExport, export, unpack_state

    home = Path(os.environ.get("GSIMCLR_EVIDENCE_DATA_HOME")
                or Path(tempfile.gettempdir()) / f"gsimclr-evidence-data{'-smoke' if args.smoke else ''}-{os.getuid()}")
    stable_data(ctx, home)
    runnable = [p for p in selected if not p.done(ctx) and all(ctx.data.get(d) for d in p.needs)]
    planned, total, timings = [], 0.0, plan.load_timings(ctx)
    for p in runnable:  # the parts this call is expected to reach: the preflight compiles their models only
        rest = plan.remaining(ctx, p, this_kind(ctx, default="cpu"), timings)[0]
        if not planned or total + rest <= ctx.seconds_left():
            planned.append(p)
            total += rest
    try:
        ctx.preflight = preflight(ctx, planned if not args.preflight else selected,
                                  need_gpu=not (args.smoke or args.preflight))
    except PreflightFailed as exc:
        print(f"preflight failed: {exc}", file=sys.stderr)
        if args.export:
            from evidence_runner.context import write_json

            write_json(ctx, ctx.root / "results" / "evidence" / "partial" / "preflight.json",
                       {"ok": False, "reason": str(exc), "commit": ctx.commit})
            export(ctx, Path(args.export))
        return 2
    kind = this_kind(ctx, default="cpu")
    for model, step in ctx.preflight["steps"].items():
        plan.record_compile(ctx, kind, model, step["compile_s"])
    if args.preflight:
        print(json.dumps(ctx.preflight, indent=2))
        return 0
    unpack_state(ctx, selected)
    log(f"results root {ctx.root}; data {json.dumps(ctx.data)}; commit {ctx.commit}; call {ctx.invocation}")

    def unfinished():
        return [p for p in selected if not p.done(ctx) and any(d.exists() for d in p.state_dirs(ctx))]

    states = {}
    started = time.perf_counter()
    out = Path(args.export) if args.export else None
    with PeriodicExport(ctx, out, args.export_every if out else 0, unfinished) as exporter:
        for part in selected:
            states[part.name] = run_part(ctx, part, kind, exporter)
            if out is not None:  # after every part: a call cut at its limit keeps what it made
                export(ctx, out, unfinished())
    write_reports(ctx, stages)
    if out is not None:
        files = export(ctx, out, unfinished())
        log(f"exported {', '.join(f.name for f in files)} to {out}")
    summary = ", ".join(f"{k}: {v}" for k, v in states.items())
    log(f"finished in {time.perf_counter() - started:.0f} s; {summary}")
    if args.smoke:
        print(json.dumps({"root": str(ctx.root), "states": states}))
    return 1 if any(v.startswith("failed") for v in states.values()) else 0


def run_lane(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--lane cpu`` (with ``--status`` or ``--save-state``): see :mod:`evidence_runner.cpu_lane`."""
    import shlex

    from evidence_runner import cpu_lane

    if not args.lane:
        parser.error("--status and --save-state go with --lane cpu")
    parts = cpu_lane.LANE_PARTS
    if args.lane_parts:
        try:
            parts = tuple((p.rsplit(":", 1)[0], int(p.rsplit(":", 1)[1])) for p in args.lane_parts.split(","))
        except (ValueError, IndexError):
            parser.error(f"--lane-parts: PRESET:SEED,... expected, got {args.lane_parts!r}")
    data = args.lane_data or resolve_data(args.cifar10, None)["cifar10"]
    if not data and not (args.status or args.save_state):
        parser.error("--lane cpu: no CIFAR-10 data found; name it with --cifar10 DIR")
    if args.budget_h <= 0:
        parser.error(f"--budget-h must be > 0, got {args.budget_h:g}")
    if args.lane_threads is not None and args.lane_threads < 1:
        parser.error(f"--lane-threads must be >= 1, got {args.lane_threads}")
    if args.lane_jobs is not None and args.lane_jobs < 1:
        parser.error(f"--lane-jobs must be >= 1, got {args.lane_jobs}")
    if args.lane_stage_jobs is not None and args.lane_stage_jobs < 1:
        parser.error(f"--lane-stage-jobs must be >= 1, got {args.lane_stage_jobs}")
    if args.checkpoint_minutes is not None and not args.checkpoint_minutes > 0:
        parser.error(f"--checkpoint-minutes must be > 0, got {args.checkpoint_minutes:g}")
    plan = cpu_lane.LanePlan(parts=parts, data=os.path.abspath(data) if data and os.path.exists(data) else (data or ""),
                             options=cpu_lane.LANE_OPTIONS + tuple(shlex.split(args.lane_options)),
                             checkpoint_minutes=args.checkpoint_minutes or cpu_lane.CHECKPOINT_MINUTES,
                             threads=args.lane_threads or cpu_lane.LANE_THREADS,
                             jobs=args.lane_jobs or cpu_lane.LANE_JOBS,
                             stage_jobs=args.lane_stage_jobs or cpu_lane.LANE_STAGE_JOBS,
                             repo=Path(args.out_root or ROOT), home=args.lane_home)
    if args.status:
        print(cpu_lane.status(plan))
        return 0
    if args.save_state:
        print(json.dumps(cpu_lane.save_state(plan)))
        return 0
    session = cpu_lane.Lane(plan, args.budget_h * 3600).run()
    shown = ("started", "ended", "period", "resumed_from", "jobs", "stage_jobs", "threads", "parts", "calls", "cpu_s", "wall_s")
    print(json.dumps({k: session.get(k) for k in shown}))
    return 0


def this_kind(ctx: Ctx, default: str) -> str:
    """This machine's device kind (``h100``, ``cpu``...) for the timings."""
    from gsimclr.provenance import device_kind, device_name

    if ctx.smoke or ctx.device == "cpu":
        return "cpu"
    import torch

    return device_kind(device_name(ctx.device)) if torch.cuda.is_available() else default


def stamp_call(ctx: Ctx) -> None:
    """``.evidence/COMMIT`` recomputed at the start of every call: the packed HEAD (and its code digest)
    beside the code's name now, so the stamp never names code that changed after packing."""
    from gsimclr.provenance import STAMP, read_stamp

    stamp = read_stamp(ROOT) or {}
    stamp.update(commit=ctx.commit, checked=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
    if not stamp.get("head"):
        return  # no packed stamp here (a plain checkout: git answers)
    path = ROOT / STAMP
    tmp = path.with_name(".COMMIT.tmp")
    tmp.write_text(json.dumps(stamp) + "\n")
    os.replace(tmp, path)
