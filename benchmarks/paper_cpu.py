#!/usr/bin/env python
"""Speed of the paper recipe on the CPU: the ``paper-cifar10`` preset's model as the trainer runs it, in
several execution settings side by side, against the CPU's own ceilings, in one run.

Every **variant** is a worker process of its own (so that thread counts, OpenMP environment variables,
torch.compile and precision never leak from one to another) holding one pipeline:

- gsimclr variants: ``gsimclr.training.pretrain.build_pretrainer(cfg, ...)`` from the ``paper-cifar10``
  preset (``paper_resnet`` n_blocks 3, head 256-128-50, 32 px, batch 64, one forward per view, SGD,
  the notebook augmentation) with the variant's ``--compile``/``--precision``; every timed step is the
  public ``Pretrainer.step(batch)`` on a batch from ``Pretrainer.batches`` (as ``throughput.py``). The
  ``nchw`` variant is the only one that changes the trainer: its model and views are put back in the
  default (NCHW) layout, to show what the trainer's channels_last layout is worth.
- ``lightly``: ``throughput.py``'s ``LightlyPipeline`` (lightly's ``SimCLRTransform`` on PIL images in a
  DataLoader, ``NTXentLoss``, one forward per view, eager NCHW) on the same model and batch.
- ``ceiling``: the CPU's best on the work's own kernels: every 3x3 convolution shape of the paper
  model (found by hooks on one forward) at batch 64 and 128, channels_last through oneDNN, in fp32 and
  bf16, and a square matmul in fp32 and bf16 (2048); each timed as the best of a few repetitions.

The coordinator warms each worker up on its own (compile warm-up seconds are recorded, with a fresh
inductor cache by default), then runs **rounds**: in every round each worker runs one timed window
(``--steps`` trainer steps; the ceiling worker one pass over its kernels), in an order that rotates
from round to round, so that load from other processes hits every variant alike. Reported per variant:
the median images/s over the rounds, the paired ratio to the baseline (the median over rounds of the
per-round ratio), and its FLOP/s as a percentage of the fp32 conv ceiling (bf16 variants also of the
bf16 ceiling). The ceilings are the best any round showed (the best the CPU shows); the per-round
percentages against the same round's ceiling are given too. FLOPs per image come from
``torch.utils.flop_counter.FlopCounterMode`` on one ``Pretrainer.step`` (both views, forward + backward).

Usage:
    python benchmarks/paper_cpu.py --out benchmarks/results                 # every default variant
    python benchmarks/paper_cpu.py --variants eager eager-1t compile --rounds 4

Writes ``OUT/paper-cpu.json`` (every window, the environment) and ``OUT/paper-cpu.md`` atomically, after
every round (a cut run keeps what it measured). Needs lightly for the ``lightly`` variant.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

PRESET = "paper-cifar10"
CIFAR10 = "../shared/data/cifar10"
BASELINE = "eager"

# name -> settings. kind: gsimclr | lightly | ceiling; threads: torch intra-op threads; env: set before
# the worker starts (OpenMP reads it once); compile / precision: the trainer's --compile / --precision.
VARIANTS: dict[str, dict] = {
    "eager": {"kind": "gsimclr", "threads": 2, "compile": "off", "precision": "fp32",
              "what": "the trainer today on the CPU: eager, channels_last, fp32"},
    "eager-nchw": {"kind": "gsimclr", "threads": 2, "compile": "off", "precision": "fp32", "layout": "nchw",
                   "what": "eager, default NCHW layout (model and views put back by the benchmark)"},
    "eager-1t": {"kind": "gsimclr", "threads": 1, "compile": "off", "precision": "fp32",
                 "what": "eager, channels_last, fp32, 1 thread"},
    "eager-1t-x2": {"kind": "gsimclr", "threads": 1, "compile": "off", "precision": "fp32", "copies": 2,
                    "what": "two eager-1t processes at once, their images together (gsimclr run --jobs 2: "
                            "SimCLR and G-SimCLR side by side, one core each)"},
    "eager-passive": {"kind": "gsimclr", "threads": 2, "compile": "off", "precision": "fp32",
                      "env": {"OMP_WAIT_POLICY": "PASSIVE"},
                      "what": "eager, 2 threads, OMP_WAIT_POLICY=PASSIVE (no spinning between parallel regions)"},
    "eager-bind": {"kind": "gsimclr", "threads": 2, "compile": "off", "precision": "fp32",
                   "env": {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"},
                   "what": "eager, 2 threads pinned to cores (OMP_PROC_BIND=close, OMP_PLACES=cores)"},
    "compile": {"kind": "gsimclr", "threads": 2, "compile": "on", "precision": "fp32",
                "what": "--compile on: torch.compile (inductor, CPU) of the views and the loss, fp32"},
    "compile-1t": {"kind": "gsimclr", "threads": 1, "compile": "on", "precision": "fp32",
                   "what": "--compile on, fp32, 1 thread"},
    "bf16": {"kind": "gsimclr", "threads": 2, "compile": "off", "precision": "bf16",
             "what": "--precision bf16: eager, channels_last, bf16 autocast on the CPU"},
    "bf16-1t": {"kind": "gsimclr", "threads": 1, "compile": "off", "precision": "bf16",
                "what": "--precision bf16, eager, channels_last, 1 thread"},
    "bf16-compile": {"kind": "gsimclr", "threads": 2, "compile": "on", "precision": "bf16",
                     "what": "--precision bf16 --compile on"},
    "lightly": {"kind": "lightly", "threads": 2, "precision": "fp32", "workers": 1,
                "what": "the lightly recipe on the same model (PIL transforms in a DataLoader, 1 worker), fp32"},
    "ceiling": {"kind": "ceiling", "threads": 2,
                "what": "the paper model's 3x3 convs (oneDNN, channels_last) and matmul, fp32 and bf16"},
    "ceiling-1t": {"kind": "ceiling", "threads": 1,
                   "what": "the same kernels on 1 thread (x2 for the 2-core figure)"},
}
# the compiled variants last: their warm-up runs after the others are built (and may reuse the inductor cache)
DEFAULT_VARIANTS = ["eager", "eager-nchw", "eager-1t", "eager-passive", "bf16", "lightly", "ceiling", "compile"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ workers


def paper_config(spec: dict, data: str, steps_hint: int | None = None):
    from gsimclr.config import load_config

    overrides = {"data": data, "device": "cpu", "precision": spec.get("precision", "fp32")}
    if spec["kind"] == "gsimclr":
        overrides["compile"] = spec["compile"]
    return load_config(PRESET, overrides)


def nchw(trainer, views_forward: str) -> None:
    """Put a trainer's model back in the default layout and make its loss feed the views as they are
    (NCHW) instead of channels_last: the benchmark's baseline for what channels_last is worth."""
    import torch

    from gsimclr.training.views import VIEW_FORWARDS

    trainer.model.to(memory_format=torch.contiguous_format)
    criterion = trainer.criterion

    def forward(model, views):
        if views_forward == "separate":
            return torch.stack([model(v.contiguous()) for v in views.unbind(0)])
        n_views, n = views.shape[:2]
        return model(views.flatten(0, 1).contiguous()).view(n_views, n, -1)

    if views_forward not in VIEW_FORWARDS:
        raise ValueError(f"unknown views_forward {views_forward!r}")
    trainer.loss_fn = lambda model, views, labels, index: criterion(forward(model, views), pseudo_labels=labels)


