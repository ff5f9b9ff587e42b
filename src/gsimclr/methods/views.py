"""How the augmented views of a batch pass through the network before NT-Xent.

Each maps ``(model, views (V, N, C, H, W))`` to embeddings ``(V, N, D)`` for the criterion.

- ``joint`` (default): one forward pass over all views stacked into one batch of V x N images, so
  BatchNorm normalises with statistics over every view;
- ``separate``: one forward pass per view, as the G-SimCLR notebooks (``zis = model(xis)``,
  ``zjs = model(xjs)``): BatchNorm statistics over the N images of one view, and the running
  statistics are updated once per view.

``--views`` is bounded by the memory it needs (:func:`check_views_memory`): a step's augmented views
alone are V x N x 3 x S x S float32 values, and when they would take more than half of the memory
they are made in (the machine's, or the GPU's), the command is refused before any work.

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

import os
from typing import TYPE_CHECKING

from gsimclr.errors import UserError

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


def machine_memory() -> int | None:
    """This machine's physical memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_views_memory(n_views: int, batch_size: int, image_size: int, memory: int | None = None,
                       where: str = "this machine's", activations: int = 0) -> None:
    """A one-line UserError, with the most views that fit, when one step's views would need more than
    ``memory`` bytes (default: :func:`machine_memory`; ``where`` names it): the views themselves
    (``n_views`` x ``batch_size`` x 3 x ``image_size``² float32 values) and ``activations`` float32
    values per view of an image that the network keeps for the backward pass (:func:`activation_values`).
    A lower bound of what the step needs: the augmentation and the gradients need more besides.

    Example:
        >>> check_views_memory(100_000, 128, 16, memory=16 * 2**30)
        Traceback (most recent call last):
        ...
        gsimclr.errors.UserError: --views 100000 with --batch-size 128 at --image-size 16: one step would need at least 39.3 GB for its augmented views, more than this machine's 17.2 GB of memory; give fewer --views (the views alone would fit at most 43690; the network needs more besides)
    """
    memory = machine_memory() if memory is None else memory
    per_view = batch_size * (3 * image_size * image_size + activations) * 4
    if memory is None or n_views * per_view <= memory:
        return
    most = memory // per_view
    if most < 2:
        fix = "give a smaller --batch-size or --image-size"
    elif activations:
        fix = f"give --views {most} or less"
    else:   # the network is not built yet: what fits the views alone is more than what fits a step
        fix = f"give fewer --views (the views alone would fit at most {most}; the network needs more besides)"
    what = "its augmented views" + (" and the network's activations for them" if activations else "")
    raise UserError(f"--views {n_views} with --batch-size {batch_size} at --image-size {image_size}: one step would "
                    f"need at least {n_views * per_view / 1e9:.1f} GB for {what}, more than {where} "
                    f"{memory / 1e9:.1f} GB of memory; {fix}")


def activation_values(model, image_size: int, device) -> int:
    """The values the network's layers output for one image (what a training step keeps per view for
    the backward pass, at the least), counted by forward hooks on one evaluation pass."""
    import torch

    total = 0

    def count(module, inputs, output) -> None:
        nonlocal total
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if torch.is_tensor(t):
                total += t[0].numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total
