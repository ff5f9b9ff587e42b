"""The preflight: what this machine is and whether the lease's work can run on it, in its first seconds.

It records the GPU's name and driver, torch/torchvision/triton/lightly versions, ``/dev/shm``'s size, free
host and GPU memory, whether nvJPEG decodes (else the data path falls back to the CPU decoders, with a
note) and whether lightly imports; then one compiled training step of each model the selected parts use
(at their batch size: the compile caches it warms serve the parts after it), timed, so the planner knows
each model's compile time on this device kind. On the CPU the GPU-only checks are skipped with a note
(the step runs eagerly, as gsimclr does on a CPU). A check that makes the lease pointless (no GPU where
one is needed, a training step that fails) fails the preflight in one line with its reason; its result
goes into every JSON of the call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import subprocess
import time
from typing import Any

import numpy as np

from evidence_runner.context import SMOKE_OPTIONS, Ctx, Part, have_lightly, log

PREFLIGHT_STEP_BATCH = 512     # the batch of the compiled step on a GPU (the parts' batch: the compile is reused)


class PreflightFailed(Exception):
    """The reason, in one line."""


def _driver() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    return None


def _meminfo() -> dict[str, float]:
    out = {}
    with contextlib.suppress(OSError):
        for line in open("/proc/meminfo"):
            key, _, value = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                out[key] = round(int(value.split()[0]) / 2**20, 1)
    return out


def _nvjpeg(gpu: bool) -> dict[str, Any]:
    if not gpu:
        return {"ok": False, "note": "no GPU: the data path decodes on the CPU (Pillow, torchvision)"}
    try:
        import torch
        from PIL import Image
        from torchvision.io import decode_jpeg

        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="JPEG")
        data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        img = decode_jpeg(data, device="cuda")
        torch.cuda.synchronize()
        return {"ok": tuple(img.shape) == (3, 16, 16), "note": ""}
    except Exception as exc:
        return {"ok": False, "note": f"nvJPEG unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                                     "the data path falls back to CPU decoding"}


def compiled_step(preset: str, ctx: Ctx, data: str | None = None) -> dict[str, Any]:
    """One training step of ``preset``'s model through gsimclr's own loss function (compiled on a GPU as the
    trainer compiles it), first and second call timed: the first includes the compile."""
    import torch

    import tempfile

    from gsimclr.config import load_config
    from gsimclr.data.dataset import ImageData
    from gsimclr.runtime import resolve_device
    from gsimclr.training.pretrain import build_pretrainer

    overrides: dict[str, Any] = {"device": ctx.device, **({"data": data} if data else {})}
    if ctx.smoke:
        overrides.update({k: SMOKE_OPTIONS[k] for k in ("model", "n_blocks", "image_size", "cache_size")})
        overrides.update(head_dims=[32, 16], batch_size=16)
    cfg = load_config(preset, overrides)
    device = resolve_device(cfg.device)
    batch = min(cfg.batch_size, PREFLIGHT_STEP_BATCH) if device.type == "cuda" else min(cfg.batch_size, 16)
    cfg = dataclasses.replace(cfg, batch_size=batch)
    images = np.random.default_rng(0).integers(0, 255, (batch, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    times = []
    with tempfile.TemporaryDirectory(prefix="gsimclr-preflight-") as log_dir:
        # the trainer users run (build_pretrainer), timed through its public step()
        trainer = build_pretrainer(cfg, ImageData(images, name="preflight"), log_dir, device, method="simclr")
        _, x = next(iter(trainer.batches(0)))
        for _ in range(2):
            t0 = time.perf_counter()
            loss = trainer.step(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            if not torch.isfinite(loss):
                raise PreflightFailed(f"{preset}: the training step's loss is not finite")
        loss_fn = trainer.loss_fn
        if trainer.log is not None:
            trainer.log.close()
    compiled = getattr(loss_fn, "compiled", False)  # CompiledOrEager: False when the compile fell back to eager
    return {"model": cfg.model, "batch": batch, "first_step_s": round(times[0], 3), "step_s": round(times[1], 4),
            "compile_s": round(max(0.0, times[0] - times[1]), 2), "compiled": bool(compiled),
            "precision": cfg.precision}


def preflight(ctx: Ctx, parts: list[Part], need_gpu: bool) -> dict[str, Any]:
    """Every check; raises :class:`PreflightFailed` (one line) when the lease's work cannot run here."""
    started = time.perf_counter()
    import torch

    from gsimclr.provenance import device_name, versions

    gpu = torch.cuda.is_available() and ctx.device != "cpu"
    if need_gpu and not gpu:
        raise PreflightFailed("no CUDA GPU here: the evidence parts measure on a GPU (--smoke runs them on the CPU)")
    shm = shutil.disk_usage("/dev/shm") if os.path.isdir("/dev/shm") else None
    result: dict[str, Any] = {"device": device_name(ctx.device), "versions": versions(), "driver": _driver() if gpu else None,
                              "shm_gib": round(shm.total / 2**30, 1) if shm else None,
                              "shm_free_gib": round(shm.free / 2**30, 1) if shm else None,
                              "host_memory_gib": _meminfo(), "lightly": have_lightly(), "notes": []}
    if shm is not None and shm.total < 2**30:
        result["notes"].append(f"/dev/shm is {shm.total / 2**20:.0f} MiB: DataLoader workers (the lightly recipe) may fail")
    if gpu:
        free, total = torch.cuda.mem_get_info()
        result["gpu_memory_gib"] = {"free": round(free / 2**30, 1), "total": round(total / 2**30, 1)}
    else:
        result["notes"].append("CPU: GPU name, driver, GPU memory, nvJPEG and the compiled step are skipped "
                               "(the step runs eagerly)")
    result["nvjpeg"] = _nvjpeg(gpu)
    if gpu and not result["nvjpeg"]["ok"]:
        result["notes"].append(result["nvjpeg"]["note"])
    if not result["lightly"]:
        result["notes"].append("lightly is not importable: the lightly parts are skipped (carry its wheels)")
    models = {m: ctx.data.get(p.needs[0]) if p.needs else None for p in parts for m in p.models}
    result["steps"] = {}
    for preset, data in models.items():
        try:
            result["steps"][preset] = compiled_step(preset, ctx, data)
        except PreflightFailed:
            raise
        except Exception as exc:
            raise PreflightFailed(f"one training step of {preset} failed: {type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc
        finally:
            with contextlib.suppress(Exception):
                torch._dynamo.reset()
    result["seconds"] = round(time.perf_counter() - started, 1)
    log(f"preflight: {result['device']}, driver {result['driver']}, torch {result['versions']['torch']}, "
        f"shm {result['shm_gib']} GiB, lightly {result['lightly']}, nvJPEG {result['nvjpeg']['ok']}, steps "
        + ", ".join(f"{k} {v['first_step_s']:.1f}/{v['step_s']:.3f} s" for k, v in result["steps"].items())
        + f" ({result['seconds']:.0f} s)" + "".join(f"; note: {n}" for n in result["notes"]))
    return result