class GsimclrWorker:
    def __init__(self, spec: dict, images, cfg):
        from throughput import GsimclrPipeline

        import torch

        self.pipe = GsimclrPipeline(cfg, torch.device("cpu"), images)
        self.batch_size = cfg.batch_size
        if spec.get("layout") == "nchw":
            nchw(self.pipe.trainer, cfg.views_forward)

    def flops_per_image(self) -> float:
        """FLOPs of one ``Pretrainer.step`` per image: both views, forward + backward (FlopCounterMode)."""
        from torch.utils.flop_counter import FlopCounterMode

        batch = self.pipe.feed()
        with FlopCounterMode(display=False) as counter:
            self.pipe.total += self.pipe.trainer.step(batch) * batch.shape[0]
        return counter.get_total_flops() / batch.shape[0]

    def window(self, steps: int) -> dict:
        seconds = self.pipe.window(steps)
        return {"seconds": seconds, "images": steps * self.batch_size,
                "compiled": getattr(self.pipe.trainer.loss_fn, "compiled", False)}


class LightlyWorker:
    def __init__(self, spec: dict, images, cfg):
        import torch
        from throughput import LightlyPipeline

        self.pipe = LightlyPipeline(cfg, torch.device("cpu"), images, spec.get("workers", 1))
        self.batch_size = cfg.batch_size

    def window(self, steps: int) -> dict:
        return {"seconds": self.pipe.window(steps), "images": steps * self.batch_size}


