#!/usr/bin/env python
"""Accuracy parity: does the fast augmentation path lose accuracy against the torchvision reference?

For each seed, SimCLR is pretrained twice by the trainer users run (``build_pretrainer(cfg, ...)``, its
epochs run by ``Pretrainer.train_epoch`` and its ``step``: same model initialisation, same
``RandomBatchSampler``, same optimizer and learning-rate schedule, same per-epoch seeding of the global
random stream), which differ only in how the two views of a batch are produced:

* **fast**: the trainer's own views (``gsimclr.training.pretrain.make_views_fn(cfg, device)``), the
  batched augmentation with per-sample parameters on the device (compiled on CUDA);
* **reference**: ``torchvision.transforms.v2`` applied image by image on uint8 CHW tensors (on the CPU,
  as a DataLoader would) and stacked into a batch: ``RandomResizedCrop(size, scale, ratio,
  antialias=True)``, ``RandomHorizontalFlip(flip_p)``, ``RandomApply([ColorJitter(0.8 s, 0.8 s, 0.8 s,
  0.2 s)], jitter_p)``, ``RandomGrayscale(gray_p)``, (``RandomApply([GaussianBlur], blur_p)`` when the
  config blurs), ``ToDtype(float32, scale=True)``, ``Normalize(mean, std)``; every setting is read from
  the config's :class:`gsimclr.transforms.augment.Augment`.

After training, the weighted kNN top-1 accuracy on the test split (``monitor_knn``, k and temperature
from the config) is measured for both. Per path: per-seed accuracy, mean and sample standard deviation;
the difference of the means is "within noise" when |mean_fast - mean_ref| <= 2 * SE, where
SE = s_pooled * sqrt(2 / n) is the standard error of a difference of two means of n seeds each and
s_pooled = sqrt((s_fast^2 + s_ref^2) / 2). The seeds pair the runs (same initialisation, same batches),
so the paired differences are reported as well. Wall time: the training loop of each run (and, on a CPU,
the part of it spent producing views); the kNN evaluation is not included.

Usage:
    python benchmarks/accuracy_parity.py                         # digits-quick, seeds 0 1 2, CPU
    python benchmarks/accuracy_parity.py --seeds 0 1 2 3 4 --epochs 5
    python benchmarks/accuracy_parity.py --preset digits-quick --device cuda

Writes ``OUT/accuracy-parity-<cpu|cuda>.json`` and ``.md`` (atomically) and prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torchvision.transforms import v2

from gsimclr import __version__
from gsimclr.config import load_config
from gsimclr.io import write_json, write_text
from gsimclr.pipeline import load_data
from gsimclr.runtime import resolve_device
from gsimclr.training.pretrain import build_pretrain_augment, build_pretrainer, monitor_knn

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("fast", "reference")


def reference_views_fn(cfg, device: torch.device):
    """Two views (2, N, 3, S, S) of a uint8 batch (N, H, W, 3) with torchvision.transforms.v2, one
    image at a time on the CPU, moved to ``device``. Randomness: torch's global stream, as the fast path."""
    aug = build_pretrain_augment(cfg)
    s = aug.jitter_strength
    ops = [v2.RandomResizedCrop(aug.size, scale=aug.scale, ratio=aug.ratio, antialias=True) if aug.crop
           else v2.Resize((aug.size, aug.size), antialias=True),
           v2.RandomHorizontalFlip(aug.flip_p)]
    if aug.jitter_p > 0 and s > 0:
        ops.append(v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=aug.jitter_p))
    if aug.gray_p > 0:
        ops.append(v2.RandomGrayscale(aug.gray_p))
    if aug.blur_p > 0:
        ops.append(v2.RandomApply([v2.GaussianBlur(aug.kernel_size, sigma=aug.blur_sigma)], p=aug.blur_p))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(aug.mean), list(aug.std))]
    transform = v2.Compose(ops)

    def views(batch: torch.Tensor) -> torch.Tensor:
        chw = batch.cpu().permute(0, 3, 1, 2)
        return torch.stack([torch.stack([transform(img) for img in chw]) for _ in range(2)]).to(device)

    return views


def train(cfg, data, views_fn, device: torch.device) -> dict:
    """The trainer users run, built by ``build_pretrainer`` (single process, no checkpoint; its logs go to a
    temporary folder), epoch by epoch; ``views_fn`` replaces its views (None: its own, the fast path)."""
    with tempfile.TemporaryDirectory(prefix="gsimclr-parity-") as log_dir:
        trainer = build_pretrainer(cfg, data, log_dir, device, method="simclr")
        make, view_s = views_fn or trainer.views.make, [0.0]

        def timed_views(batch: torch.Tensor) -> torch.Tensor:
            t = time.perf_counter()
            views = make(batch)
            view_s[0] += time.perf_counter() - t  # exact on a CPU; on CUDA only the launch time of the fast path
            return views

        trainer.views.make = timed_views
        t0 = time.perf_counter()
        losses = [trainer.train_epoch(epoch)["loss"] for epoch in range(cfg.epochs)]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_s = time.perf_counter() - t0
        trainer.log.close()
    return {"model": trainer.model, "train_s": train_s, "views_s": view_s[0] if device.type == "cpu" else None,
            "losses": losses}


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else float("nan"))


