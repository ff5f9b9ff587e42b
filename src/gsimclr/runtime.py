"""Device, precision and compilation choices, made once per run."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from gsimclr.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return device


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast on a GPU (``auto`` or ``bf16``), nothing on the CPU unless asked for."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def maybe_compile(fn, device: torch.device, mode: str = "auto"):
    """torch.compile on a GPU by default (``on``/``auto``; ``max-autotune`` and ``reduce-overhead``,
    which uses CUDA graphs, are torch.compile's modes); the eager function where compilation is
    unavailable."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return fn
    try:
        # dynamic=False: a short last batch gets a graph of its own, compiled once and reused every
        # epoch, instead of one dynamic-shape graph for every batch
        return torch.compile(fn, dynamic=False, mode=mode if mode in ("max-autotune", "reduce-overhead") else None)
    except Exception:  # e.g. no compiler toolchain on this platform: run eagerly
        return fn


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed the global random streams (CPU and every GPU) for one epoch: a function of (seed, epoch)
    only, so a resumed run draws the same augmentations as an uninterrupted one. Each process of a
    multi-process run (``rank`` > 0) gets a stream of its own. The global stream, not a
    ``torch.Generator`` argument, so that torch.compile can trace the augmentations."""
    entropy = [seed, epoch] if rank == 0 else [seed, epoch, rank]
    torch.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
