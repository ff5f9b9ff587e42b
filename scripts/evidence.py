#!/usr/bin/env python
"""GPU evidence (issue 12): stages that turn lent GPU time into committed numbers.

Each stage is a list of *parts*; a part is one unit of work expected to take well under 9 minutes on one
H100 and writes one JSON file (under ``results/evidence/`` or ``benchmarks/results/``) holding its numbers
beside the command, git commit, device, versions and date. A part whose JSON exists is done and skipped,
so the script can be run again and again (in several device calls, across sessions) until every part is
committed. After its parts, a stage writes its Markdown table (and plot) from whatever parts exist, and
``RESULTS.md`` is rewritten from every stage's table.

Stages:
    a  throughput   gsimclr vs the lightly recipe (benchmarks/throughput.py): ResNet-18 CIFAR b512/b1024, ResNet-50 224 px
    b  tta          time to accuracy: cifar10-resnet18 with kNN monitored, beside the lightly recipe (b512, 60 epochs)
    c  paper-cifar10     paper-cifar10 and paper-cifar10-clean, seeds 0 1 2 (SimCLR, G-SimCLR, supervised)
    d  paper-imagenet5   paper-imagenet5 and paper-imagenet5-clean, seeds 0 1 2
    e  guidance     SimCLR against the guidance variants (:data:`GUIDANCE_VARIANTS`) with the strong recipe, 3 seeds
    f  checks       torchrun --nproc_per_node=1 vs a plain run (checkpoints); bf16 vs fp32 NT-Xent on a real step

Usage:
    python scripts/evidence.py --list                 # stages, parts and their state
    python scripts/evidence.py                        # every unfinished part, in order
    python scripts/evidence.py --stage b              # one stage (or one part: --stage paper-cifar10-seed0)
    python scripts/evidence.py --budget-s 500         # the parts that fit in 500 s (by their H100 estimates)
    python scripts/evidence.py --export $OUT          # also pack what this call wrote into $OUT/evidence.tar
    python scripts/evidence.py --import evidence.tar  # here: put a device call's files in place
    python scripts/evidence.py --report               # rewrite the tables and RESULTS.md from the JSON files
    python scripts/evidence.py --smoke                # every stage at tiny sizes on the CPU, into a temp folder

Data: ``.evidence/cifar10`` and ``.evidence/imagenet5`` (made by ``scripts/pack_for_device.py``; they travel
to the GPU machine as carried paths), else ``../shared/data/...``; ``--cifar10``/``--imagenet5`` name others.
A part whose data, preset, option or package (lightly) is missing is skipped with a one-line reason.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import io
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "src" / "gsimclr").is_dir():  # this checkout's package wins over an installed one
    sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

SEEDS = (0, 1, 2)
SMOKE_SEEDS = (0,)                # --smoke: the same parts with one seed
PART_LIMIT_MIN = 8.5          # a part never plans past this (device commands end at 10 minutes)
TTA_EPOCHS, TTA_BATCH, TTA_MONITOR = 60, 512, 5
GUIDANCE_PRESET, GUIDANCE_EPOCHS = "cifar10-resnet18", 100
# The guidance variants of stage e: name -> (method, extra `gsimclr pretrain` options). Edit freely; a
# variant whose options this checkout's CLI does not accept is skipped with the CLI's message.
GUIDANCE_VARIANTS: dict[str, tuple[str, list[str]]] = {
    "simclr": ("simclr", []),
    "paper-batches": ("gsimclr", ["--sampler", "paper", "--guidance", "none"]),
    "spread": ("gsimclr", ["--sampler", "spread", "--guidance", "none"]),
    "encoder": ("gsimclr", ["--sampler", "spread", "--guidance", "none", "--pseudo-labels", "encoder"]),
    "mask": ("gsimclr", ["--sampler", "random", "--guidance", "mask"]),
    "attract": ("gsimclr", ["--sampler", "random", "--guidance", "attract"]),
}
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


# ------------------------------------------------------------------------------------------ context


@dataclass
class Ctx:
    root: Path                       # where results/, benchmarks/results/ and RESULTS.md go
    runs: Path                       # run folders (kept between calls on a warm machine, never committed)
    data: dict[str, str | None]      # data set -> path
    smoke: bool = False
    device: str = "auto"
    deadline: float = math.inf       # time.monotonic() by which this call should be done
    forced: bool = False             # --stage: run even when the estimate exceeds the budget
    written: list[Path] = field(default_factory=list)

    def minutes_left(self) -> float:
        return max(0.5, min(PART_LIMIT_MIN, (self.deadline - time.monotonic()) / 60))

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
    est_s: float                                # expected seconds on one H100 (for --budget-s)
    needs: tuple[str, ...]                      # data sets
    run: Callable[[Ctx, "Part"], dict | None]   # the result, or None when incomplete (resume by running again)
    command: str = ""                           # set by run: what produced the numbers

    def done(self, ctx: Ctx) -> bool:
        return (ctx.root / self.path).exists()

    def load(self, ctx: Ctx) -> dict | None:
        path = ctx.root / self.path
        return json.loads(path.read_text()) if path.exists() else None


@dataclass
class Stage:
    key: str
    name: str
    title: str
    command: str                                 # how to produce it on a GPU machine
    parts: list[Part]
    report: Callable[[Ctx, "Stage"], str]        # Markdown for RESULTS.md (also writes the stage's own files)


# --------------------------------------------------------------------------------------- utilities


def write_text(ctx: Ctx, path: Path, text: str) -> None:
    from gsimclr.io import write_text as atomic

    atomic(path, text)
    ctx.written.append(path)


def write_json(ctx: Ctx, path: Path, obj: Any) -> None:
    write_text(ctx, path, json.dumps(obj, indent=2, default=str) + "\n")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    stamp = ROOT / ".evidence" / "COMMIT"  # written by scripts/pack_for_device.py (the device copy has no .git)
    return stamp.read_text().strip() if stamp.exists() else None


def versions() -> dict[str, str | None]:
    import torch

    def version(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    from gsimclr import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": version("torchvision"),
            "lightly": version("lightly"), "gsimclr": __version__, "cuda": torch.version.cuda}


def device_name(ctx: Ctx) -> str:
    import torch

    if ctx.device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or "CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu} ({os.cpu_count()} cores, no GPU used)"


def run_gsimclr(argv: list[str]) -> str:
    """Run a gsimclr CLI command in this process; returns the command line. A failure raises."""
    from gsimclr.cli import main

    line = "python -m gsimclr " + shlex.join(argv)
    log(f"$ {line}")
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code if isinstance(exc.code, int) else 2
    if rc:
        raise RuntimeError(f"gsimclr {argv[0]} exited with status {rc}")
    return line


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


def have_lightly() -> bool:
    try:
        import lightly  # noqa: F401
    except ImportError:
        return False
    return True


def mean_sd(values: list[float]) -> str:
    from gsimclr.report import _mean_std

    return _mean_std([v for v in values if v is not None]) or "-"


# ----------------------------------------------------------------------------------- a: throughput


THROUGHPUT_PARTS = {  # part -> (configs, data set)
    "throughput-cuda-cifar": (["r18-cifar-b512", "r18-cifar-b1024"], "cifar10"),
    "throughput-cuda-r50": (["r50-in5-b128"], "imagenet5"),
}
THROUGHPUT_SMOKE = ["--steps", "1", "--windows", "1", "--warmup", "1", "--subset", "48", "--no-breakdown",
                    "--lightly-workers", "0", "--set", "model=paper_resnet", "--set", "n_blocks=0",
                    "--set", "head_dims=32,16", "--set", "batch_size=16", "--set", "image_size=16",
                    "--set", "cache_size=16"]


def run_throughput(ctx: Ctx, part: Part) -> dict:
    import throughput

    if not have_lightly():
        raise Skip("lightly is not installed (carry its wheels: scripts/pack_for_device.py)")
    configs, dataset = THROUGHPUT_PARTS[part.name]
    out = (ctx.root / part.path).parent
    argv = ["--configs", *configs, f"--{dataset}", ctx.data[dataset], "--name", part.name, "--out", str(out),
            "--device", "cpu" if ctx.smoke else "cuda"] + (THROUGHPUT_SMOKE if ctx.smoke else [])
    part.command = "python benchmarks/throughput.py " + shlex.join(argv)
    log(f"$ {part.command}")
    if throughput.main(argv) != 0:
        raise RuntimeError("benchmarks/throughput.py failed")
    ctx.written.append(out / f"{part.name}.md")
    report = json.loads((out / f"{part.name}.json").read_text())
    if not report["results"]:
        raise RuntimeError("throughput: no config ran")
    return report


DATAPATH_GPU = ["--size", "224", "--stored-size", "256", "--batch-size", "128", "--batches", "8", "--warmup", "3",
                "--rounds", "3", "--decoders", "cuda,pil", "--device", "cuda"]
DATAPATH_SMOKE = ["--size", "16", "--stored-size", "32", "--batch-size", "8", "--batches", "1", "--warmup", "1",
                  "--rounds", "1", "--decoders", "pil,torchvision", "--device", "cpu", "--threads", "1"]


def run_datapath(ctx: Ctx, part: Part) -> dict:
    """The JPEG store's data path at 224 px on the GPU (issue: data beyond memory): nvJPEG against the
    Pillow thread pool as the store path's decoder, each with the compiled augmentation on the GPU,
    against torchvision's DataLoader + PIL transforms, on the ImageNet subset's JPEGs."""
    import data_path

    out = ctx.root / "benchmarks" / "results"
    threads = ["--threads", str(max(1, (os.cpu_count() or 2) - 1))] if not ctx.smoke else []
    argv = ["path", ctx.data["imagenet5"], *(DATAPATH_SMOKE if ctx.smoke else DATAPATH_GPU + threads),
            "--cache-dir", str(ctx.runs / "cache"), "--out", str(out)]
    part.command = "python benchmarks/data_path.py " + shlex.join(argv)
    log(f"$ {part.command}")
    section = data_path.main(argv)
    kind = "cpu" if ctx.smoke else "cuda"
    ctx.written += [out / f"data-path-{kind}.json", out / f"data-path-{kind}.md"]
    return section


def report_datapath(ctx: Ctx, part: Part) -> list[str]:
    data = part.load(ctx)
    if not data:
        return []
    body = data["result"]["result"]  # the payload's result is data_path.py's section, whose result is the table
    rows = ["", "| data path at 224 px (two views) | images/s | peak GPU memory | JSON |", "|---|---:|---:|---|"]
    for key, r in body.items():
        if not key.startswith("ratio"):
            rows.append(f"| {r['pipeline']} | {r['images_per_s']:.0f} | {r.get('peak_gpu_gib', '-')} | [{part.name}]({part.path}) |")
    return rows


def report_throughput(ctx: Ctx, stage: Stage) -> str:
    rows = ["| config | gsimclr images/s | lightly images/s | ratio (paired) | gsimclr % of matmul rate | "
            "lightly % of matmul rate | gsimclr peak memory | lightly peak memory | JSON |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for part in stage.parts:
        data = part.load(ctx) if part.run is run_throughput else None
        if not data:
            continue
        for r in data["result"]["results"]:
            g, l = r["pipelines"]["gsimclr"], r["pipelines"]["lightly"]
            gib = lambda b: "-" if b is None else f"{b / 2**30:.2f} GiB"  # noqa: E731
            rows.append(f"| {r['config']} | {g['images_per_s']:.0f} | {l['images_per_s']:.0f} | "
                        f"{r['ratio_gsimclr_to_lightly']:.2f}x ({r['paired_ratio_gsimclr_to_lightly']:.2f}x) | "
                        f"{100 * g['matmul_fraction']:.1f}% | {100 * l['matmul_fraction']:.1f}% | "
                        f"{gib(g['peak_memory_bytes'])} | {gib(l['peak_memory_bytes'])} | [{part.name}]({part.path}) |")
    extra = [line for part in stage.parts if part.run is run_datapath for line in report_datapath(ctx, part)]
    return "\n".join((rows if len(rows) > 2 else []) + extra)


# ------------------------------------------------------------------------------ b: time to accuracy


def tta_options(ctx: Ctx) -> dict[str, Any]:
    opts = {"epochs": TTA_EPOCHS, "batch_size": TTA_BATCH, "schedule": "cosine", "monitor_every": TTA_MONITOR,
            "checkpoint_every": TTA_MONITOR}
    if ctx.smoke:
        opts.update(epochs=2, batch_size=16, monitor_every=1, checkpoint_every=1)
    return opts


def run_tta_gsimclr(ctx: Ctx, part: Part) -> dict | None:
    out = ctx.runs / "tta-gsimclr"
    resume = ["--resume"] if (out / "simclr").exists() else []
    argv = ["pretrain", "--preset", "cifar10-resnet18", "--data", ctx.data["cifar10"], "--out", str(out),
            "--method", "simclr", *ctx.options("pretrain", tta_options(ctx)), *resume,
            "--max-minutes", f"{ctx.minutes_left():.2f}"]
    part.command = run_gsimclr(argv)
    records = [json.loads(l) for l in (out / "simclr" / "metrics.jsonl").read_text().splitlines() if l.strip()]
    epochs = tta_options(ctx)["epochs"] if ctx.smoke else TTA_EPOCHS
    if not records or records[-1]["epoch"] < epochs:
        return None
    curve = [{"epoch": r["epoch"], "train_s": r["train_s"], "knn": r["knn"]} for r in records if "knn" in r]
    return {"pipeline": "gsimclr", "epochs": epochs, "curve": curve, "final_knn": curve[-1]["knn"] if curve else None,
            "train_s": records[-1]["train_s"],
            "images_per_s_median": sorted(r["images_per_s"] for r in records)[len(records) // 2]}


def run_tta_lightly(ctx: Ctx, part: Part) -> dict | None:
    """The lightly recipe (throughput.py's LightlyPipeline: SimCLRTransform on PIL images in a DataLoader,
    NTXentLoss, one eager forward per view) trained with the same model, optimizer, schedule and kNN monitor."""
    import numpy as np
    import torch

    if not have_lightly():
        raise Skip("lightly is not installed (carry its wheels: scripts/pack_for_device.py)")
    from throughput import LightlyPipeline, cpu_count

    from gsimclr.config import load_config
    from gsimclr.pipeline import load_data
    from gsimclr.runtime import resolve_device
    from gsimclr.training.optim import lr_multiplier
    from gsimclr.training.pretrain import monitor_knn

    overrides = {"data": ctx.data["cifar10"], "device": ctx.device, **tta_options(ctx)}
    if ctx.smoke:
        overrides.update({k: v for k, v in SMOKE_OPTIONS.items() if k not in ("epochs", "batch_size")})
        overrides["head_dims"] = [32, 16]
    cfg = load_config("cifar10-resnet18", overrides)
    train, test = load_data(cfg)
    if cfg.train_limit:
        from gsimclr.pipeline import _limit

        train, test = _limit(train, cfg.train_limit, cfg.seed), _limit(test, cfg.test_limit, cfg.seed)
    device = resolve_device(cfg.device)
    workers = 0 if ctx.smoke else max(1, cpu_count() - 1)
    pipe = LightlyPipeline(cfg, device, train.images, workers)
    out = ctx.runs / "tta-lightly"
    state_path = out / "state.pt"
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    schedule = lr_multiplier(cfg.schedule, cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch),
                             round(cfg.restart_epochs * steps_per_epoch))
    state = {"epoch": 0, "train_s": 0.0, "curve": [], "images_per_s": []}
    if state_path.exists():
        saved = torch.load(state_path, map_location=device, weights_only=False)
        pipe.model.load_state_dict(saved["model"])
        pipe.optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
    loader = torch.utils.data.DataLoader(
        pipe.dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=False, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed + state["epoch"]))
    part.command = (f"python scripts/evidence.py --stage {part.name}  (lightly recipe: preset cifar10-resnet18, "
                    f"batch {cfg.batch_size}, {cfg.epochs} epochs, {cfg.schedule}, kNN every {cfg.monitor_every}, "
                    f"{workers} DataLoader workers)")
    started, limit_s = time.perf_counter(), ctx.minutes_left() * 60
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        pipe.model.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i, ((x0, x1), _) in enumerate(loader):
            for group in pipe.optimizer.param_groups:
                group["lr"] = cfg.lr * schedule(epoch * steps_per_epoch + i)
            pipe.train_step(x0, x1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_s = time.perf_counter() - t0
        if not math.isfinite(float(pipe.total)):
            raise RuntimeError("lightly: the loss is not finite")
        state["train_s"] += epoch_s
        state["images_per_s"].append(len(train) / epoch_s)
        state["epoch"] = epoch + 1
        if state["epoch"] % cfg.monitor_every == 0 or state["epoch"] == cfg.epochs:
            knn = monitor_knn(cfg, pipe.model, train, test, device)
            state["curve"].append({"epoch": state["epoch"], "train_s": state["train_s"], "knn": knn})
            log(f"lightly epoch {state['epoch']}/{cfg.epochs}: kNN {knn:.2f}% at {state['train_s']:.0f} s")
        if state["epoch"] < cfg.epochs and time.perf_counter() - started + epoch_s > limit_s:
            out.mkdir(parents=True, exist_ok=True)
            from gsimclr.io import atomic_path

            with atomic_path(state_path) as tmp:
                torch.save({"model": pipe.model.state_dict(), "optimizer": pipe.optimizer.state_dict(),
                            "state": state}, tmp)
            log(f"lightly: stopped at epoch {state['epoch']}/{cfg.epochs}; run again to resume")
            return None
    return {"pipeline": "lightly", "epochs": cfg.epochs, "workers": workers, "curve": state["curve"],
            "final_knn": state["curve"][-1]["knn"], "train_s": state["train_s"],
            "images_per_s_median": float(np.median(state["images_per_s"]))}


def report_tta(ctx: Ctx, stage: Stage) -> str:
    data = {p.name: p.load(ctx) for p in stage.parts}
    done = {k: v["result"] for k, v in data.items() if v}
    if not done:
        return ""
    from gsimclr.plots import plot_curves

    names = {"tta-gsimclr": "gsimclr", "tta-lightly": "lightly recipe"}
    curves = {names[k]: ([c["train_s"] for c in r["curve"]], [c["knn"] for c in r["curve"]]) for k, r in done.items()}
    png = ctx.root / "results" / "evidence" / "tta.png"
    plot_curves(curves, png, "kNN top-1 %", "CIFAR-10, ResNet-18: kNN against training time",
                xlabel="training time (s, kNN checks excluded)",
                context="run evidence stage b · data cifar10 · SimCLR, gsimclr vs the lightly recipe")
    ctx.written.append(png)
    rows = ["| pipeline | epochs | training time (s) | images/s (median epoch) | final kNN % | kNN % by epoch | JSON |",
            "|---|---:|---:|---:|---:|---|---|"]
    for key, r in done.items():
        path = next(p.path for p in stage.parts if p.name == key)
        by_epoch = ", ".join(f"{c['epoch']}: {c['knn']:.1f}" for c in r["curve"])
        rows.append(f"| {names[key]} | {r['epochs']} | {r['train_s']:.0f} | {r['images_per_s_median']:.0f} | "
                    f"{r['final_knn']:.2f} | {by_epoch} | [{key}]({path}) |")
    devices = {v["device"] for v in data.values() if v}
    note = "" if len(devices) <= 1 else f"\n\nNote: the parts ran on different devices ({', '.join(sorted(devices))})."
    return "\n".join(rows) + f"\n\n![kNN against training time](results/evidence/tta.png){note}"


# ------------------------------------------------------------------------------ c, d: paper presets


def run_preset_seed(preset: str, dataset: str, seed: int) -> Callable[[Ctx, Part], dict | None]:
    def run(ctx: Ctx, part: Part) -> dict | None:
        from gsimclr.config import preset_names

        if preset not in preset_names():
            raise Skip(f"preset {preset} does not exist in this checkout yet")
        out = ctx.runs / f"{preset}-seed{seed}"
        resume = ["--resume"] if out.exists() else []
        argv = ["run", "--preset", preset, "--data", ctx.data[dataset], "--seed", str(seed), "--out", str(out),
                *ctx.options("run"), *resume, "--max-minutes", f"{ctx.minutes_left():.2f}"]
        part.command = run_gsimclr(argv)
        path = out / "results.json"
        return json.loads(path.read_text()) if path.exists() else None

    return run


def report_presets(presets: tuple[str, ...], paper: str):
    def report(ctx: Ctx, stage: Stage) -> str:
        from gsimclr.report import summarize_results

        sections = []
        for preset in presets:
            parts = [p for p in stage.parts if p.name.startswith(f"{preset}-seed")]
            done = [(p, p.load(ctx)) for p in parts]
            done = [(p, d) for p, d in done if d]
            if not done:
                continue
            table = summarize_results([d["result"] for _, d in done], paper)
            seeds = ", ".join(f"[seed {d['seed']}]({p.path})" for p, d in done)
            text = f"**{preset}** ({len(done)} of {len(parts)} seeds: {seeds})\n\n{table}"
            write_text(ctx, ctx.root / "results" / "evidence" / f"{preset}.md", header(stage, [d for _, d in done]) + text + "\n")
            sections.append(text)
        return "\n\n".join(sections)

    return report


# ------------------------------------------------------------------------------------- e: guidance


def run_guidance(variant: str, seed: int) -> Callable[[Ctx, Part], dict | None]:
    def run(ctx: Ctx, part: Part) -> dict | None:
        if variant not in GUIDANCE_VARIANTS:
            raise Skip(f"variant {variant} is no longer in GUIDANCE_VARIANTS")
        method, extra = GUIDANCE_VARIANTS[variant]
        problem = accepts("pretrain", ["--method", method, *extra])
        if problem:
            raise Skip(f"variant {variant}: this checkout does not accept {' '.join(extra)} ({problem})")
        out = ctx.runs / f"guidance-{variant}-seed{seed}"
        base = ["--preset", GUIDANCE_PRESET, "--data", ctx.data["cifar10"], "--out", str(out)]
        epochs = {"epochs": GUIDANCE_EPOCHS} if not ctx.smoke else {}
        resume = ["--resume"] if (out / method).exists() else []
        commands = [run_gsimclr(["pretrain", *base, "--seed", str(seed), "--method", method, *extra,
                                 *ctx.options("pretrain", epochs), *resume,
                                 "--max-minutes", f"{ctx.minutes_left():.2f}"])]
        from gsimclr.checkpoint import read_meta

        ckpt = out / method / "checkpoint.safetensors"
        want = SMOKE_OPTIONS["epochs"] if ctx.smoke else GUIDANCE_EPOCHS
        if int(read_meta(ckpt).get("epoch", 0)) < want:
            return None
        results: dict[str, Any] = {"variant": variant, "method": method, "options": extra, "epochs": want, "seed": seed}
        for command, key in (("knn", "knn"), ("linear-eval", "linear")):
            commands.append(run_gsimclr([command, "--out", str(out), "--method", method, *ctx.options(command)]))
            value = json.loads((out / method / f"{key}.json").read_text())
            results[key] = value.get(key, value) if isinstance(value, dict) else value
        metrics = [json.loads(l) for l in (out / method / "metrics.jsonl").read_text().splitlines() if l.strip()]
        results["pretrain_s"] = metrics[-1]["train_s"] if metrics else None
        part.command = " && ".join(commands)
        return results

    return run


def report_guidance(ctx: Ctx, stage: Stage) -> str:
    rows = ["| variant | method and options | seeds | kNN % | linear P3 % | pretraining s | JSON |",
            "|---|---|---:|---:|---:|---:|---|"]
    variants = dict.fromkeys(p.name.rsplit("-seed", 1)[0].removeprefix("guidance-") for p in stage.parts)
    for variant in variants:
        parts = [p for p in stage.parts if p.name.startswith(f"guidance-{variant}-seed")]
        done = [(p, d["result"]) for p in parts if (d := p.load(ctx))]
        if not done:
            continue
        knn = [r["knn"] for _, r in done]
        p3 = [(r["linear"] or {}).get("P3") if isinstance(r["linear"], dict) else None for _, r in done]
        secs = [r["pretrain_s"] for _, r in done if r.get("pretrain_s") is not None]
        r0 = done[0][1]
        links = ", ".join(f"[{r['seed']}]({p.path})" for p, r in done)
        rows.append(f"| {variant} | {r0['method']} {' '.join(r0['options'])} | {len(done)} | {mean_sd(knn)} | "
                    f"{mean_sd(p3)} | {mean_sd(secs)} | {links} |")
    return "\n".join(rows) if len(rows) > 2 else ""


# ----------------------------------------------------------------------------------------- f: checks


def check_options(ctx: Ctx) -> dict[str, Any]:
    opts = {"epochs": 2, "train_limit": 4096, "test_limit": 1000, "monitor_every": 0, "checkpoint_every": 0,
            "warmup_epochs": 0}
    if ctx.smoke:
        opts.update(epochs=1, train_limit=64, test_limit=32)
    return opts


def run_ddp_equal(ctx: Ctx, part: Part) -> dict:
    """The same short pretraining three times: plain, plain again (the run-to-run floor: cuDNN and
    compiled kernels need not be bitwise deterministic), and under torchrun --nproc_per_node=1."""
    import numpy as np
    from safetensors.numpy import load_file

    commands, folders = [], {}
    for name in ("plain", "plain-again", "torchrun"):
        out = ctx.runs / f"ddp-{name}"
        if out.exists():
            shutil.rmtree(out)
        args = ["pretrain", "--preset", "cifar10-resnet18", "--data", ctx.data["cifar10"], "--out", str(out),
                "--method", "simclr", *ctx.options("pretrain", check_options(ctx))]
        if name == "torchrun":
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                   "-m", "gsimclr", *args]
            line = "torchrun --standalone --nproc_per_node=1 -m gsimclr " + shlex.join(args)
            log(f"$ {line}")
            proc = subprocess.run(cmd, env=env, cwd=ROOT)
            if proc.returncode:
                raise RuntimeError(f"torchrun exited with status {proc.returncode}")
            commands.append(line)
        else:
            commands.append(run_gsimclr(args))
        folders[name] = load_file(str(out / "simclr" / "checkpoint.safetensors"))

    def diff(a: dict, b: dict) -> dict:
        keys = sorted(a)  # the whole checkpoint: weights, BatchNorm statistics and optimizer state
        if set(a) != set(b):
            return {"same_keys": False}
        worst, worst_key, total_sq, ref_sq = 0.0, None, 0.0, 0.0
        for k in keys:
            x, y = a[k].astype(np.float64), b[k].astype(np.float64)
            d = float(np.abs(x - y).max()) if x.size else 0.0
            total_sq += float(((x - y) ** 2).sum())
            ref_sq += float((x ** 2).sum())
            if d > worst:
                worst, worst_key = d, k
        return {"same_keys": True, "tensors": len(keys), "max_abs_diff": worst, "max_abs_diff_tensor": worst_key,
                "relative_l2_diff": math.sqrt(total_sq / ref_sq) if ref_sq else 0.0,
                "bitwise_equal": all(np.array_equal(a[k], b[k]) for k in keys)}

    torchrun_vs_plain = diff(folders["plain"], folders["torchrun"])
    floor = diff(folders["plain"], folders["plain-again"])
    equal = torchrun_vs_plain.get("bitwise_equal") or (
        torchrun_vs_plain.get("same_keys") and torchrun_vs_plain["relative_l2_diff"] <= max(2 * floor["relative_l2_diff"], 1e-6))
    part.command = " ; ".join(commands)
    return {"torchrun_vs_plain": torchrun_vs_plain, "plain_vs_plain": floor, "equal": bool(equal),
            "rule": "equal: bitwise, or relative L2 difference within 2x the plain-vs-plain floor (at least 1e-6)",
            "options": check_options(ctx)}


def run_bf16_ntxent(ctx: Ctx, part: Part) -> dict:
    """One real training step's loss and gradients (the cifar10-resnet18 model, a batch of real CIFAR-10
    images, the real augmentation) under bf16 autocast against fp32; the model is the plain run's checkpoint
    from ``ddp-equal`` when present (a trained model), else freshly initialised."""
    import torch

    from gsimclr.checkpoint import load_checkpoint
    from gsimclr.config import load_config
    from gsimclr.pipeline import load_data
    from gsimclr.runtime import autocast, resolve_device, seed_everything
    from gsimclr.training.pretrain import build_model, make_views_fn
    from gsimclr.loss import build_criterion
    from gsimclr.training.pretrain import make_loss_fn

    overrides = {"data": ctx.data["cifar10"], "device": ctx.device}
    if ctx.smoke:
        overrides.update({k: v for k, v in SMOKE_OPTIONS.items() if k in ("model", "n_blocks", "image_size", "cache_size",
                                                                            "batch_size", "train_limit")})
        overrides["head_dims"] = [32, 16]
    cfg = load_config("cifar10-resnet18", overrides)
    train, _ = load_data(cfg)
    device = resolve_device(cfg.device)
    seed_everything(0)
    model = build_model(cfg).to(device, memory_format=torch.channels_last)
    ckpt = ctx.runs / "ddp-plain" / "simclr" / "checkpoint.safetensors"
    trained = False
    if ckpt.exists() and not ctx.smoke:
        load_checkpoint(ckpt, model)
        trained = True
    model.train()
    idx = torch.from_numpy(__import__("numpy").random.default_rng(0).choice(len(train), cfg.batch_size, replace=False))
    batch = torch.from_numpy(train.images[idx.numpy()]).to(device)
    views = make_views_fn(cfg, device)(batch)
    loss_fn = make_loss_fn(build_criterion(cfg))
    state = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm running stats move in train mode
    results = {}
    for precision in ("fp32", "bf16"):
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = loss_fn(model, views, None)
        loss.backward()
        results[precision] = (float(loss), {n: p.grad.detach().float().clone() for n, p in model.named_parameters()
                                            if p.grad is not None})
    (l32, g32), (l16, g16) = results["fp32"], results["bf16"]
    per_tensor = {n: float((g16[n] - g32[n]).norm() / g32[n].norm()) for n in g32 if float(g32[n].norm()) > 0}
    all32 = torch.cat([g.flatten() for g in g32.values()])
    all16 = torch.cat([g16[n].flatten() for n in g32])
    cos = float(torch.nn.functional.cosine_similarity(all16, all32, dim=0))
    worst = max(per_tensor, key=per_tensor.get)
    part.command = f"python scripts/evidence.py --stage {part.name}"
    return {"loss_fp32": l32, "loss_bf16": l16, "loss_relative_error": abs(l16 - l32) / abs(l32),
            "grad_relative_l2_error": float((all16 - all32).norm() / all32.norm()), "grad_cosine": cos,
            "grad_worst_tensor": worst, "grad_worst_tensor_relative_error": per_tensor[worst],
            "grad_median_tensor_relative_error": sorted(per_tensor.values())[len(per_tensor) // 2],
            "batch_size": cfg.batch_size, "model": cfg.model, "trained_model": trained,
            "temperature": cfg.temperature}


def report_checks(ctx: Ctx, stage: Stage) -> str:
    lines = []
    ddp = next((p.load(ctx) for p in stage.parts if p.name == "ddp-equal"), None)
    if ddp:
        r = ddp["result"]
        t, f = r["torchrun_vs_plain"], r["plain_vs_plain"]
        lines += ["| comparison | bitwise equal | max abs diff | relative L2 diff |", "|---|---|---:|---:|",
                  f"| torchrun --nproc_per_node=1 vs plain | {t.get('bitwise_equal')} | {t.get('max_abs_diff', 0):.3g} | "
                  f"{t.get('relative_l2_diff', 0):.3g} |",
                  f"| plain vs plain (floor) | {f.get('bitwise_equal')} | {f.get('max_abs_diff', 0):.3g} | "
                  f"{f.get('relative_l2_diff', 0):.3g} |", "",
                  f"Checkpoints equal: **{r['equal']}** ({r['rule']}). [ddp-equal](results/evidence/ddp-equal.json)", ""]
    bf = next((p.load(ctx) for p in stage.parts if p.name == "bf16-ntxent"), None)
    if bf:
        r = bf["result"]
        lines += ["| bf16 vs fp32 (one step) | value |", "|---|---:|",
                  f"| loss fp32 / bf16 | {r['loss_fp32']:.5f} / {r['loss_bf16']:.5f} |",
                  f"| loss relative error | {r['loss_relative_error']:.2e} |",
                  f"| gradient relative L2 error (all parameters) | {r['grad_relative_l2_error']:.2e} |",
                  f"| gradient cosine | {r['grad_cosine']:.6f} |",
                  f"| median / worst tensor relative error | {r['grad_median_tensor_relative_error']:.2e} / "
                  f"{r['grad_worst_tensor_relative_error']:.2e} ({r['grad_worst_tensor']}) |", "",
                  f"{r['model']}, batch {r['batch_size']}, temperature {r['temperature']}, "
                  f"{'trained' if r['trained_model'] else 'initial'} weights. [bf16-ntxent](results/evidence/bf16-ntxent.json)"]
    return "\n".join(lines).strip()


# -------------------------------------------------------------------------------------------- stages


def build_stages(seeds: tuple[int, ...] = SEEDS) -> list[Stage]:
    """Every stage and its parts (``seeds``: the seeds of stages c, d and e)."""
    ev = "results/evidence"
    stages = [
        Stage("a", "throughput", "Throughput: gsimclr against the lightly recipe (one process, one GPU)",
              "python scripts/evidence.py --stage a",
              [Part("a", "throughput-cuda-cifar", "benchmarks/results/throughput-cuda-cifar.json", 240, ("cifar10",),
                    run_throughput),
               Part("a", "throughput-cuda-r50", "benchmarks/results/throughput-cuda-r50.json", 150, ("imagenet5",),
                    run_throughput),
               Part("a", "datapath-cuda-224", "results/evidence/datapath-cuda-224.json", 200, ("imagenet5",),
                    run_datapath)],
              report_throughput),
        Stage("b", "tta", f"Time to accuracy: cifar10-resnet18 (batch {TTA_BATCH}, {TTA_EPOCHS} epochs, cosine), kNN "
                          f"every {TTA_MONITOR} epochs, beside the lightly recipe",
              "python scripts/evidence.py --stage b",
              [Part("b", "tta-gsimclr", f"{ev}/tta-gsimclr.json", 200, ("cifar10",), run_tta_gsimclr),
               Part("b", "tta-lightly", f"{ev}/tta-lightly.json", 420, ("cifar10",), run_tta_lightly)],
              report_tta),
    ]
    for key, dataset, paper, est in (("c", "cifar10", "cifar10", 300), ("d", "imagenet5", "imagenet5", 200)):
        presets = (f"paper-{dataset}", f"paper-{dataset}-clean")
        stages.append(Stage(
            key, f"paper-{dataset}", f"{' and '.join(presets)}: seeds {', '.join(map(str, seeds))} (SimCLR, G-SimCLR, "
            "supervised), mean ± sd beside the paper's single runs",
            f"python scripts/evidence.py --stage {key}",
            [Part(key, f"{p}-seed{s}", f"{ev}/{p}-seed{s}.json", est, (dataset,), run_preset_seed(p, dataset, s))
             for p in presets for s in seeds],
            report_presets(presets, paper)))
    stages.append(Stage(
        "e", "guidance", f"Guidance on CIFAR-10 with the strong recipe ({GUIDANCE_PRESET}, {GUIDANCE_EPOCHS} epochs): "
        "SimCLR against the guidance variants, kNN and linear P3",
        "python scripts/evidence.py --stage e",
        [Part("e", f"guidance-{v}-seed{s}", f"{ev}/guidance-{v}-seed{s}.json", 200, ("cifar10",), run_guidance(v, s))
         for v in GUIDANCE_VARIANTS for s in seeds],
        report_guidance))
    stages.append(Stage(
        "f", "checks", "torchrun --nproc_per_node=1 against a plain run; bf16 against fp32 NT-Xent on a real step",
        "python scripts/evidence.py --stage f",
        [Part("f", "ddp-equal", f"{ev}/ddp-equal.json", 200, ("cifar10",), run_ddp_equal),
         Part("f", "bf16-ntxent", f"{ev}/bf16-ntxent.json", 60, ("cifar10",), run_bf16_ntxent)],
        report_checks))
    return stages


def header(stage: Stage, payloads: list[dict]) -> str:
    """Provenance of a stage's table: every part's command, commit, device, versions and date."""
    lines = [f"# {stage.title}", ""]
    for p in payloads:
        v = p.get("versions", {})
        lines.append(f"- {p['part']}: {p['date']}, {p['device']}, commit {p.get('commit')}, torch {v.get('torch')}, "
                     f"torchvision {v.get('torchvision')}, lightly {v.get('lightly')}, {p['wall_s']:.0f} s: "
                     f"`{p['command']}`")
    return "\n".join(lines) + "\n\n"


# ---------------------------------------------------------------------------------------------- driver


def rel(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies inside it (commands stay readable and
    machine-independent), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def resolve_data(args) -> dict[str, str | None]:
    def first(*candidates):
        for c in candidates:
            if c and Path(c).exists():
                return rel(c)
        return None

    return {"cifar10": first(args.cifar10, ROOT / ".evidence" / "cifar10", ROOT.parent / "shared" / "data" / "cifar10"),
            "imagenet5": first(args.imagenet5, ROOT / ".evidence" / "imagenet5",
                               ROOT.parent / "shared" / "data" / "imagenet5")}


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


def estimate(ctx: Ctx, part: Part) -> float:
    """Seconds this part is expected to take: the longest measured run of its other seeds when one is
    committed (same device kind), else the planned H100 estimate."""
    if "-seed" not in part.name:
        return part.est_s
    stem = part.name.rsplit("-seed", 1)[0]
    folder = (ctx.root / part.path).parent
    measured = []
    for path in folder.glob(f"{stem}-seed*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            payload = json.loads(path.read_text())
            if payload["part"].rsplit("-seed", 1)[0] == stem and payload.get("smoke") == ctx.smoke:
                measured.append(float(payload["wall_s"]))
    return max(measured) if measured else part.est_s


def run_part(ctx: Ctx, part: Part) -> str:
    """Run one part if it is not done; returns its state word for the log."""
    if part.done(ctx):
        return "done"
    missing = [d for d in part.needs if not ctx.data.get(d)]
    if missing:
        reason = f"data {', '.join(missing)} not found (scripts/pack_for_device.py, or --{missing[0]})"
        log(f"{part.name}: skipped: {reason}")
        return f"skipped: {reason}"
    left = ctx.deadline - time.monotonic()
    expected = estimate(ctx, part)
    if not ctx.forced and expected > left:
        log(f"{part.name}: skipped: expected {expected:.0f} s, {max(left, 0):.0f} s left in --budget-s")
        return "skipped: no time left in --budget-s"
    log(f"{part.name}: running (expected {expected:.0f} s)")
    fresh_state()
    t0 = time.perf_counter()
    try:
        result = part.run(ctx, part)
    except Skip as exc:
        log(f"{part.name}: skipped: {exc}")
        return f"skipped: {exc}"
    except Exception as exc:  # one broken part must not stop the others
        traceback.print_exc()
        log(f"{part.name}: FAILED: {type(exc).__name__}: {exc}")
        return f"failed: {type(exc).__name__}: {exc}"
    wall = time.perf_counter() - t0
    if result is None:
        log(f"{part.name}: incomplete after {wall:.0f} s; run again (same machine) to resume")
        return "incomplete"
    seed = next((int(part.name.rsplit("-seed", 1)[1]) for _ in [0] if "-seed" in part.name), None)
    payload = {"stage": part.stage, "part": part.name, "seed": seed, "command": part.command, "commit": git_commit(),
               "device": device_name(ctx), "versions": versions(),
               "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "wall_s": round(wall, 1),
               "smoke": ctx.smoke, "result": result}
    write_json(ctx, ctx.root / part.path, payload)
    log(f"{part.name}: done in {wall:.0f} s -> {part.path}")
    return "done now"


RESULTS_INTRO = """# Results

