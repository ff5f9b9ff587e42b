"""Stage f: the checks. ``ddp-equal``: a real distributed run (process group, DDP, SyncBatchNorm on GPUs,
gathered negatives) against a plain one; ``bf16-ntxent``: one real step's loss and gradients under bf16
autocast against a true fp32 reference (TF32 off, recorded)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from evidence_runner.context import (EXIT_MARGIN_S, ROOT, SMOKE_OPTIONS, Ctx, Part, Stage, Stopped, log, run_gsimclr,
                                     wait_bounded)


def check_options(ctx: Ctx) -> dict[str, Any]:
    # a kNN monitor between the epochs: the distributed path must survive it (it once did not)
    opts = {"epochs": 2, "train_limit": 4096, "test_limit": 1000, "monitor_every": 1, "checkpoint_every": 0,
            "warmup_epochs": 0}
    if ctx.smoke:
        opts.update(epochs=2, train_limit=64, test_limit=32)
    return opts


def run_ddp_equal(ctx: Ctx, part: Part) -> dict:
    """A real distributed check. The same short pretraining three times: plain, plain again (the run-to-run
    floor: cuDNN and compiled kernels need not be bitwise deterministic), and under torchrun
    --nproc_per_node=1, which now starts a process group (NCCL on the GPU, gloo on the CPU) and trains
    through DDP (with SyncBatchNorm on GPUs) and the gathered negatives; checkpoints compared tensor by
    tensor. Then :mod:`evidence_runner.ddp_probe` (one DDP step with gathered negatives) with one process
    and with two where the backend allows them (gloo; NCCL needs a GPU per process, so on one GPU the two
    processes run on the CPU with gloo): the two-process gradient must equal the one-process one."""
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
            commands.append(torchrun(ctx, 1, ["-m", "gsimclr", *args]))
        else:
            commands.append(run_gsimclr(ctx, args))
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
    probes = run_probes(ctx, commands)
    part.command = " ; ".join(commands)
    return {"torchrun_vs_plain": torchrun_vs_plain, "plain_vs_plain": floor, "equal": bool(equal),
            "rule": "equal: bitwise, or relative L2 difference within 2x the plain-vs-plain floor (at least 1e-6)",
            "options": check_options(ctx), "probes": probes,
            "distributed_ok": bool(equal) and all(p.get("ok", False) for p in probes.values() if isinstance(p, dict))}


def torchrun(ctx: Ctx, nproc: int, target: list[str]) -> str:
    """``torchrun --standalone --nproc_per_node=N TARGET`` bounded by the call's deadline; the command line."""
    args = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *target]
    line = f"torchrun --standalone --nproc_per_node={nproc} " + shlex.join(target)
    log(f"$ {line}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [str(ROOT / "src"), os.environ.get("PYTHONPATH")] if p))
    proc = subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT)
    rc = wait_bounded(proc, ctx.deadline - EXIT_MARGIN_S)
    if rc is None:
        raise Stopped("torchrun stopped at the call's deadline")
    if rc:
        raise RuntimeError(f"torchrun exited with status {rc}")
    return line


def run_probes(ctx: Ctx, commands: list[str]) -> dict[str, Any]:
    """One DDP step with gathered negatives (ddp_probe.py) with one process on this call's device, then
    with two processes (gloo on the CPU unless there is a GPU per process): gradients compared."""
    import numpy as np
    import torch

    gpu = ctx.device != "cpu" and torch.cuda.is_available()
    runs = {"one-process": (1, "cuda" if gpu else "cpu")}
    if gpu and torch.cuda.device_count() >= 2:
        runs["two-processes"] = (2, "cuda")
    else:
        runs["two-processes"] = (2, "cpu")  # NCCL refuses two processes on one GPU: gloo on the CPU
    if gpu:
        runs["one-process-cpu"] = (1, "cpu")  # the reference of a two-process run on the CPU
    out, grads = {}, {}
    folder = ctx.runs / "ddp-probe"
    folder.mkdir(parents=True, exist_ok=True)
    script = os.path.relpath(Path(__file__).resolve().parents[1] / "ddp_probe.py", ROOT)
    for name, (nproc, device) in runs.items():
        path = folder / f"{name}.json"
        try:
            commands.append(torchrun(ctx, nproc, [script, "--device", device, "--out", str(path.resolve())]))
            out[name] = json.loads(path.read_text())
            grads[name] = np.load(path.with_suffix(".npy"))
        except RuntimeError as exc:
            out[name] = {"ok": False, "error": str(exc)}
    ref_name = "one-process-cpu" if "one-process-cpu" in grads else "one-process"
    ref, two = grads.get(ref_name), grads.get("two-processes")
    if two is not None and ref is not None:
        diff = float(np.linalg.norm(two - ref) / max(np.linalg.norm(ref), 1e-30))
        floor = out[ref_name].get("reorder_floor") or 0.0
        out["two-processes"]["grad_relative_l2_diff_vs_one_process"] = diff
        out["two-processes"]["rule"] = "within 4x the one-process reordering floor (at least 1e-6)"
        out["two-processes"]["ok"] = diff <= max(4 * floor, 1e-6)
    for name, r in out.items():
        if "error" not in r:
            r.setdefault("ok", bool(r["process_group"] and r["ddp"]))
            r["ok"] = r["ok"] and bool(r["process_group"] and r["ddp"])
    out["note"] = ("two processes on one GPU: NCCL needs a GPU per process, so they ran on the CPU with gloo"
                   if gpu and runs["two-processes"][1] == "cpu" else "")
    return out


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
    from gsimclr.methods import METHODS

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
    loss_fn = METHODS["simclr"].parts().make_loss_fn(cfg, build_criterion(cfg))  # the trainer's loss of SimCLR
    tf32_used: dict[str, dict] = {}
    state = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm running stats move in train mode
    results = {}
    for precision in ("fp32", "bf16"):
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        # the fp32 reference is fp32: TF32 off for matmuls and convolutions (cuDNN allows it by default)
        with tf32(enabled=precision != "fp32") as tf32_state:
            with autocast(device, precision):
                loss = loss_fn(model, views, None, None)
            loss.backward()
        tf32_used[precision] = tf32_state
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
            "temperature": cfg.temperature, "tf32": tf32_used}


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 for matmuls and cuDNN convolutions on or off inside the block (restored after); yields the
    settings in force, for the JSON."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    try:
        yield {"matmul_allow_tf32": enabled, "cudnn_allow_tf32": enabled,
               "float32_matmul_precision": torch.get_float32_matmul_precision()}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


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
        for name, p in (r.get("probes") or {}).items():
            if isinstance(p, dict) and "backend" in p:
                diff = p.get("grad_relative_l2_diff_vs_one_process")
                lines.append(f"- probe {name}: {p['backend']} on {p['device']}, world {p['world_size']}, DDP {p['ddp']}, "
                             f"SyncBatchNorm layers {p['sync_batch_norm_layers']}, gathered {p['gathered_shape']}"
                             + (f", gradient vs one process {diff:.2e}" if diff is not None else "") + f": ok {p['ok']}")
        lines.append("")
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
                  f"{'trained' if r['trained_model'] else 'initial'} weights; fp32 reference with TF32 off "
                  f"({(r.get('tf32') or {}).get('fp32')}). [bf16-ntxent](results/evidence/bf16-ntxent.json)"]
    return "\n".join(lines).strip()


