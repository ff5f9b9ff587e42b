"""Stage b: time to kNN accuracy on CIFAR-10, gsimclr's ``cifar10-resnet18`` against the lightly recipe
(same model, optimizer, schedule and kNN monitor).

Every time-to-accuracy number comes twice: with the warm-up (torch.compile's graphs, DataLoader workers
starting) and without it. The warm-up of a call is its first epoch's excess over the median of the other
epochs; a part resumed in several calls pays it once per call (:func:`warmup_split`)."""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from evidence_runner.context import SMOKE_OPTIONS, Ctx, Part, Skip, Stage, have_lightly, log, read_jsonl, run_gsimclr

TTA_EPOCHS, TTA_BATCH, TTA_MONITOR = 60, 512, 5
CALLS = "calls.json"   # in a part's state folder, beside its run folder: the epoch at which each call started


def tta_options(ctx: Ctx) -> dict[str, Any]:
    opts = {"epochs": TTA_EPOCHS, "batch_size": TTA_BATCH, "schedule": "cosine", "monitor_every": TTA_MONITOR,
            "checkpoint_every": TTA_MONITOR}
    if ctx.smoke:
        opts.update(epochs=SMOKE_TTA_EPOCHS, batch_size=16, monitor_every=1, checkpoint_every=1)
    return opts


SMOKE_TTA_EPOCHS = 4   # enough epochs (a checkpoint each) for the lease simulation to cut one in the middle


def note_call_start(folder: Path, epoch: int) -> list[int]:
    """Record that a call starts training at ``epoch`` (0-based epochs done); returns every call's start."""
    from gsimclr.io import write_json

    path = folder / CALLS
    calls = json.loads(path.read_text()) if path.exists() else []
    calls = [c for c in calls if c < epoch] + [epoch]  # a restart from an earlier checkpoint forgets later calls
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, calls)
    return calls


def warmup_split(epochs: list[dict], calls: list[int]) -> dict[int, float]:
    """Warm-up seconds by epoch (1-based): each call's first epoch minus the median of the epochs that were
    not first in their call (0 when no such epoch exists: a one-epoch call is all warm-up or none, unknown)."""
    firsts = {c + 1 for c in calls} | {1}
    steady = [e["epoch_s"] for e in epochs if e["epoch"] not in firsts]
    if not steady:
        return {}
    typical = statistics.median(steady)
    return {e["epoch"]: max(0.0, e["epoch_s"] - typical) for e in epochs if e["epoch"] in firsts}


def tta_result(pipeline: str, epochs: int, records: list[dict], curve: list[dict], calls: list[int],
               images_per_s: float, **extra) -> dict:
    """The part's result: the kNN curve against training time with and without the warm-up."""
    warm = warmup_split(records, calls)
    total = sum(r["epoch_s"] for r in records)
    points = []
    for c in curve:
        w = sum(v for e, v in warm.items() if e <= c["epoch"])
        points.append({**c, "warmup_s": round(w, 2), "train_s_without_warmup": round(c["train_s"] - w, 2)})
    warmup = sum(warm.values())
    return {"pipeline": pipeline, "epochs": epochs, "curve": points, "final_knn": points[-1]["knn"] if points else None,
            "train_s": round(total, 2), "warmup_s": round(warmup, 2), "train_s_without_warmup": round(total - warmup, 2),
            "calls": len(calls), "losses": [r.get("loss") for r in records], "images_per_s_median": images_per_s,
            **extra}


def run_tta_gsimclr(ctx: Ctx, part: Part) -> dict | None:
    state = ctx.runs / "tta-gsimclr"
    out = state / "run"
    resume = ["--resume"] if (out / "simclr").exists() else []
    from gsimclr.checkpoint import read_meta

    ckpt = out / "simclr" / "checkpoint.safetensors"
    note_call_start(state, int(read_meta(ckpt).get("epoch", 0)) if ckpt.exists() else 0)
    argv = ["pretrain", "--preset", "cifar10-resnet18", "--data", ctx.data["cifar10"], "--out", str(out),
            "--method", "simclr", *ctx.options("pretrain", tta_options(ctx)), *resume,
            "--max-minutes", f"{ctx.minutes_left():.2f}"]
    part.command = run_gsimclr(ctx, argv)
    return gsimclr_progress(ctx, part, final=True)


def gsimclr_progress(ctx: Ctx, part: Part, final: bool = False) -> dict | None:
    state = ctx.runs / "tta-gsimclr"
    records = read_jsonl(state / "run" / "simclr" / "metrics.jsonl")
    calls = json.loads((state / CALLS).read_text()) if (state / CALLS).exists() else [0]
    epochs = tta_options(ctx)["epochs"]
    if not records:
        return None
    curve = [{"epoch": r["epoch"], "train_s": r["train_s"], "knn": r["knn"]} for r in records if "knn" in r]
    result = tta_result("gsimclr", epochs, records, curve, calls,
                        statistics.median(r["images_per_s"] for r in records))
    if final and records[-1]["epoch"] < epochs:
        return None
    return result if final else {**result, "fraction": records[-1]["epoch"] / epochs}