def conv_shapes(cfg, batch: int) -> list[dict]:
    """The distinct 3x3 convolutions of the paper model at ``batch``: input size, channels, stride."""
    import torch

    from gsimclr.training.pretrain import build_model

    model = build_model(cfg)
    shapes: dict[tuple, dict] = {}

    def hook(module, inputs, _out):
        if module.kernel_size == (3, 3):
            x = inputs[0]
            key = (module.in_channels, module.out_channels, x.shape[-1], module.stride[0])
            shapes.setdefault(key, {"cin": key[0], "cout": key[1], "hw": key[2], "stride": key[3], "count": 0})
            shapes[key]["count"] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(2, 3, cfg.image_size, cfg.image_size))
    for h in handles:
        h.remove()
    return list(shapes.values())


class CeilingWorker:
    """Each window: every kernel once (best of ``reps`` calls after one untimed call)."""

    def __init__(self, spec: dict, images, cfg):
        import torch

        self.kernels = []
        for batch in (64, 128):
            for s in conv_shapes(cfg, batch):
                out_hw = (s["hw"] + 2 - 3) // s["stride"] + 1
                flops = 2 * batch * s["cout"] * out_hw * out_hw * s["cin"] * 9
                for dtype in ("fp32", "bf16"):
                    self.kernels.append({"op": "conv3x3", "batch": batch, **{k: s[k] for k in ("cin", "cout", "hw", "stride")},
                                         "dtype": dtype, "flops": flops})
        for dtype in ("fp32", "bf16"):
            self.kernels.append({"op": "matmul", "n": 2048, "dtype": dtype, "flops": 2 * 2048 ** 3})
        self.tensors = []
        dt_ = {"fp32": torch.float32, "bf16": torch.bfloat16}
        for k in self.kernels:
            d = dt_[k["dtype"]]
            if k["op"] == "conv3x3":
                x = torch.randn(k["batch"], k["cin"], k["hw"], k["hw"]).to(d).contiguous(memory_format=torch.channels_last)
                w = torch.randn(k["cout"], k["cin"], 3, 3).to(d).contiguous(memory_format=torch.channels_last)
                self.tensors.append((x, w, k["stride"]))
            else:
                self.tensors.append((torch.randn(k["n"], k["n"]).to(d), torch.randn(k["n"], k["n"]).to(d), None))

    def _run(self, k, t):
        import torch

        a, b, stride = t
        if k["op"] == "conv3x3":
            return torch.nn.functional.conv2d(a, b, stride=stride, padding=1)
        return a @ b

    def window(self, steps: int) -> dict:
        import torch

        rates = []
        with torch.no_grad():
            for k, t in zip(self.kernels, self.tensors):
                self._run(k, t)
                reps = 3 if k["op"] == "matmul" else 5
                best = math.inf
                for _ in range(reps):
                    t0 = time.perf_counter()
                    self._run(k, t)
                    best = min(best, time.perf_counter() - t0)
                rates.append(k["flops"] / best)
        return {"kernels": self.kernels, "flops_per_s": rates}


