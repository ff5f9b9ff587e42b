"""Independent float64 references of the label-free false-negative corrections, written from the
papers' formulas anchor by anchor (nothing shared with ``gsimclr.loss``):

- debiased (Chuang et al. 2020, Eq. for M positives): for an anchor with positives v_1..v_M and
  negatives u_1..u_N (similarities over the temperature),
  Ng = max((sum_j e^{u_j} - N tau+ mean_i e^{v_i}) / (1 - tau+), N e^{-1/t}),
  l = mean_i -log(e^{v_i} / (e^{v_i} + Ng));
- hard negative (Robinson et al. 2021): sum_j e^{u_j} replaced by the official code's
  ``(imp * neg).sum() / imp.mean()`` with ``imp = e^{beta u_j}``.

The anchors are every (view, image); the positives are the other views of the image; a candidate of
another image sharing the anchor's pseudo label is dropped (``--guidance mask``), so N counts the kept.
"""

from __future__ import annotations

import math

import torch


def reference_losses(views: torch.Tensor, t: float, tau_plus: float, beta: float | None = None,
                     pseudo: list[int] | None = None) -> tuple[torch.Tensor, int]:
    """Per-anchor losses (V, N) in float64 (differentiable with respect to ``views``), and how many
    anchors the clamp at N e^(-1/t) bound."""
    v, n, _ = views.shape
    z = views.double() / views.double().norm(dim=-1, keepdim=True)
    items = [(a, i) for a in range(v) for i in range(n)]
    out, clamped = [], 0
    for a, i in items:
        pos = [z[a, i] @ z[b, j] / t for (b, j) in items if j == i and b != a]
        neg = [z[a, i] @ z[b, j] / t for (b, j) in items
               if j != i and not (pseudo is not None and pseudo[j] == pseudo[i])]
        big_n = len(neg)
        pos_e = torch.stack(pos).exp()
        if big_n == 0:
            mass = torch.zeros((), dtype=torch.float64)
        elif beta is None:
            mass = torch.stack(neg).exp().sum()
        else:
            neg_e = torch.stack(neg).exp()
            imp = (beta * torch.stack(neg)).exp()
            mass = (imp * neg_e).sum() / imp.mean()
        estimate = (-tau_plus * big_n * pos_e.mean() + mass) / (1 - tau_plus)
        floor = big_n * math.e ** (-1 / t)
        clamped += int(estimate.item() < floor)
        ng = torch.clamp(estimate, min=floor)
        out.append(torch.stack([-torch.log(p / (p + ng)) for p in pos_e]).mean())
    return torch.stack(out).view(v, n), clamped