def summarise(runs: list[dict]) -> dict:
    n = len(runs)
    acc = {p: [r[p]["knn"] for r in runs] for p in PATHS}
    stats = {p: dict(zip(("mean", "sd"), mean_sd(acc[p]))) for p in PATHS}
    diff = stats["fast"]["mean"] - stats["reference"]["mean"]
    pooled = math.sqrt((stats["fast"]["sd"] ** 2 + stats["reference"]["sd"] ** 2) / 2)
    se = pooled * math.sqrt(2 / n)
    paired = [a - b for a, b in zip(acc["fast"], acc["reference"])]
    paired_mean, paired_sd = mean_sd(paired)
    return {"n_seeds": n, "knn": acc, **{f"{p}_{k}": v for p in PATHS for k, v in stats[p].items()},
            "diff_of_means": diff, "pooled_sd": pooled, "se_diff": se, "threshold": 2 * se,
            "within_noise": bool(abs(diff) <= 2 * se) if n > 1 else None,
            "rule": "within noise if |mean_fast - mean_ref| <= 2 * SE, SE = s_pooled * sqrt(2 / n), "
                    "s_pooled = sqrt((s_fast^2 + s_ref^2) / 2), s = sample std over seeds",
            "paired_diffs": paired, "paired_mean": paired_mean, "paired_sd": paired_sd,
            "train_s": {p: sum(r[p]["train_s"] for r in runs) for p in PATHS},
            "views_s": {p: (sum(r[p]["views_s"] for r in runs) if runs[0][p]["views_s"] is not None else None)
                        for p in PATHS}}


def markdown(result: dict) -> str:
    cfg, s, env = result["config"], result["summary"], result["environment"]
    lines = [f"# Accuracy parity: fast vs reference augmentation ({env['device']})", "",
             f"Preset `{result['preset']}`: {cfg['data']} at {cfg['image_size']} px, `{cfg['model']}` n_blocks "
             f"{cfg['n_blocks']}, {cfg['optimizer']} lr {cfg['lr']}, batch {cfg['batch_size']}, {cfg['epochs']} epochs, "
             f"crop scale ({cfg['crop_scale_min']}, 1), jitter {cfg['jitter_strength']}, temperature "
             f"{cfg['temperature']}; weighted kNN top-1 on the test split (k {cfg['knn_k']}, T {cfg['knn_temperature']}, "
             f"{result['test_images']} images, so one image is {100 / result['test_images']:.2f} points).", "",
             "| seed | fast kNN % | reference kNN % | fast - ref | fast final loss | ref final loss "
             "| fast train s | ref train s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["runs"]:
        f, ref = r["fast"], r["reference"]
        lines.append(f"| {r['seed']} | {f['knn']:.2f} | {ref['knn']:.2f} | {f['knn'] - ref['knn']:+.2f} | "
                     f"{f['losses'][-1]:.4f} | {ref['losses'][-1]:.4f} | {f['train_s']:.1f} | {ref['train_s']:.1f} |")
    lines += ["", f"- fast: {s['fast_mean']:.2f} ± {s['fast_sd']:.2f} (mean ± sample std over {s['n_seeds']} seeds)",
              f"- reference: {s['reference_mean']:.2f} ± {s['reference_sd']:.2f}",
              f"- difference of means (fast - reference): {s['diff_of_means']:+.2f} points; 2 * SE = "
              f"{s['threshold']:.2f} -> **{'within noise' if s['within_noise'] else 'NOT within noise'}**",
              f"- paired differences per seed: {', '.join(f'{d:+.2f}' for d in s['paired_diffs'])} "
              f"(mean {s['paired_mean']:+.2f}, sd {s['paired_sd']:.2f})",
              f"- rule: {s['rule']}",
              f"- training wall time, all seeds: fast {s['train_s']['fast']:.1f} s, reference "
              f"{s['train_s']['reference']:.1f} s"
              + (f" (of which producing views: {s['views_s']['fast']:.1f} s vs {s['views_s']['reference']:.1f} s)"
                 if s["views_s"]["fast"] is not None else ""),
              "",
              f"Seeds {result['seeds']}; {env['date']}; {env['cpu']}, {env['threads']} torch threads; torch "
              f"{env['torch']}, torchvision {env['torchvision']}, gsimclr {env['gsimclr']}; total {result['total_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="digits-quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)

    started, t_start = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    base = load_config(args.preset, {"epochs": args.epochs, "device": args.device})
    device = resolve_device(base.device)
    train_data, test_data = load_data(base)
    runs = []
    for seed in args.seeds:
        cfg = load_config(args.preset, {"epochs": args.epochs, "device": args.device, "seed": seed})
        run = {"seed": seed}
        for path, make in (("fast", None), ("reference", reference_views_fn)):
            out = train(cfg, train_data, make and make(cfg, device), device)
            out["knn"] = monitor_knn(cfg, out.pop("model"), train_data, test_data, device)
            run[path] = out
            print(f"seed {seed} {path:9s}: kNN {out['knn']:.2f}%  final loss {out['losses'][-1]:.4f}  "
                  f"train {out['train_s']:.1f} s", flush=True)
        runs.append(run)

    env = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "device": device.type,
           "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "threads": torch.get_num_threads(), "loadavg_start": load_start, "torch": torch.__version__,
           "torchvision": torchvision.__version__, "gsimclr": __version__, "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            env["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        env["loadavg_end"] = os.getloadavg()
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    result = {"preset": args.preset, "seeds": args.seeds, "config": base.to_dict(),
              "train_images": len(train_data), "test_images": len(test_data), "runs": runs,
              "summary": summarise(runs), "environment": env, "total_s": time.perf_counter() - t_start}
    out = Path(args.out)
    write_json(out / f"accuracy-parity-{device.type}.json", result)
    text = markdown(result)
    write_text(out / f"accuracy-parity-{device.type}.md", text)
    print("\n" + text)
    return result


if __name__ == "__main__":
    main()