def worker_main(spec_json: str) -> int:
    """A worker: build, warm up, answer ``{"window": steps}`` lines on stdin with a JSON line each."""
    import torch

    spec = json.loads(spec_json)
    torch.set_num_threads(spec["threads"])
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write on the protocol's stream

    def reply(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    try:
        from throughput import load_images

        cfg = paper_config(spec, spec["data"])
        images = load_images(cfg, spec["subset"], cfg.seed) if spec["kind"] != "ceiling" else None
        cls = {"gsimclr": GsimclrWorker, "lightly": LightlyWorker, "ceiling": CeilingWorker}[spec["kind"]]
        t0 = time.perf_counter()
        worker = cls(spec, images, cfg)
        built = time.perf_counter() - t0
        info: dict = {"build_s": built, "torch_threads": torch.get_num_threads()}
        if spec["kind"] == "gsimclr" and spec.get("count_flops"):
            info["flops_per_image"] = worker.flops_per_image()
        t0 = time.perf_counter()
        first = worker.window(spec["warmup"])  # the first steps: torch.compile's warm-up where compiling
        info["warmup_s"] = time.perf_counter() - t0
        info["warmup_steps"] = spec["warmup"]
        info["compiled"] = first.get("compiled")
        if spec["kind"] == "gsimclr":
            info["loss_after_warmup"] = float(worker.pipe.total) / max(1, spec["warmup"] * worker.batch_size)
        reply({"ready": info})
        for line in sys.stdin:
            cmd = json.loads(line)
            if "window" not in cmd:
                break
            reply(worker.window(int(cmd["window"])))
    except Exception as exc:  # reported to the coordinator, which drops the variant
        import traceback

        traceback.print_exc()
        reply({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


class WorkerGroup:
    """A variant of ``copies`` identical workers whose windows run at the same time: a window is every copy's
    steps, its images all of theirs and its seconds the slowest copy's (what ``gsimclr run --jobs`` gets)."""

    def __init__(self, name: str, spec: dict, inductor_cache: str | None):
        self.name, self.spec = name, spec
        self.copies = [Worker(f"{name}.{i}", spec, inductor_cache) for i in range(spec["copies"])]

    def read(self) -> dict:
        msgs = [w.read() for w in self.copies]
        return next((m for m in msgs if "error" in m), msgs[0])

    def ask(self, steps: int) -> dict:
        for w in self.copies:
            w.send(steps)
        msgs = [w.read() for w in self.copies]
        if any("error" in m for m in msgs):
            return next(m for m in msgs if "error" in m)
        return {"seconds": max(m["seconds"] for m in msgs), "images": sum(m["images"] for m in msgs),
                "copies_seconds": [m["seconds"] for m in msgs]}

    def close(self) -> None:
        for w in self.copies:
            w.close()


class Worker:
    """The coordinator's handle on one worker process."""

    def __init__(self, name: str, spec: dict, inductor_cache: str | None):
        self.name, self.spec = name, spec
        env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]),
                   PYTHONUNBUFFERED="1", **spec.get("env", {}))
        if inductor_cache:
            env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(inductor_cache, name)
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            return {"error": f"worker exited with {self.proc.wait()}"}
        return json.loads(line)

    def send(self, steps: int) -> None:
        self.proc.stdin.write(json.dumps({"window": steps}) + "\n")
        self.proc.stdin.flush()

    def ask(self, steps: int) -> dict:
        self.send(steps)
        return self.read()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -------------------------------------------------------------------------------------- the report


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def summarise(state: dict) -> dict:
    """Medians, paired ratios and percentages of the ceilings from the rounds measured so far."""
    rounds = state["rounds"]
    flops = state.get("flops_per_image")
    out: dict = {"variants": {}, "ceilings": None}
    ceil_rounds = [r["ceiling"] for r in rounds if "ceiling" in r]
    per_round_ceiling = []
    if ceil_rounds:
        kernels = ceil_rounds[0]["kernels"]
        best = [max(r["flops_per_s"][i] for r in ceil_rounds) for i in range(len(kernels))]
        table = [dict(k, best_flops_per_s=b, median_flops_per_s=statistics.median(r["flops_per_s"][i] for r in ceil_rounds))
                 for i, (k, b) in enumerate(zip(kernels, best))]

        def top(rates, op, dtype):
            return max(r for k, r in zip(kernels, rates) if k["op"] == op and k["dtype"] == dtype)

        out["ceilings"] = {"kernels": table, **{f"{op}_{d}": top(best, op, d) for op in ("conv3x3", "matmul")
                                                 for d in ("fp32", "bf16")}}
        for r in rounds:
            if "ceiling" in r:
                per_round_ceiling.append({d: top(r["ceiling"]["flops_per_s"], "conv3x3", d) for d in ("fp32", "bf16")})
            else:
                per_round_ceiling.append(None)
    one = [r["ceiling-1t"] for r in rounds if "ceiling-1t" in r]
    if one:  # the same kernels on one thread: on a loaded machine a 2-thread kernel waits for its slower thread
        k1 = one[0]["kernels"]
        best1 = [max(r["flops_per_s"][i] for r in one) for i in range(len(k1))]
        out["ceilings_1thread"] = {
            "kernels": [dict(k, best_flops_per_s=b) for k, b in zip(k1, best1)],
            **{f"{op}_{d}": max(b for k, b in zip(k1, best1) if k["op"] == op and k["dtype"] == d)
               for op in ("conv3x3", "matmul") for d in ("fp32", "bf16")}}
    base = [r.get(BASELINE) for r in rounds]
    for name, info in state["ready"].items():
        if VARIANTS[name]["kind"] == "ceiling":
            continue
        rates = [r[name]["images"] / r[name]["seconds"] if name in r else None for r in rounds]
        got = [x for x in rates if x is not None]
        if not got:
            continue
        spec = VARIANTS[name]
        entry = {"what": spec["what"], "threads": spec["threads"] * spec.get("copies", 1),
                 "processes": spec.get("copies", 1), "env": spec.get("env", {}),
                 "compile": spec.get("compile", "off"), "precision": spec.get("precision", "fp32"),
                 "layout": spec.get("layout", "channels_last" if spec["kind"] == "gsimclr" else "nchw"),
                 "images_per_s": statistics.median(got), "windows_images_per_s": rates,
                 "warmup_s": info.get("warmup_s"), "compiled": info.get("compiled")}
        paired = [x / (b["images"] / b["seconds"]) for x, b in zip(rates, base) if x is not None and b]
        entry["paired_ratio_to_eager"] = statistics.median(paired) if paired else None
        if flops and out["ceilings"]:
            c = out["ceilings"]
            entry["flops_per_s"] = entry["images_per_s"] * flops
            entry["pct_fp32_conv_ceiling"] = 100 * entry["flops_per_s"] / c["conv3x3_fp32"]
            entry["pct_bf16_conv_ceiling"] = 100 * entry["flops_per_s"] / c["conv3x3_bf16"]
            own = "bf16" if entry["precision"] == "bf16" else "fp32"
            pr = [100 * x * flops / pc[own] for x, pc in zip(rates, per_round_ceiling) if x is not None and pc]
            entry[f"pct_same_round_{own}_conv_ceiling_median"] = statistics.median(pr) if pr else None
            if entry["threads"] == 1 and out.get("ceilings_1thread"):
                entry[f"pct_1thread_{own}_conv_ceiling"] = (100 * entry["flops_per_s"]
                                                            / out["ceilings_1thread"][f"conv3x3_{own}"])
        out["variants"][name] = entry
    return out


