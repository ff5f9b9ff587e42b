"""What every part of the evidence runner shares: the call's context (:class:`Ctx`), a part and a stage,
the one-line skip, atomic writes that the export picks up, and running gsimclr commands within a deadline."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
if (ROOT / "src" / "gsimclr").is_dir() and str(ROOT / "src") not in sys.path:  # this checkout's package wins
    sys.path.insert(0, str(ROOT / "src"))
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

PART_LIMIT_MIN = 8.5          # a part never plans past this (device commands end at 10 minutes)
STATE_OUT_MIB = 45            # 8 files of 16 MiB but 64 MiB in all come back: results, log and state share it
EXIT_MARGIN_S = 20            # a bounded command is stopped this long before the call's deadline (export time)
# --smoke: tiny sizes for every gsimclr command (each command gets the options it takes).
SMOKE_OPTIONS: dict[str, Any] = {
    "model": "paper_resnet", "n_blocks": 0, "head_dims": "32,16", "image_size": 16, "cache_size": 16,
    "epochs": 1, "batch_size": 16, "train_limit": 96, "test_limit": 48, "ae_epochs": 1, "ae_batch_size": 32,
    "k": 16, "linear_epochs": 1, "knn_k": 5, "finetune_head_epochs": 1, "finetune_epochs": 1,
    "supervised_epochs": 1, "tsne_points": 0, "warmup_epochs": 0, "checkpoint_every": 0,
    "recluster_warmup": 0,  # one epoch: encoder pseudo labels must come before it (a warm-up >= --epochs is refused)
}


def log(msg: str) -> None:
    print(f"[evidence] {msg}", file=sys.stderr, flush=True)


class Skip(Exception):
    """A part that cannot run here (missing data, preset, option or package): the reason is one line."""


@dataclass
class Ctx:
    root: Path                       # where results/, benchmarks/results/ and RESULTS.md go
    runs: Path                       # run folders: the parts' resumable state (exported when unfinished)
    data: dict[str, str | None]      # data set -> path
    smoke: bool = False
    device: str = "auto"
    deadline: float = math.inf       # time.monotonic() by which this call should be done
    forced: bool = False             # --stage without --budget-s: run even when the estimate exceeds the budget
    commit: str | None = None        # the code's name, computed at the start of this call
    preflight: dict | None = None    # the preflight's result, copied into every JSON
    invocation: str = ""             # this call's id (export file names)
    written: list[Path] = field(default_factory=list)

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def minutes_left(self) -> float:
        return max(0.5, min(PART_LIMIT_MIN, (self.seconds_left() - EXIT_MARGIN_S) / 60))

    def options(self, command: str, extra: dict[str, Any] | None = None) -> list[str]:
        """``--device`` (and the smoke sizes) as options of gsimclr subcommand ``command``."""
        from gsimclr.cli import command_options
        from gsimclr.config import flag

        values = {"device": self.device, **(SMOKE_OPTIONS if self.smoke else {}), **(extra or {})}
        taken = set(command_options(command))
        out = []
        for key, value in values.items():
            if key in taken and value is not None:
                out += [flag(key), ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
        return out


@dataclass
class Part:
    stage: str
    name: str
    path: str                                   # output JSON, relative to the results root
    est_s: float                                # planned seconds on one H100, compile excluded (until measured)
    needs: tuple[str, ...]                      # data sets
    run: Callable[[Ctx, "Part"], dict | None]   # the result, or None when unfinished (resume by running again)
    command: str = ""                           # set by run: what produced the numbers
    compiles: int = 0                           # torch.compile graphs it builds (the compile allowance before it ran)
    models: tuple[str, ...] = ()                # presets whose model it trains (the preflight compiles one step each)
    state: tuple[str, ...] = ()                 # folders under ctx.runs holding its resumable state
    state_mib: float = 0.0                      # expected size of that state (whether it can travel back)
    progress: Callable[[Ctx, "Part"], dict | None] | None = None   # what it has measured so far, read from its state

    def done(self, ctx: Ctx) -> bool:
        return (ctx.root / self.path).exists()

    def load(self, ctx: Ctx) -> dict | None:
        path = ctx.root / self.path
        return json.loads(path.read_text()) if path.exists() else None

    def state_dirs(self, ctx: Ctx) -> list[Path]:
        return [ctx.runs / s for s in self.state]


@dataclass
class Stage:
    key: str
    name: str
    title: str
    command: str                                 # how to produce it on a GPU machine
    parts: list[Part]
    report: Callable[[Ctx, "Stage"], str]        # Markdown for RESULTS.md (also writes the stage's own files)


def write_text(ctx: Ctx, path: Path, text: str) -> None:
    from gsimclr.io import write_text as atomic

    atomic(path, text)
    ctx.written.append(path)


def write_json(ctx: Ctx, path: Path, obj: Any) -> None:
    write_text(ctx, path, json.dumps(obj, indent=2, default=str) + "\n")


def have_lightly() -> bool:
    try:
        import lightly  # noqa: F401
    except ImportError:
        return False
    return True


def read_jsonl(path: Path) -> list[dict]:
    """The complete lines of a JSON-lines file (a line cut by a kill is left out)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            if line.strip():
                out.append(json.loads(line))
    return out


