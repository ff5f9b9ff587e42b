"""Projection heads that can return their intermediate features (the paper's P1 and P2).

The head is a stack of linear stages; every stage but the last is followed by (BatchNorm and) ReLU.
P1 is the output of the head minus its last stage, P2 minus its last two stages, and P3 is the
backbone's output (the head's input).

Example:
    >>> import torch
    >>> head = ProjectionHead(256, [256, 128, 50])        # the paper's head
    >>> z, feats = head(torch.zeros(4, 256), return_features=True)
    >>> z.shape, feats["P1"].shape, feats["P2"].shape, feats["P3"].shape
    (torch.Size([4, 50]), torch.Size([4, 128]), torch.Size([4, 256]), torch.Size([4, 256]))
    >>> ProjectionHead(512, [2048, 128], batch_norm=True)  # the standard SimCLR head  # doctest: +ELLIPSIS
    ProjectionHead(...)
"""

from __future__ import annotations

import torch
from torch import nn

POINTS = ("P1", "P2", "P3")


class ProjectionHead(nn.Module):
    def __init__(self, in_dim: int, dims: list[int], batch_norm: bool = False):
        super().__init__()
        if not dims:
            raise ValueError("a projection head needs at least one layer")
        stages = []
        for i, out in enumerate(dims):
            last = i == len(dims) - 1
            layers: list[nn.Module] = [nn.Linear(in_dim, out, bias=not (batch_norm and not last))]
            if not last:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(out))
                layers.append(nn.ReLU(inplace=True))
            stages.append(nn.Sequential(*layers))
            in_dim = out
        self.stages = nn.ModuleList(stages)
        self.dims = list(dims)

    def feature_dims(self, in_dim: int) -> dict[str, int]:
        """Widths of the features at P1, P2 and P3 (P2 is P3 for a head of fewer than three layers)."""
        widths = [in_dim] + self.dims
        return {p: widths[max(len(widths) - 2 - i, 0)] for i, p in enumerate(POINTS)}

    def forward(self, x: torch.Tensor, return_features: bool = False):
        outputs = [x]
        for stage in self.stages:
            outputs.append(stage(outputs[-1]))
        if not return_features:
            return outputs[-1]
        feats = {p: outputs[max(len(outputs) - 2 - i, 0)] for i, p in enumerate(POINTS)}
        feats["P3"] = x
        return outputs[-1], feats