def hours_per_seed(state: dict, summary: dict) -> dict | None:
    """CPU hours per seed of paper-cifar10 at the fastest faithful fp32 rate measured (see the README)."""
    v = summary["variants"]
    faithful = {n: e for n, e in v.items() if VARIANTS[n]["kind"] == "gsimclr" and e["precision"] == "fp32"
                and e["layout"] == "channels_last"}
    if not faithful:
        return None
    best = max(faithful, key=lambda n: faithful[n]["images_per_s"])
    rate = faithful[best]["images_per_s"]
    images = 15 * 781 * 64  # 15 epochs of 781 full batches (drop_last) of the 50,000 training images
    pre_h = 2 * images / rate / 3600  # SimCLR and G-SimCLR
    est = state.get("stage_flops")
    out = {"variant": best, "images_per_s": rate, "pretraining_images_per_method": images,
           "pretraining_h_both_methods": pre_h}
    if est and state.get("flops_per_image"):
        flop_rate = rate * state["flops_per_image"]  # the stages below assumed at the pretraining step's FLOP/s
        out["assumed_flops_per_s"] = flop_rate
        parts = {}
        for stage, (flop_per_item, items, note) in est.items():
            parts[stage] = {"hours": flop_per_item * items / flop_rate / 3600, "items": items, "note": note}
        out["other_stages"] = parts
        out["total_h"] = pre_h + sum(p["hours"] for p in parts.values())
    return out