Every number here comes from a JSON file under `results/evidence/` or `benchmarks/results/` (linked beside
it), written by `scripts/evidence.py` together with its command, git commit, device, versions and date.
This file is generated: `python scripts/evidence.py --report` rewrites it from those files. The README
quotes only what is here.

How a lent GPU session produces them: see "GPU evidence" in [benchmarks/README.md](benchmarks/README.md)
(`scripts/pack_for_device.py`, then one device command per data set; `make evidence` on any machine with
a GPU and the data). Tables with seeds give mean ± sample sd over the seeds present; the paper's numbers
are single runs (Tables 1 and 2 of arXiv 2009.12007).
"""


def paper_table(paper: str) -> str:
    from gsimclr.report import PAPER

    ref = PAPER[paper]
    rows = ["| top-1 % (paper, single run) | SimCLR | G-SimCLR |", "|---|---:|---:|"]
    for key, name in (("P1", "Linear P1"), ("P2", "Linear P2"), ("P3", "Linear P3"), ("finetune", "Fine-tune (10% labels)")):
        rows.append(f"| {name} | {ref['simclr'][key]} | {ref['gsimclr'][key]} |")
    rows.append(f"| Fully supervised | {ref['supervised']} | |")
    return "\n".join(rows)


def write_reports(ctx: Ctx, stages: list[Stage]) -> None:
    sections = [RESULTS_INTRO]
    any_gpu = False
    for stage in stages:
        payloads = [d for p in stage.parts if (d := p.load(ctx))]
        any_gpu = any_gpu or any("no GPU" not in d["device"] for d in payloads)
        body = stage.report(ctx, stage) if payloads else ""
        done = len(payloads)
        sections.append(f"## {stage.key}. {stage.title}\n")
        sections.append(f"Command: `{stage.command}`. Parts done: {done} of {len(stage.parts)}"
                        + (f" (missing: {', '.join(p.name for p in stage.parts if not p.done(ctx))})." if done < len(stage.parts) else ".")
                        + "\n")
        if body:
            text = header(stage, payloads) + body + "\n"
            if stage.key in ("a", "b", "e", "f"):
                write_text(ctx, ctx.root / "results" / "evidence" / f"{stage.name}.md", text)
            sections.append(text.split("\n", 2)[2] if text.startswith("# ") else text)
        else:
            sections.append("No GPU number exists yet for this table.\n")
        if stage.key in ("c", "d") and not body:
            sections.append("The paper's numbers for comparison:\n\n" + paper_table("cifar10" if stage.key == "c" else "imagenet5") + "\n")
    if not any_gpu:
        sections.insert(1, "**No GPU number exists yet**: no session has had a GPU since this was set up. The tables "
                           "below are empty until `scripts/evidence.py` runs on one.\n")
    write_text(ctx, ctx.root / "RESULTS.md", "\n".join(sections))


def list_stages(ctx: Ctx, stages: list[Stage]) -> None:
    for stage in stages:
        done = sum(p.done(ctx) for p in stage.parts)
        print(f"{stage.key}  {stage.name:16s} {done}/{len(stage.parts)} parts done  {stage.title}")
        for p in stage.parts:
            state = "done" if p.done(ctx) else ("no data" if any(not ctx.data.get(d) for d in p.needs) else "todo")
            print(f"     {p.name:34s} {state:8s} ~{estimate(ctx, p):4.0f} s  {p.path}")
    print(f"data: {json.dumps(ctx.data)}")


def export(ctx: Ctx, folder: Path) -> Path:
    """One tar of every file this call wrote (paths relative to the results root): a device call brings
    back at most 8 files, so everything travels as $OUT/evidence.tar."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "evidence.tar"
    tmp = folder / ".evidence.tar.tmp"
    with tarfile.open(tmp, "w") as tar:
        for path in dict.fromkeys(ctx.written):
            if path.exists():
                tar.add(path, arcname=str(Path(os.path.relpath(path, ctx.root))))
    os.replace(tmp, target)
    return target


