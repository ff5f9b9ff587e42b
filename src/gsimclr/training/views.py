"""How the augmented views of a batch pass through the network before NT-Xent.

Each maps ``(model, views (V, N, C, H, W))`` to embeddings ``(V, N, D)`` for the criterion.

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
    >>> joint, separate = (VIEW_FORWARDS[name](net, views) for name in ("joint", "separate"))
    >>> joint.shape, bool((joint - separate).abs().max() > 0.01)  # BatchNorm over 16 images, or each view's 8
    (torch.Size([2, 8, 4]), True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# No PyTorch import at module level, so that the command line checks --views-forward before importing it.


def joint_views(model, views: torch.Tensor) -> torch.Tensor:
    """Embeddings (V, N, D) of views (V, N, C, H, W) from one forward pass over all V x N images."""
    import torch

    n_views, n = views.shape[:2]
    z = model(views.flatten(0, 1).contiguous(memory_format=torch.channels_last))
    return z.view(n_views, n, -1)


def separate_views(model, views: torch.Tensor) -> torch.Tensor:
    """Embeddings (V, N, D) of views (V, N, C, H, W) from one forward pass per view."""
    import torch

    return torch.stack([model(v.contiguous(memory_format=torch.channels_last)) for v in views.unbind(0)])


VIEW_FORWARDS = {"joint": joint_views, "separate": separate_views}