def stage_flops(cfg) -> dict:
    """FLOPs of the non-pretraining stages of one seed (FlopCounterMode on one step of each model) times
    their epoch counts as upper bounds (early stopping usually ends them sooner)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gsimclr.models.autoencoder import DenoisingAutoencoder
    from gsimclr.models.resnet import PaperResNet
    from gsimclr.training.pretrain import build_model

    def fwd_bwd(model, n=8, size=32):
        x = torch.rand(n, 3, size, size)
        with FlopCounterMode(display=False) as c:
            model(x).float().sum().backward()
        return c.get_total_flops() / n

    def fwd(model, n=8, size=32):
        x = torch.rand(n, 3, size, size)
        with FlopCounterMode(display=False) as c, torch.no_grad():
            model(x)
        return c.get_total_flops() / n

    ae = fwd_bwd(DenoisingAutoencoder(cfg.ae_model, cfg.ae_decoder))
    backbone = build_model(cfg).backbone
    back_fb, back_f = fwd_bwd(backbone), fwd(backbone)
    sup = fwd_bwd(PaperResNet(n_blocks=cfg.supervised_n_blocks or 1, pre_pool_bn=True))
    n_train, n_test = 50_000, 10_000
    labelled = int(cfg.label_fraction * n_train)
    return {
        "autoencoder": (ae, cfg.ae_epochs * n_train,
                        f"{cfg.ae_epochs} epochs at most (early stopping, patience {cfg.ae_patience}), 50,000 images"),
        "features_P1_P2_P3": (back_f, 2 * (n_train + n_test), "one forward of train + test per method"),
        "finetune_10pct": (back_fb, 2 * cfg.finetune_epochs * labelled,
                           f"{cfg.finetune_epochs} epochs of {labelled} images per method, backbone trained"),
        "supervised": (sup, cfg.supervised_epochs * n_train,
                       f"{cfg.supervised_epochs} epochs at most of ResNet-20 (n_blocks {cfg.supervised_n_blocks})"),
    }


def markdown(rep: dict) -> str:
    env, s = rep["environment"], rep["summary"]
    c = s.get("ceilings") or {}
    lines = [f"# The paper recipe's speed on the CPU ({PRESET})", "",
             f"{rep['date']} - {env['cpu']} ({env['cpu_cores']} cores) - torch {env['torch']}, lightly {env['lightly']}, "
             f"commit {env['commit']}", "", f"Command: `{rep['command']}`", "",
             f"Load average (1/5/15 min) at start {env['load_average_at_start']}, at end {env.get('load_average_at_end')}; "
             f"wall {rep['wall_s']:.0f} s; {len(rep['rounds'])} rounds x {rep['steps']} steps of batch 64 per variant; "
             f"FLOPs per image (Pretrainer.step, both views, fwd+bwd): "
             f"{(rep.get('flops_per_image') or 0) / 1e9:.3f} GFLOP.", ""]
    if c:
        lines += [f"Ceilings (best window): 3x3 conv fp32 {c['conv3x3_fp32'] / 1e9:.0f} GFLOP/s, bf16 "
                  f"{c['conv3x3_bf16'] / 1e9:.0f}; matmul 2048 fp32 {c['matmul_fp32'] / 1e9:.0f}, bf16 "
                  f"{c['matmul_bf16'] / 1e9:.0f}. At the fp32 conv ceiling the step would run at "
                  f"{c['conv3x3_fp32'] / rep['flops_per_image']:.0f} images/s, at the bf16 one "
                  f"{c['conv3x3_bf16'] / rep['flops_per_image']:.0f}." if rep.get("flops_per_image") else "", ""]
    c1 = s.get("ceilings_1thread")
    if c1:
        lines += [f"Ceilings on 1 thread (best window): 3x3 conv fp32 {c1['conv3x3_fp32'] / 1e9:.0f} GFLOP/s, bf16 "
                  f"{c1['conv3x3_bf16'] / 1e9:.0f}; matmul fp32 {c1['matmul_fp32'] / 1e9:.0f}, bf16 "
                  f"{c1['matmul_bf16'] / 1e9:.0f}. 1-thread variants: "
                  + ", ".join(f"{n} {e[k]:.1f}% of the 1-thread {k.split('_')[2]} conv ceiling"
                              for n, e in s["variants"].items() for k in e if k.startswith("pct_1thread_")), ""]
    lines += ["| variant | images/s (median) | paired ratio to eager | % fp32 conv ceiling | % bf16 conv ceiling | "
              "% own-precision ceiling, same round | warm-up s | what |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, e in s["variants"].items():
        def f(key, fmt="{:.1f}"):
            return fmt.format(e[key]) if e.get(key) is not None else "-"
        own = "bf16" if e["precision"] == "bf16" else "fp32"
        lines.append(f"| {name} | {e['images_per_s']:.1f} | {f('paired_ratio_to_eager', '{:.2f}x')} | "
                     f"{f('pct_fp32_conv_ceiling')} | {f('pct_bf16_conv_ceiling')} | "
                     f"{f(f'pct_same_round_{own}_conv_ceiling_median')} | {f('warmup_s', '{:.0f}')} | {e['what']} |")
    if c:
        lines += ["", "Kernels (GFLOP/s, best / median window):", "", "| kernel | dtype | best | median |",
                  "|---|---|---:|---:|"]
        for k in c["kernels"]:
            name = (f"conv3x3 b{k['batch']} {k['cin']}->{k['cout']} @{k['hw']} s{k['stride']}" if k["op"] == "conv3x3"
                    else f"matmul {k['n']}")
            lines.append(f"| {name} | {k['dtype']} | {k['best_flops_per_s'] / 1e9:.0f} | {k['median_flops_per_s'] / 1e9:.0f} |")
    h = rep.get("hours_per_seed")
    if h:
        lines += ["", f"CPU hours per seed of {PRESET} at {h['images_per_s']:.1f} images/s ({h['variant']}): pretraining "
                  f"{h['pretraining_h_both_methods']:.2f} h (SimCLR + G-SimCLR, 2 x {h['pretraining_images_per_method']:,} images)"]
        for stage, p in (h.get("other_stages") or {}).items():
            lines.append(f"- {stage}: {p['hours']:.2f} h ({p['note']}; at the pretraining step's FLOP/s)")
        if "total_h" in h:
            lines.append(f"- total: {h['total_h']:.2f} h (upper bound: every early-stopped stage at its epoch limit)")
    lines += ["", "Windows (images/s per round):", ""]
    for name, e in s["variants"].items():
        lines.append(f"- {name}: " + ", ".join("-" if x is None else f"{x:.1f}" for x in e["windows_images_per_s"]))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- driver


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS),
                        help=f"variants to run (default: {' '.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved timed windows per variant (default 6)")
    parser.add_argument("--steps", type=int, default=3, help="trainer steps (batch 64) per window (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant before the rounds (default 2)")
    parser.add_argument("--subset", type=int, default=4096, help="CIFAR-10 training images used (default 4096)")
    parser.add_argument("--data", default=CIFAR10, help=f"CIFAR-10 (default {CIFAR10})")
    parser.add_argument("--inductor-cache", choices=("fresh", "default"), default="fresh",
                        help="fresh: an empty inductor cache per variant, so compile warm-ups are cold (default)")
    parser.add_argument("--parallel-warmup", action="store_true", help="build and warm up every variant at "
                        "once (on a loaded machine; the warm-up seconds then overlap and are not comparable)")
    parser.add_argument("--out", default="benchmarks/results", help="output folder")
    parser.add_argument("--name", default="paper-cpu", help="output file stem")
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)

    import torch  # noqa: F401  (versions)

    from gsimclr.provenance import cpu_name, git_commit, versions
    from throughput import write_atomic

    data = args.data
    if not Path(data).exists() and (ROOT / data).exists():
        data = str((ROOT / data).resolve())
    if not Path(data).exists():
        parser.error(f"--data {args.data}: not found")
    names = list(dict.fromkeys(([BASELINE] if BASELINE not in args.variants else []) + args.variants))
    started = time.perf_counter()
    env = {**versions(), "commit": git_commit(), "cpu": cpu_name(), "cpu_cores": os.cpu_count(),
           "load_average_at_start": _loadavg()}
    command = "python " + " ".join([os.path.relpath(__file__, Path.cwd())] + (argv or sys.argv[1:]))
    out = Path(args.out)
    state: dict = {"ready": {}, "rounds": [], "failed": {}}
    cache_root = tempfile.mkdtemp(prefix="gsimclr-inductor-") if args.inductor_cache == "fresh" else None
    from gsimclr.config import load_config

    state["stage_flops"] = stage_flops(load_config(PRESET, {"data": data, "device": "cpu"}))

    def report(final=False):
        env["load_average_at_end"] = _loadavg()
        rep = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": command,
               "preset": PRESET, "environment": env, "steps": args.steps, "warmup": args.warmup,
               "subset": args.subset, "parallel_warmup": args.parallel_warmup, "flops_per_image": state.get("flops_per_image"), "ready": state["ready"],
               "failed": state["failed"], "rounds": state["rounds"], "wall_s": time.perf_counter() - started,
               "complete": final}
        rep["summary"] = summarise(state)
        rep["hours_per_seed"] = hours_per_seed(state, rep["summary"])
        write_atomic(out / f"{args.name}.json", json.dumps(rep, indent=2) + "\n")
        md = markdown(rep)
        write_atomic(out / f"{args.name}.md", md)
        return md

    workers: dict[str, Worker] = {}
    try:
        def start(name):
            spec = dict(VARIANTS[name], name=name, data=data, subset=args.subset, warmup=args.warmup,
                        count_flops=name == BASELINE)
            log(f"[{name}] starting ({spec['what']})")
            return (WorkerGroup if spec.get("copies", 1) > 1 else Worker)(name, spec, cache_root)

        # one at a time (each warm-up, a compile where compiling, runs alone) or all at once (--parallel-warmup:
        # faster on a loaded machine; the warm-up seconds then overlap and say nothing)
        started_workers = {name: start(name) for name in names} if args.parallel_warmup else {}
        for name in names:
            w = started_workers.get(name) or start(name)
            msg = w.read()
            if "error" in msg:
                log(f"[{name}] failed: {msg['error']}")
                state["failed"][name] = msg["error"]
                w.close()
                continue
            info = msg["ready"]
            if "flops_per_image" in info:
                state["flops_per_image"] = info["flops_per_image"]
            state["ready"][name] = info
            workers[name] = w
            log(f"[{name}] ready: warm-up {info['warmup_s']:.1f} s over {args.warmup} steps"
                + (f", compiled {info['compiled']}" if info.get("compiled") is not None else ""))
        if BASELINE not in workers:
            log("the baseline failed; nothing to compare")
            return 1
        order = list(workers)
        for r in range(args.rounds):
            k = r % len(order)
            this = order[k:] + order[:k] if r % 2 == 0 else list(reversed(order[k:] + order[:k]))
            row = {"load_average": _loadavg()}
            for name in this:
                res = workers[name].ask(args.steps)
                if "error" in res:
                    log(f"[{name}] failed in round {r + 1}: {res['error']}")
                    state["failed"][name] = res["error"]
                    workers.pop(name).close()
                    order.remove(name)
                    continue
                row[name] = res
            state["rounds"].append(row)
            log(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n} {row[n]['images'] / row[n]['seconds']:.1f}" for n in this if n in row and "images" in row[n])
                + f" images/s; load {row['load_average']}")
            report()
    finally:
        for w in workers.values():
            w.close()
        if cache_root:  # the fresh inductor caches (the compiled kernels) go with the run
            import shutil

            shutil.rmtree(cache_root, ignore_errors=True)
    md = report(final=True)
    print(md)
    log(f"wrote {out / (args.name + '.json')} and .md in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