def import_tar(path: Path, root: Path) -> list[str]:
    """Unpack a device call's evidence.tar into ``root``: only regular files under results/ or
    benchmarks/results/, and RESULTS.md."""
    names = []
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            name = member.name
            ok = member.isfile() and ".." not in Path(name).parts and not name.startswith("/") and (
                name == "RESULTS.md" or name.startswith(("results/", "benchmarks/results/")))
            if not ok:
                log(f"import: ignored {name}")
                continue
            dest = root / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
            names.append(name)
    return names


def make_smoke_data(folder: Path) -> dict[str, str]:
    """Tiny CIFAR-10-like and imagenet5-like data sets in the Hugging Face parquet layout (the same reader
    as the real data), made of shapes and colours that differ by class."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)

    def images(n, classes, size):
        rows = []
        for i in range(n):
            label = i % classes
            arr = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)
            arr[..., label % 3] += np.uint8(120 + 10 * label)
            h = size[1] // 2
            arr[h - 2 - label:h + 2 + label, :, (label + 1) % 3] = 255
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            rows.append((buf.getvalue(), label))
        return rows

    out = {}
    for name, classes, size, n_train, n_test in (("cifar10", 10, (32, 32), 160, 60), ("imagenet5", 5, (40, 30), 100, 40)):
        d = folder / name
        d.mkdir(parents=True, exist_ok=True)
        names = [f"class{i}" for i in range(classes)]
        for split, n in (("train", n_train), ("test", n_test)):
            rows = images(n, classes, size)
            write_parquet(d / f"{split}-00000-of-00001.parquet", [r[0] for r in rows], [r[1] for r in rows], names,
                          [f"{i}.png" for i in range(n)])
        out[name] = str(d)
    del pa, pq
    return out


def write_parquet(path: Path, blobs: list[bytes], labels: list[int], class_names: list[str], paths: list[str]) -> None:
    """A Hugging Face ``datasets`` parquet file: ``image`` {bytes, path} and a ClassLabel ``label``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "image": pa.array([{"bytes": b, "path": p} for b, p in zip(blobs, paths)],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "label": pa.array(labels, pa.int64()),
    })
    features = {"image": {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": class_names}}
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--list", action="store_true", help="show stages, parts and their state, then stop")
    parser.add_argument("--stage", nargs="+", help="stage keys (a-f), names or part names to run (default: all)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="run only the parts that fit in this many seconds (by their H100 estimates)")
    parser.add_argument("--smoke", action="store_true",
                        help="every stage at tiny sizes on the CPU, into a temporary folder (never results/)")
    parser.add_argument("--out-root", help="where results go (default: this checkout; --smoke: a temporary folder)")
    parser.add_argument("--cifar10", help="CIFAR-10 parquet folder (default: .evidence/cifar10, ../shared/data/cifar10)")
    parser.add_argument("--imagenet5", help="ImageNet subset (default: .evidence/imagenet5, ../shared/data/imagenet5)")
    parser.add_argument("--export", help="also write the files of this call into EXPORT/evidence.tar ($OUT on the device)")
    parser.add_argument("--import", dest="import_tar", help="unpack a device call's evidence.tar into this checkout")
    parser.add_argument("--report", action="store_true", help="rewrite the tables and RESULTS.md, run nothing")
    args = parser.parse_args(argv)
    for name in ("cifar10", "imagenet5", "out_root", "export", "import_tar"):  # before any chdir
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))

    if args.import_tar:
        names = import_tar(Path(args.import_tar), Path(args.out_root or ROOT))
        print("\n".join(names))
        return 0
    if args.smoke:
        root = Path(args.out_root or tempfile.mkdtemp(prefix="gsimclr-evidence-smoke-"))
        if root.resolve() == ROOT.resolve() or (root / "src" / "gsimclr").exists():
            parser.error("--smoke must not write into a checkout: give --out-root a scratch folder")
        data = make_smoke_data(root / "data")
        import torch

        torch.set_num_threads(1)  # tiny tensors: one thread; 2 threads on a shared 2-core machine ran 10x slower
        ctx = Ctx(root=root, runs=root / "runs", data=data, smoke=True, device="cpu")
    else:
        os.chdir(ROOT)  # commands and paths in the JSON read relative to the checkout
        root = Path(rel(args.out_root or ROOT))
        ctx = Ctx(root=root, runs=root / "runs" / "evidence", data=resolve_data(args))
    stages = build_stages(SMOKE_SEEDS if args.smoke else SEEDS)
    if args.list:
        list_stages(ctx, stages)
        return 0
    if args.report:
        write_reports(ctx, stages)
        print(f"wrote {ctx.root / 'RESULTS.md'}")
        return 0

    if not args.smoke:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA GPU here: the evidence stages measure on a GPU (--smoke runs them at tiny sizes "
                         "on the CPU; --list and --report need none)")
    selected = [p for s in stages for p in s.parts]
    if args.stage:
        wanted = set(args.stage)
        known = {s.key for s in stages} | {s.name for s in stages} | {p.name for p in selected}
        unknown = wanted - known
        if unknown:
            parser.error(f"unknown stage or part {', '.join(sorted(unknown))}; see --list")
        selected = [p for s in stages for p in s.parts if wanted & {s.key, s.name, p.name}]
        ctx.forced = args.budget_s is None
    if args.budget_s is not None:
        ctx.deadline = time.monotonic() + args.budget_s
    log(f"results root {ctx.root}; data {json.dumps(ctx.data)}; commit {git_commit()}")
    states = {}
    started = time.perf_counter()
    for part in selected:
        states[part.name] = run_part(ctx, part)
        if args.export and ctx.written:  # after every part: a call cut at its time limit keeps what it made
            export(ctx, Path(args.export))
    write_reports(ctx, stages)
    if args.export:
        target = export(ctx, Path(args.export))
        log(f"exported {len(set(ctx.written))} files to {target}")
    summary = ", ".join(f"{k}: {v}" for k, v in states.items())
    log(f"finished in {time.perf_counter() - started:.0f} s; {summary}")
    if args.smoke:
        print(json.dumps({"root": str(ctx.root), "states": states}))
    return 1 if any(v.startswith("failed") for v in states.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