def run_gsimclr(ctx: Ctx, argv: list[str]) -> str:
    """Run a gsimclr CLI command (:func:`run_bounded`); returns the command line, a failure raises."""
    def here() -> int:
        from gsimclr.cli import main

        return main(argv)

    return run_bounded(ctx, ["-m", "gsimclr", *argv], here, "python -m gsimclr " + shlex.join(argv), f"gsimclr {argv[0]}")


def run_bounded(ctx: Ctx, args: list[str], here: Callable[[], int | None], line: str, name: str = "") -> str:
    """Run a command: ``python ARGS`` as a child process, or ``here()`` in this process.

    Without a deadline (``--smoke`` without ``--budget-s``) it runs here. With one it is a child process
    stopped (SIGTERM, then SIGKILL) :data:`EXIT_MARGIN_S` before the deadline, whatever it is doing
    (autoencoder, pretraining, evaluation, supervised baseline, a benchmark window): every stage is bounded,
    not only the pretraining that ``--max-minutes`` ends with a checkpoint. What the command finished stays
    in its folder for the next call to continue from. A stopped command raises :class:`Stopped` (the part
    is unfinished, not failed); a failed one RuntimeError (``name`` says which)."""
    name = name or args[0]
    log(f"$ {line}")
    if not math.isfinite(ctx.deadline):
        try:
            rc = here()
        except SystemExit as exc:  # argparse, or a script's own exit
            rc = exc.code if isinstance(exc.code, int) else 2
        if rc:
            raise RuntimeError(f"{name} exited with status {rc}")
        return line
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [str(ROOT / "src"), os.environ.get("PYTHONPATH")] if p))
    proc = subprocess.Popen([sys.executable, *args], env=env, cwd=os.getcwd(), preexec_fn=_die_with_parent)
    rc = wait_bounded(proc, ctx.deadline - EXIT_MARGIN_S)
    if rc is None:
        raise Stopped(f"{name} stopped at the call's deadline; run again to continue")
    if rc:
        raise RuntimeError(f"{name} exited with status {rc}")
    return line


try:  # resolved before any fork: the child only makes one call
    import ctypes

    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    """In a bounded child: be killed with the runner (PR_SET_PDEATHSIG), so a runner killed at the call's
    limit leaves no process behind that keeps the GPU or writes into the run folders."""
    if _prctl is not None:
        _prctl(1, signal.SIGKILL, 0, 0, 0)


class Stopped(Exception):
    """A bounded command stopped at the deadline: its part is unfinished and resumes in the next call."""


def wait_bounded(proc: subprocess.Popen, until: float) -> int | None:
    """Wait for ``proc`` until ``time.monotonic()`` reaches ``until``; then SIGTERM it, and
    SIGKILL it 10 s later. Returns the exit status, or None when it was stopped."""
    if not math.isfinite(until):
        return proc.wait()
    with contextlib.suppress(subprocess.TimeoutExpired):
        return proc.wait(timeout=max(0.0, until - time.monotonic()))
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
            break
    return None


def accepts(command: str, options: list[str]) -> str | None:
    """None when gsimclr ``command`` accepts ``options`` (each flag spelled out, not an abbreviation of
    another option, and the values valid), else the CLI's one-line complaint."""
    import argparse as ap

    from gsimclr import cli
    from gsimclr.errors import UserError

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, ap._SubParsersAction)).choices[command]
    known = {s for a in sub._actions for s in a.option_strings}
    unknown = [o for o in options if o.startswith("--") and o.split("=", 1)[0] not in known]
    if unknown:
        return f"no option {', '.join(unknown)}"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = parser.parse_args([command, *options])
        except SystemExit:
            lines = [l for l in err.getvalue().splitlines() if l.strip()]
            return lines[-1] if lines else "rejected"
    try:
        cli._config(args)
    except UserError as exc:
        return str(exc).splitlines()[0]
    return None


def mean_sd(values: list[float]) -> str:
    from gsimclr.report import _mean_std

    return _mean_std([v for v in values if v is not None]) or "-"


def rel(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies inside it (commands stay readable and
    machine-independent), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def resolve_data(cifar10: str | None, imagenet5: str | None) -> dict[str, str | None]:
    def first(*candidates):
        for c in candidates:
            if c and Path(c).exists():
                return rel(c)
        return None

    return {"cifar10": first(cifar10, ROOT / ".evidence" / "cifar10", ROOT.parent / "shared" / "data" / "cifar10"),
            "imagenet5": first(imagenet5, ROOT / ".evidence" / "imagenet5",
                               ROOT.parent / "shared" / "data" / "imagenet5")}


def header(stage: Stage, payloads: list[dict]) -> str:
    """Provenance of a stage's table: every part's command, commit, device, versions and date."""
    lines = [f"# {stage.title}", ""]
    for p in payloads:
        v = p.get("versions", {})
        timing = f"{p['wall_s']:.0f} s" + (f" (compile {p['compile_s']:.0f} s)" if p.get("compile_s") else "")
        lines.append(f"- {p['part']}: {p['date']}, {p['device']}, commit {p.get('commit')}, torch {v.get('torch')}, "
                     f"torchvision {v.get('torchvision')}, lightly {v.get('lightly')}, {timing}: "
                     f"`{p['command']}`")
    return "\n".join(lines) + "\n\n"
