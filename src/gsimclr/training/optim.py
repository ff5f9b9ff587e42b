"""Optimizers and learning-rate schedules for pretraining.

Schedules are functions of the global step (multipliers of the base learning rate), so a resumed
run needs no scheduler state.

Example:
    >>> f = lr_multiplier("cosine", total_steps=100, warmup_steps=10)
    >>> round(f(0), 2), round(f(10), 2), round(f(100), 2)
    (0.1, 1.0, 0.0)
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from gsimclr.registry import Registry


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017) over SGD with momentum, as in SimCLR:
    biases and normalisation weights (1-d parameters) get neither weight decay nor adaptation.
    torch ships no LARS, hence this short one."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, trust_coefficient: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.ndim > 1:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["trust_coefficient"] * w_norm / g_norm, torch.ones_like(w_norm))
                    grad = grad.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(grad).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])


OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("sgd", lambda params, lr, momentum, weight_decay: torch.optim.SGD(
    params, lr=lr, momentum=momentum, weight_decay=weight_decay))
OPTIMIZERS.register("lars", lambda params, lr, momentum, weight_decay: LARS(
    params, lr=lr, momentum=momentum, weight_decay=weight_decay))
OPTIMIZERS.register("adam", lambda params, lr, momentum, weight_decay: torch.optim.AdamW(
    params, lr=lr, weight_decay=weight_decay))

SCHEDULES = ("cosine", "cosine_restarts", "constant")


def build_optimizer(name: str, model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """The optimizer registered as ``name`` in :data:`OPTIMIZERS` over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return OPTIMIZERS.get(name)(params, lr, momentum, weight_decay)


def lr_multiplier(schedule: str, total_steps: int, warmup_steps: int = 0, restart_steps: int = 1) -> Callable[[int], float]:
    """Linear warmup, then ``cosine`` (to 0 at ``total_steps``), ``cosine_restarts`` (SGDR with a first
    period of ``restart_steps`` that doubles after each restart, as Keras' CosineDecayRestarts) or
    ``constant``."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = step - warmup_steps
        if schedule == "constant":
            return 1.0
        if schedule == "cosine":
            span = max(1, total_steps - warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(t, span) / span))
        if schedule == "cosine_restarts":
            period = max(1, restart_steps)
            while t >= period:
                t -= period
                period *= 2
            return 0.5 * (1 + math.cos(math.pi * t / period))
        raise ValueError(f"unknown schedule {schedule!r}")

    return f