def lightly_progress(ctx: Ctx, part: Part) -> dict | None:
    path = ctx.runs / "tta-lightly" / "progress.json"
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    return {**state, "fraction": state["epoch"] / tta_options(ctx)["epochs"]}


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
    state = {"epoch": 0, "train_s": 0.0, "curve": [], "images_per_s": [], "epochs": []}
    if state_path.exists():
        saved = torch.load(state_path, map_location=device, weights_only=False)
        pipe.model.load_state_dict(saved["model"])
        pipe.optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        state.setdefault("epochs", [])
    calls = note_call_start(out, state["epoch"])

    def save() -> None:
        from gsimclr.io import atomic_path

        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(state_path) as tmp:
            torch.save({"model": pipe.model.state_dict(), "optimizer": pipe.optimizer.state_dict(), "state": state}, tmp)
        from gsimclr.io import write_json as atomic_json

        atomic_json(out / "progress.json", {k: v for k, v in state.items()})
    loader = torch.utils.data.DataLoader(
        pipe.dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=False, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed + state["epoch"]))
    part.command = (f"python scripts/evidence.py --stage {part.name}  (lightly recipe: preset cifar10-resnet18, "
                    f"batch {cfg.batch_size}, {cfg.epochs} epochs, {cfg.schedule}, kNN every {cfg.monitor_every}, "
                    f"{workers} DataLoader workers)")
    started, limit_s = time.perf_counter(), ctx.minutes_left() * 60
    if not math.isfinite(ctx.deadline) and ctx.smoke:
        limit_s = math.inf
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
        state["epochs"].append({"epoch": epoch + 1, "epoch_s": epoch_s, "loss": float(pipe.total)})
        state["epoch"] = epoch + 1
        if state["epoch"] % cfg.monitor_every == 0 or state["epoch"] == cfg.epochs:
            knn = monitor_knn(cfg, pipe.model, train, test, device)
            state["curve"].append({"epoch": state["epoch"], "train_s": state["train_s"], "knn": knn})
            log(f"lightly epoch {state['epoch']}/{cfg.epochs}: kNN {knn:.2f}% at {state['train_s']:.0f} s")
            save()  # after every kNN check: a cut loses at most the epochs since
        if state["epoch"] < cfg.epochs and time.perf_counter() - started + epoch_s > limit_s:
            save()
            log(f"lightly: stopped at epoch {state['epoch']}/{cfg.epochs}; run again to resume")
            return None
    return tta_result("lightly", cfg.epochs, state["epochs"], state["curve"], calls,
                      float(np.median(state["images_per_s"])), workers=workers)


def report_tta(ctx: Ctx, stage: Stage) -> str:
    data = {p.name: p.load(ctx) for p in stage.parts}
    done = {k: v["result"] for k, v in data.items() if v}
    if not done:
        return ""
    from gsimclr.plots import plot_curves

    names = {"tta-gsimclr": "gsimclr", "tta-lightly": "lightly recipe"}
    curves = {names[k]: ([c.get("train_s_without_warmup", c["train_s"]) for c in r["curve"]], [c["knn"] for c in r["curve"]])
              for k, r in done.items()}
    png = ctx.root / "results" / "evidence" / "tta.png"
    plot_curves(curves, png, "kNN top-1 %", "CIFAR-10, ResNet-18: kNN against training time",
                xlabel="training time (s; kNN checks and warm-up excluded)",
                context="run evidence stage b · data cifar10 · SimCLR, gsimclr vs the lightly recipe")
    ctx.written.append(png)
    rows = ["| pipeline | epochs | training time (s) with warm-up | without warm-up | warm-up (s, calls) | "
            "images/s (median epoch) | final kNN % | kNN % by epoch | JSON |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for key, r in done.items():
        path = next(p.path for p in stage.parts if p.name == key)
        by_epoch = ", ".join(f"{c['epoch']}: {c['knn']:.1f}" for c in r["curve"])
        rows.append(f"| {names[key]} | {r['epochs']} | {r['train_s']:.0f} | {r.get('train_s_without_warmup', r['train_s']):.0f} | "
                    f"{r.get('warmup_s', 0):.0f} ({r.get('calls', 1)}) | {r['images_per_s_median']:.0f} | "
                    f"{r['final_knn']:.2f} | {by_epoch} | [{key}]({path}) |")
    devices = {v["device"] for v in data.values() if v}
    note = "" if len(devices) <= 1 else f"\n\nNote: the parts ran on different devices ({', '.join(sorted(devices))})."
    return "\n".join(rows) + f"\n\n![kNN against training time](results/evidence/tta.png){note}"


