"""How the augmented views of a batch pass through the network before NT-Xent.

- ``joint`` (default): one forward pass over all views stacked into one batch of V x N images, so
  BatchNorm normalises with statistics over every view;
- ``separate``: one forward pass per view, as the G-SimCLR notebooks (``zis = model(xis)``,
  ``zjs = model(xjs)``): BatchNorm statistics over the N images of one view, and the running
  statistics are updated once per view.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.BatchNorm1d(4))
    >>> views = torch.randn(2, 8, 3, 2, 2)
    >>> joint, separate = (VIEW_FORWARDS[name](net, views, 0.5, None) for name in ("joint", "separate"))
    >>> bool(joint != separate)  # BatchNorm statistics over 16 images, or over each view's 8
    True
"""

from __future__ import annotations

import torch

from gsimclr.loss.ntxent import nt_xent


def joint_views_loss(model, views: torch.Tensor, temperature: float, labels: torch.Tensor | None) -> torch.Tensor:
    """One forward pass over all views (V, N, C, H, W) stacked into one batch, then NT-Xent."""
    n_views, n = views.shape[:2]
    z = model(views.flatten(0, 1).contiguous(memory_format=torch.channels_last))
    return nt_xent(z.view(n_views, n, -1), temperature, labels)


def separate_views_loss(model, views: torch.Tensor, temperature: float, labels: torch.Tensor | None) -> torch.Tensor:
    """One forward pass per view (BatchNorm statistics per view), then NT-Xent."""
    z = torch.stack([model(v.contiguous(memory_format=torch.channels_last)) for v in views.unbind(0)])
    return nt_xent(z, temperature, labels)


VIEW_FORWARDS = {"joint": joint_views_loss, "separate": separate_views_loss}
