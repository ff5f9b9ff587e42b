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
from typing import TYPE_CHECKING, Callable

from gsimclr.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

# No PyTorch import at module level: the command line checks --optimizer and --schedule against the
# names below before PyTorch is imported; each builder imports what it builds.


def _sgd(params, lr: float, momentum: float, weight_decay: float):
    import torch

    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _lars(params, lr: float, momentum: float, weight_decay: float):
    from gsimclr.training.lars import LARS

    return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _adam(params, lr: float, momentum: float, weight_decay: float):
    import torch

    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("sgd", _sgd)
OPTIMIZERS.register("lars", _lars)
OPTIMIZERS.register("adam", _adam)

SCHEDULES = ("cosine", "cosine_restarts", "constant")


def build_optimizer(name: str, model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """The optimizer registered as ``name`` in :data:`OPTIMIZERS` over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return OPTIMIZERS.get(name)(params, lr, momentum, weight_decay)


def lr_multiplier(schedule: str, total_steps: int, warmup_steps: int = 0, restart_steps: int = 1,
                  t_mul: float = 2.0, m_mul: float = 1.0, decay_steps: int = 0) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step ``step`` (counted from 0 over the whole run).

    Linear warmup over ``warmup_steps``, then

    - ``cosine``: half a cosine to 0 over ``decay_steps`` after the warmup (0: to the end of the run,
      ``total_steps``), then 0: Keras' ``CosineDecay(lr, decay_steps)`` (alpha 0) without warmup;
    - ``cosine_restarts``: Keras' ``CosineDecayRestarts(lr, first_decay_steps=restart_steps,
      t_mul, m_mul)`` (alpha 0): a cosine over ``restart_steps``, then restarts whose periods are
      ``t_mul`` times the previous one and whose peaks are ``m_mul`` times the previous one;
    - ``constant``.

    Keras evaluates its schedule at ``optimizer.iterations`` before the update, so the first step uses
    step 0, as here.

    Example:
        >>> f = lr_multiplier("cosine_restarts", 10_000, restart_steps=1000)  # the CIFAR notebook's
        >>> f(0), round(f(500), 3), f(1000), round(f(2000), 3), f(3000)
        (1.0, 0.5, 1.0, 0.5, 1.0)
        >>> g = lr_multiplier("cosine", 3800, decay_steps=1000)  # the ImageNet notebooks'
        >>> g(0), round(g(500), 3), g(1000), g(3799)
        (1.0, 0.5, 0.0, 0.0)
    """
    if t_mul < 1:  # Keras' closed form is undefined past the finite sum of shrinking periods
        raise ValueError(f"t_mul must be >= 1, got {t_mul}")

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = step - warmup_steps
        if schedule == "constant":
            return 1.0
        if schedule == "cosine":
            span = max(1, decay_steps or total_steps - warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(t, span) / span))
        if schedule == "cosine_restarts":
            period, peak = float(max(1, restart_steps)), 1.0
            while t >= period:  # exact in integer steps, unlike Keras' closed form through log(), same values
                t -= period
                period *= t_mul
                peak *= m_mul
            return 0.5 * peak * (1 + math.cos(math.pi * t / period))
        raise ValueError(f"unknown schedule {schedule!r}")

    return f
