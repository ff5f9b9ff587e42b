"""LARS: layer-wise adaptive rate scaling over SGD with momentum (``--optimizer lars``).

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(4, 4)); w.grad = torch.ones(4, 4)
    >>> LARS([w], lr=1.0, momentum=0.0, trust_coefficient=0.01).step()
    >>> round(float(w.detach()[0, 0]), 4)  # moved by lr x trust (0.01 x |w| / |g| = 0.01) x grad
    0.99
"""

from __future__ import annotations

import torch


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
