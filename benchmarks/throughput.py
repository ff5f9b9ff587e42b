#!/usr/bin/env python
"""Pretraining throughput, side by side: gsimclr's pipeline vs the lightly recipe, in one process.

gsimclr: the trainer users run, built by ``gsimclr.training.pretrain.build_pretrainer(cfg, ...)`` and
timed through its ``Pretrainer.step`` (its two parts, ``views.make`` and ``step_on_views``, apart in
the breakdown) -- the uint8 dataset placed by ``place_images``, batches from ``RandomBatchSampler``,
two views from ``make_views_fn(cfg)`` (compiled on a GPU) run on the device, the method's loss (one
forward over both views, NT-Xent) through ``maybe_compile`` and ``gsimclr.runtime.autocast``,
channels_last model, SGD step.

lightly: lightly's ``SimCLRTransform`` (as lightly's CIFAR-10 benchmark: crop scale, jitter strength
and blur matched to the gsimclr config) on PIL images in a ``torch.utils.data.DataLoader`` with N
worker processes, lightly's ``NTXentLoss``, the same backbone and projection head (the same
``SimCLRModel`` class, same seed) run eagerly, one forward per view as lightly's examples do,
the same SGD optimizer and the same precision.

Images/s counts images, not views (two views of one image are one image). Each pipeline gets warm-up
steps, then timed windows of steps, interleaved between the two pipelines (so that load from other
processes on a shared machine hits both alike); the reported rate is the median over the windows.
lightly's DataLoader iterator is opened for each window; with N > 0 workers its first N steps run
untimed (worker start-up and the first burst of batches), so the clock starts on a steady pipeline;
with 0 workers every transform is timed. The iterator is closed after the window, so idle workers
cannot prefetch (and steal CPU) during the other pipeline's window. Its sampler spans epochs, so a
window never restarts the workers (as ``persistent_workers=True``).

Also measured: the matmul rate (bf16 on a GPU, fp32 on a CPU; best of a few windows), FLOPs per image
(``torch.utils.flop_counter.FlopCounterMode`` on one forward + backward of both views), each
pipeline's fraction of the matmul rate, peak GPU memory, and a per-component breakdown (augmentation
vs model step).

Usage:
    python benchmarks/throughput.py                       # auto device, default configs
    python benchmarks/throughput.py --device cpu --steps 6
    python benchmarks/throughput.py --device cuda --configs r18-cifar-b512 r50-in5-b128

Writes ``OUT/throughput-<device>.json`` and ``OUT/throughput-<device>.md`` (atomically) and prints
the table. Needs the ``bench`` extra (``pip install -e '.[bench]'``, i.e. lightly).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

# Each config: a gsimclr preset plus overrides; ``subset`` limits the training images (None: all).
CIFAR10 = "../shared/data/cifar10"  # the presets name torchvision's cifar10; the benchmark reads the shared copy
CONFIGS: dict[str, dict] = {
    # CPU: the paper's CIFAR ResNet (n_blocks 0: 3 bottleneck blocks) with the paper's head, SimCLR
    # augmentations with lightly's CIFAR-10 settings (crop scale 0.08, jitter 0.5, no blur), fp32.
    "paper0-cifar-b128": {"device": "cpu", "preset": "cifar10-resnet18", "subset": 4096, "overrides": {
        "data": CIFAR10, "model": "paper_resnet", "n_blocks": 0, "head_dims": [256, 128, 50],
        "head_batch_norm": False, "batch_size": 128}},
    "paper0-cifar-b256": {"device": "cpu", "preset": "cifar10-resnet18", "subset": 4096, "overrides": {
        "data": CIFAR10, "model": "paper_resnet", "n_blocks": 0, "head_dims": [256, 128, 50],
        "head_batch_norm": False, "batch_size": 256}},
    # GPU: ResNet-18 with a CIFAR stem and the 2048-128 BN head (preset cifar10-resnet18), bf16.
    "r18-cifar-b512": {"device": "cuda", "preset": "cifar10-resnet18", "subset": None,
                       "overrides": {"data": CIFAR10, "batch_size": 512}},
    "r18-cifar-b1024": {"device": "cuda", "preset": "cifar10-resnet18", "subset": None,
                        "overrides": {"data": CIFAR10, "batch_size": 1024}},
    # GPU: ResNet-50 at 224 px on the ImageNet subset (SimCLR augmentations with blur), bf16.
    "r50-in5-b128": {"device": "cuda", "preset": "cifar10-resnet18", "subset": None, "overrides": {
        "model": "resnet50", "data": "../shared/data/imagenet5", "image_size": 224, "cache_size": 224,
        "batch_size": 128}},
}
DEFAULTS = {  # per device type: timed steps per pipeline, windows, warm-up steps
    "cpu": {"steps": 6, "windows": 6, "warmup": 1, "breakdown_reps": 1},
    "cuda": {"steps": 100, "windows": 5, "warmup": 10, "breakdown_reps": 3},
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor) or t.device.type != "cuda":
            continue
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total += key[1]
    return total


def resident_tensors(model, optimizer):
    yield from model.parameters()
    yield from model.buffers()
    for p in model.parameters():
        yield p.grad
    for state in optimizer.state.values():
        yield from (v for v in state.values() if isinstance(v, torch.Tensor))


# ----------------------------------------------------------------------------------- pipelines


class Pipeline:
    """One training pipeline: ``window(steps)`` runs that many steps and returns the seconds taken."""

    name = ""

    def __init__(self, cfg, device: torch.device):
        self.cfg, self.device = cfg, device
        self.batch_size = cfg.batch_size
        self.peak_bytes = 0

    def resident_bytes(self) -> int:
        return tensor_bytes(resident_tensors(self.model, self.optimizer))

    @contextlib.contextmanager
    def track_memory(self):
        """Peak memory of this pipeline alone: the window's peak above what was allocated at its
        start (both pipelines' state), plus this pipeline's own resident state."""
        if self.device.type != "cuda":
            yield
            return
        sync(self.device)
        base = torch.cuda.memory_allocated(self.device)
        own = self.resident_bytes()
        torch.cuda.reset_peak_memory_stats(self.device)
        yield
        sync(self.device)
        self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated(self.device) - base + own)


class GsimclrPipeline(Pipeline):
    name = "gsimclr"

    def __init__(self, cfg, device, images: np.ndarray):
        super().__init__(cfg, device)
        import dataclasses
        import tempfile

        from gsimclr.data.dataset import ImageData
        from gsimclr.runtime import seed_epoch
        from gsimclr.training.pretrain import build_pretrainer

        self._seed_epoch = seed_epoch
        # The trainer users run, built by build_pretrainer from the config, timed through its public step();
        # drop_last: every step has the configured batch (pretrain keeps a short tail batch per epoch).
        cfg = self.cfg = dataclasses.replace(cfg, drop_last=True)
        self._log_dir = tempfile.TemporaryDirectory(prefix="gsimclr-throughput-")
        self.trainer = build_pretrainer(cfg, ImageData(images, name="throughput"), self._log_dir.name, device,
                                        method="simclr")
        self.trainer.train_model.train()
        self.model, self.optimizer = self.trainer.model, self.trainer.optimizer
        self.images = self.trainer.views.images
        self.loss_fn = self.trainer.loss_fn
        self.eager_loss = getattr(self.loss_fn, "fn", self.loss_fn)  # the uncompiled loss (FLOP counting)
        self.compiled = self.loss_fn is not self.eager_loss  # updated after the warm-up (a failed compile runs eagerly)
        self._batches = self._iterate()
        self.total = torch.zeros((), device=device)

    def resident_bytes(self) -> int:
        return super().resident_bytes() + tensor_bytes([self.images])

    def _iterate(self):
        epoch = 0
        while True:
            self.trainer.sampler.set_epoch(epoch)
            self._seed_epoch(self.cfg.seed, epoch)
            for _, batch in self.trainer.batches(epoch):
                yield batch
            epoch += 1

    # Pretrainer.step() = views + model step; the breakdown times the feed and the two parts apart.
    def feed(self):
        return next(self._batches)

    def views(self, batch):
        return self.trainer.views.make(batch)

    def train_step(self, views):
        self.total += self.trainer.step_on_views(views) * views.shape[1]

    def step(self):
        batch = self.feed()
        self.total += self.trainer.step(batch) * batch.shape[0]

    def window(self, steps: int) -> float:
        with self.track_memory():
            sync(self.device)
            t0 = time.perf_counter()
            for _ in range(steps):
                self.step()
            sync(self.device)
            elapsed = time.perf_counter() - t0
        if not math.isfinite(float(self.total)):
            raise RuntimeError("gsimclr loss is not finite")
        return elapsed

    def breakdown(self, reps: int) -> dict:
        """Seconds per batch of each part, run separately (synchronised between parts)."""
        parts = {"feed": [], "augment": [], "augment_1thread": [], "model_step": []}
        for _ in range(reps):
            sync(self.device)
            t0 = time.perf_counter()
            batch = self.feed()
            sync(self.device)
            t1 = time.perf_counter()
            views = self.views(batch)
            sync(self.device)
            t2 = time.perf_counter()
            self.train_step(views)
            sync(self.device)
            t3 = time.perf_counter()
            if self.device.type == "cpu":  # the same augmentation with one intra-op thread
                with torch_threads(1):
                    t4 = time.perf_counter()
                    self.views(batch)
                    parts["augment_1thread"].append(time.perf_counter() - t4)
            parts["feed"].append(t1 - t0)
            parts["augment"].append(t2 - t1)
            parts["model_step"].append(t3 - t2)
        return {k: statistics.median(v) for k, v in parts.items() if v}


class _PILDataset(torch.utils.data.Dataset):
    """uint8 (N, H, W, 3) images served as PIL images through a transform, as torchvision's CIFAR10."""

    def __init__(self, images: np.ndarray, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), 0


class LightlyPipeline(Pipeline):
    name = "lightly"

    def __init__(self, cfg, device, images: np.ndarray, workers: int):
        super().__init__(cfg, device)
        from lightly.loss import NTXentLoss
        from lightly.transforms import SimCLRTransform

        from gsimclr.training.optim import build_optimizer
        from gsimclr.training.pretrain import build_model

        self.workers = workers
        # lightly's CIFAR-10 benchmark: SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0);
        # here crop scale, jitter strength and blur follow the gsimclr config (blur only from 96 px).
        self.transform = SimCLRTransform(
            input_size=cfg.image_size, cj_strength=cfg.jitter_strength, min_scale=cfg.crop_scale_min,
            gaussian_blur=0.5 if cfg.image_size >= 96 else 0.0)
        self.dataset = _PILDataset(images, self.transform)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg).to(device)  # same architecture and initialisation, default layout, eager
        self.model.train()
        self.optimizer = build_optimizer(cfg.optimizer, self.model, cfg.lr, cfg.momentum, cfg.weight_decay)
        self.criterion = NTXentLoss(temperature=cfg.temperature)
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
        self.total = torch.zeros((), device=device)

    def loader(self, batches: int):
        """A DataLoader over ``batches`` shuffled batches (spanning epochs when needed: its workers
        then run on across epoch boundaries, as with ``persistent_workers``)."""
        sampler = torch.utils.data.RandomSampler(self.dataset, num_samples=self.batch_size * batches)
        return torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True,
            num_workers=self.workers, pin_memory=self.device.type == "cuda")

    def _amp(self):
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, x0, x1):
        x0 = x0.to(self.device, non_blocking=True)
        x1 = x1.to(self.device, non_blocking=True)
        with self._amp():
            z0 = self.model(x0)
            z1 = self.model(x1)
            loss = self.criterion(z0, z1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.total += loss.detach() * x0.shape[0]

    def window(self, steps: int) -> float:
        """A fresh DataLoader iterator per window; with workers, its first ``workers`` steps run
        untimed (the first batch waits for the worker start-up, and the next ones, started in the same
        burst, would arrive for free), so the clock starts on a full, steady pipeline. Without workers
        every transform runs inside the timed steps. The iterator is closed after the window, so idle
        workers cannot prefetch during the other pipeline's window."""
        skip = self.workers  # 0 workers: no prefetching, nothing to skip
        it = iter(self.loader(skip + steps))
        for _ in range(skip):
            (x0, x1), _ = next(it)
            self.train_step(x0, x1)
        with self.track_memory():
            sync(self.device)
            t0 = time.perf_counter()
            for _ in range(steps):
                (x0, x1), _ = next(it)
                self.train_step(x0, x1)
            sync(self.device)
            elapsed = time.perf_counter() - t0
        del it
        if not math.isfinite(float(self.total)):
            raise RuntimeError("lightly loss is not finite")
        return elapsed

    def breakdown(self, reps: int) -> dict:
        """Transform cost of one batch in this process (one core: what one worker spends per batch),
        collation, and the model step on ready views."""
        from PIL import Image

        parts = {"transform_1core": [], "model_step": []}
        rng = np.random.default_rng(0)
        for _ in range(reps):
            idx = rng.choice(len(self.dataset), self.batch_size, replace=False)
            with torch_threads(1):
                t0 = time.perf_counter()
                samples = [(self.transform(Image.fromarray(self.dataset.images[i])), 0) for i in idx]
                (x0, x1), _ = torch.utils.data.default_collate(samples)
                t1 = time.perf_counter()
            if self.device.type == "cuda":
                x0, x1 = x0.pin_memory(), x1.pin_memory()
            sync(self.device)
            t2 = time.perf_counter()
            self.train_step(x0, x1)
            sync(self.device)
            t3 = time.perf_counter()
            parts["transform_1core"].append(t1 - t0)
            parts["model_step"].append(t3 - t2)
        return {k: statistics.median(v) for k, v in parts.items()}


@contextlib.contextmanager
def torch_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------------------------ measurements


def matmul_rate(device: torch.device, quick: bool = False) -> dict:
    """Dense matmul FLOP/s: bf16 on a GPU, fp32 on a CPU; the best of a few timed windows."""
    if device.type == "cuda":
        n, dtype, reps, windows = 8192, torch.bfloat16, 50, 5
    else:
        n, dtype, reps, windows = 2048, torch.float32, 8, 3
    if quick:
        reps, windows = max(2, reps // 4), 2
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        c = a @ b
    sync(device)
    rates = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(reps):
            c = torch.matmul(a, b)
        sync(device)
        rates.append(2 * n ** 3 * reps / (time.perf_counter() - t0))
    del a, b, c
    return {"dtype": str(dtype).replace("torch.", ""), "n": n, "flops_per_s": max(rates),
            "windows_flops_per_s": rates}


def flops_per_image(pipe: GsimclrPipeline, n: int = 8) -> float:
    """FLOPs of one forward + backward over both views of one image (the model and the loss)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(pipe.model)
    size = pipe.cfg.image_size
    views = torch.randn(2, n, 3, size, size, device=pipe.device)
    with FlopCounterMode(display=False) as counter:
        pipe.eager_loss(model, views, None, None).backward()
    del model
    return counter.get_total_flops() / n


def lightly_sweep(cfg, device, images, candidates, steps, warmup) -> tuple[int, dict]:
    """Time lightly's pipeline with each worker count; the fastest wins."""
    rates = {}
    for workers in candidates:
        pipe = LightlyPipeline(cfg, device, images, workers)
        pipe.window(warmup)
        seconds = pipe.window(steps)
        rates[workers] = steps * cfg.batch_size / seconds
        log(f"  lightly with {workers} worker(s): {rates[workers]:.1f} images/s")
        del pipe
    best = max(rates, key=rates.get)
    return best, {str(k): v for k, v in rates.items()}


# ---------------------------------------------------------------------------------------- driver


def load_images(cfg, subset: int | None, seed: int) -> np.ndarray | None:
    from gsimclr.data.sources import load_split

    data_path = cfg.data
    if not Path(data_path).exists() and (ROOT / data_path).exists():
        data_path = str((ROOT / data_path).resolve())
    if not Path(data_path).exists():
        return None
    data = load_split(data_path, "train", image_size=cfg.cache_size or cfg.image_size, on_corrupt=cfg.on_corrupt)
    images = data.images
    if subset is not None and subset < len(images):
        keep = np.sort(np.random.default_rng(seed).choice(len(images), subset, replace=False))
        images = np.ascontiguousarray(images[keep])
    return images


def run_config(name: str, spec: dict, device: torch.device, args, matmul: dict, state: dict,
               progress=lambda partial: None) -> dict | None:
    """One config's measurement; ``progress`` receives what is measured so far after each timed window."""
    from gsimclr.config import load_config

    overrides = dict(spec["overrides"], device=str(device))
    dataset = "imagenet5" if "imagenet5" in str(overrides.get("data", "")) else "cifar10"
    if getattr(args, dataset, None):  # --cifar10 / --imagenet5: where that data set is on this machine
        overrides["data"] = getattr(args, dataset)
    overrides.update(args.overrides)  # --set KEY=VALUE (e.g. tiny sizes for the evidence smoke run)
    cfg = load_config(spec["preset"], overrides)
    images = load_images(cfg, spec["subset"] if args.subset is None else args.subset, cfg.seed)
    if images is None:
        log(f"[{name}] skipped: data {cfg.data} not found")
        return None
    if images.shape[1] != cfg.image_size:
        log(f"[{name}] note: stored images are {images.shape[1]} px, the model sees {cfg.image_size} px")
    steps_per_window = max(1, math.ceil(args.steps / args.windows))
    log(f"[{name}] {cfg.model} @ {cfg.image_size}px, batch {cfg.batch_size}, {len(images)} images, "
        f"{args.windows} windows x {steps_per_window} steps, warm-up {args.warmup}")

    gs = GsimclrPipeline(cfg, device, images)
    flops = flops_per_image(gs)

    workers = args.lightly_workers
    sweep = None
    if workers == "auto":
        if device.type == "cuda":
            workers = max(1, cpu_count() - 1)
        elif "cpu_workers" in state:
            workers = state["cpu_workers"]
        else:
            candidates = sorted({0, max(1, cpu_count() - 1)})
            log(f"[{name}] choosing lightly's DataLoader workers on the CPU among {candidates}")
            workers, sweep = lightly_sweep(cfg, device, images, candidates, steps_per_window, args.warmup)
            state["cpu_workers"], state["cpu_sweep"] = workers, {"config": name, "images_per_s": sweep}
    workers = int(workers)
    lt = LightlyPipeline(cfg, device, images, workers)

    t0 = time.perf_counter()
    gs.window(args.warmup)
    gs.compiled = getattr(gs.loss_fn, "compiled", gs.compiled)  # False when the compile fell back to eager
    log(f"[{name}] gsimclr warm-up {time.perf_counter() - t0:.1f}s (compiled: {gs.compiled})")
    t0 = time.perf_counter()
    lt.window(args.warmup)
    log(f"[{name}] lightly warm-up {time.perf_counter() - t0:.1f}s ({workers} workers)")

    rates = {"gsimclr": [], "lightly": []}
    for w in range(args.windows):
        order = (gs, lt) if w % 2 == 0 else (lt, gs)
        for pipe in order:
            seconds = pipe.window(steps_per_window)
            rates[pipe.name].append(steps_per_window * cfg.batch_size / seconds)
        log(f"[{name}] window {w + 1}/{args.windows}: gsimclr {rates['gsimclr'][-1]:.1f}, "
            f"lightly {rates['lightly'][-1]:.1f} images/s")
        progress({"config": name, "windows_done": w + 1, "windows": args.windows, "batch_size": cfg.batch_size,
                  "windows_images_per_s": {k: list(v) for k, v in rates.items()}})

    breakdown = None
    if args.breakdown:
        breakdown = {"gsimclr": gs.breakdown(args.breakdown_reps), "lightly": lt.breakdown(args.breakdown_reps)}

    result = {
        "config": name, "model": cfg.model, "n_blocks": cfg.n_blocks if cfg.model == "paper_resnet" else None,
        "head_dims": cfg.head_dims, "head_batch_norm": cfg.head_batch_norm, "image_size": cfg.image_size,
        "batch_size": cfg.batch_size, "data": cfg.data, "images": len(images),
        "precision": "bf16" if lt.bf16 else "fp32", "steps_per_window": steps_per_window,
        "windows": args.windows, "warmup_steps": args.warmup, "flops_per_image": flops, "pipelines": {},
    }
    for pipe in (gs, lt):
        ips = statistics.median(rates[pipe.name])
        entry = {
            "images_per_s": ips, "windows_images_per_s": rates[pipe.name],
            "step_ms": 1000 * cfg.batch_size / ips,
            "matmul_fraction": ips * flops / matmul["flops_per_s"],
            "peak_memory_bytes": pipe.peak_bytes if device.type == "cuda" else None,
        }
        if pipe is gs:
            entry.update(compiled=gs.compiled, channels_last=True, data_on=str(gs.images.device))
        else:
            entry.update(workers=workers, channels_last=False, compiled=False)
        if breakdown:
            entry["breakdown_s_per_batch"] = breakdown[pipe.name]
        result["pipelines"][pipe.name] = entry
    result["ratio_gsimclr_to_lightly"] = (result["pipelines"]["gsimclr"]["images_per_s"]
                                          / result["pipelines"]["lightly"]["images_per_s"])
    # Each window of one pipeline ran next to a window of the other: the median of the per-window
    # ratios is robust to load that changes over time (other processes on a shared machine).
    result["paired_ratio_gsimclr_to_lightly"] = statistics.median(
        g / l for g, l in zip(rates["gsimclr"], rates["lightly"]))
    if sweep is not None:
        result["lightly_worker_sweep_images_per_s"] = sweep
    del gs, lt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def environment(device: torch.device) -> dict:
    from gsimclr.provenance import cpu_name, git_commit, package_version, versions

    env = {
        "device": str(device), **versions(), "pillow": package_version("pillow"), "commit": git_commit(),
        "cpu": cpu_name(), "cpu_cores": cpu_count(), "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(), "load_average_at_start": _loadavg(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def fmt_bytes(n) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def markdown(report: dict) -> str:
    env, mm = report["environment"], report["matmul"]
    where = env.get("gpu") or f"{env['cpu']} ({env['cpu_cores']} cores, {env['torch_threads']} torch threads)"
    lines = [
        f"# Pretraining throughput on {report['device_type']}: gsimclr vs lightly",
        "",
        f"{report['date']} - {where} - torch {env['torch']}, torchvision {env['torchvision']}, "
        f"lightly {env['lightly']}, gsimclr {env['gsimclr']}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Load average (1/5/15 min) at start {env.get('load_average_at_start')}, at end "
        f"{env.get('load_average_at_end')}; wall time {report['wall_s']:.0f} s.",
        "",
        f"Matmul rate ({mm['dtype']}, {mm['n']}x{mm['n']}, best window): {mm['flops_per_s'] / 1e12:.3f} TFLOP/s. "
        "Images/s counts images (2 views each); median of the timed windows, the two pipelines interleaved. "
        "Ratio to peer: ratio of the medians (paired: median of the per-window ratios).",
        "",
        "| config | pipeline | images/s | ratio to peer | % of matmul rate | peak memory |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        for name, peer in (("gsimclr", "lightly"), ("lightly", "gsimclr")):
            p = r["pipelines"][name]
            ratio = p["images_per_s"] / r["pipelines"][peer]["images_per_s"]
            label = name if name == "gsimclr" else f"lightly ({p['workers']} workers)"
            paired = r["paired_ratio_gsimclr_to_lightly"] ** (1 if name == "gsimclr" else -1)
            lines.append(f"| {r['config']} | {label} | {p['images_per_s']:.1f} | {ratio:.2f}x ({paired:.2f}x) | "
                         f"{100 * p['matmul_fraction']:.1f}% | {fmt_bytes(p['peak_memory_bytes'])} |")
    lines += ["", "Configs:", ""]
    for r in report["results"]:
        g, l = r["pipelines"]["gsimclr"], r["pipelines"]["lightly"]
        model = r["model"] + (f" (n_blocks {r['n_blocks']})" if r["n_blocks"] is not None else "")
        lines.append(
            f"- {r['config']}: {model}, head {'-'.join(map(str, r['head_dims']))}"
            f"{' BN' if r['head_batch_norm'] else ''}, {r['image_size']} px, batch {r['batch_size']}, "
            f"{r['precision']}, {r['images']} images, {r['flops_per_image'] / 1e9:.3f} GFLOP/image (fwd+bwd, 2 views); "
            f"{r['windows']} windows x {r['steps_per_window']} steps; windows images/s: gsimclr "
            f"{', '.join(f'{x:.1f}' for x in g['windows_images_per_s'])}; lightly "
            f"{', '.join(f'{x:.1f}' for x in l['windows_images_per_s'])}")
    if any("breakdown_s_per_batch" in r["pipelines"]["gsimclr"] for r in report["results"]):
        lines += ["", "Breakdown per batch (parts run separately, ms):", "",
                  "| config | gsimclr feed | gsimclr augment (2 views) | gsimclr augment, 1 thread | "
                  "gsimclr model step | lightly transforms, 1 core | lightly model step |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in report["results"]:
            g = r["pipelines"]["gsimclr"].get("breakdown_s_per_batch")
            l = r["pipelines"]["lightly"].get("breakdown_s_per_batch")
            if g and l:
                one = f"{1e3 * g['augment_1thread']:.1f}" if "augment_1thread" in g else "-"
                lines.append(f"| {r['config']} | {1e3 * g['feed']:.1f} | {1e3 * g['augment']:.1f} | {one} | "
                             f"{1e3 * g['model_step']:.1f} | {1e3 * l['transform_1core']:.1f} | "
                             f"{1e3 * l['model_step']:.1f} |")
    if report.get("lightly_cpu_worker_sweep"):
        s = report["lightly_cpu_worker_sweep"]
        lines += ["", f"lightly DataLoader workers on the CPU, chosen by a sweep on {s['config']}: " + ", ".join(
            f"{k} workers {v:.1f} images/s" for k, v in s["images_per_s"].items())]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    parser.add_argument("--configs", nargs="+", default=None,
                        help=f"configs to run (default: those for the device); known: {', '.join(CONFIGS)}")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per pipeline and config "
                        "(default: 6 on a CPU, 100 on a GPU)")
    parser.add_argument("--windows", type=int, default=None, help="timed windows the steps are split into")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps per pipeline (default: 1 CPU, 10 GPU)")
    parser.add_argument("--subset", type=int, default=None, help="use this many training images "
                        "(default: 4096 for CPU configs, all for GPU configs)")
    parser.add_argument("--lightly-workers", default="auto", help="DataLoader workers for lightly: auto "
                        "(GPU: cores - 1; CPU: the fastest of 0 and cores - 1, measured) or a number")
    parser.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                        help="skip the per-component timing")
    parser.add_argument("--breakdown-reps", type=int, default=None, help="repetitions of the breakdown "
                        "(default: 1 on a CPU, 3 on a GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for both "
                        "pipelines (default: torch's, i.e. the cores; 1 gives steadier numbers on a loaded CPU)")
    parser.add_argument("--cifar10", help="CIFAR-10 data for the CIFAR configs (default: the preset's, "
                        "../shared/data/cifar10)")
    parser.add_argument("--imagenet5", help="the ImageNet subset for the imagenet5 configs (default: "
                        "../shared/data/imagenet5; a folder or a parquet folder)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config option in every config (repeatable), e.g. --set batch_size=256")
    parser.add_argument("--name", default=None, help="output file stem (default: throughput-<cpu|cuda>)")
    parser.add_argument("--out", default="benchmarks/results", help="output folder")
    parser.add_argument("--resume", action="store_true", help="keep the configs already measured in the output "
                        "JSON (one cut short by a time limit) and measure the others")
    args = parser.parse_args(argv)
    args.overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set needs KEY=VALUE, got {item!r}")
        from gsimclr.config import parse_value
        from gsimclr.errors import UserError

        try:
            args.overrides[key] = parse_value(key, value)
        except UserError as exc:
            parser.error(f"--set {item}: {exc}")

    try:
        import lightly  # noqa: F401
    except ImportError:
        parser.error("lightly is not installed: pip install -c requirements-pinned.txt -e '.[bench]'")
    from gsimclr.runtime import resolve_device

    device = resolve_device(args.device)
    kind = device.type
    if args.threads:
        torch.set_num_threads(args.threads)
    for key, value in DEFAULTS[kind].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    names = args.configs or [n for n, c in CONFIGS.items() if c["device"] == kind]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")

    started = time.perf_counter()
    env = environment(device)
    log(f"device {device} ({env.get('gpu') or env['cpu']}), torch {env['torch']}, lightly {env['lightly']}, "
        f"gsimclr {env['gsimclr']}, {env['cpu_cores']} cores, {env['torch_threads']} torch threads")
    matmul = matmul_rate(device)
    log(f"matmul rate ({matmul['dtype']}): {matmul['flops_per_s'] / 1e9:.1f} GFLOP/s")

    out = Path(args.out)
    stem = args.name or f"throughput-{kind}"
    json_path = out / f"{stem}.json"
    state: dict = {}
    results = []
    if args.resume and json_path.exists():
        with contextlib.suppress(ValueError, KeyError):
            results = [r for r in json.loads(json_path.read_text())["results"] if r["config"] in names]
        if results:
            log(f"resumed: {', '.join(r['config'] for r in results)} already measured in {json_path}")
    command = "python " + " ".join([os.path.relpath(__file__, Path.cwd())] + (argv or sys.argv[1:]))

    def report(in_progress: dict | None = None) -> dict:
        """The report as it stands (written after every window and config: a cut run keeps its numbers)."""
        done = {r["config"] for r in results}
        env["load_average_at_end"] = _loadavg()
        rep = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": command,
               "device_type": kind, "environment": env, "matmul": matmul, "results": results,
               "lightly_cpu_worker_sweep": state.get("cpu_sweep"), "wall_s": time.perf_counter() - started,
               "complete": all(n in done for n in names), "in_progress": in_progress}
        write_atomic(json_path, json.dumps(rep, indent=2) + "\n")
        return rep

    for name in names:
        if any(r["config"] == name for r in results):
            continue
        result = run_config(name, CONFIGS[name], device, args, matmul, state, progress=report)
        if result is not None:
            results.append(result)
            report()
    missing = [n for n in names if not any(r["config"] == n for r in results)]
    final = report()
    final["complete"] = True  # every config ran or was skipped (its data missing) in this call
    final["skipped"] = missing
    md = markdown(final)
    write_atomic(json_path, json.dumps(final, indent=2) + "\n")
    write_atomic(out / f"{stem}.md", md)
    print(md)
    log(f"wrote {json_path} and {out / f'{stem}.md'} in {final['wall_s']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
