"""Alignment and uniformity (Wang and Isola, 2020) as a gsimclr loss plug-in (one file): positives pulled
together, every view's embeddings spread over the sphere. Reads no pseudo labels. Registered as the
debiased and hard-negative losses are (gsimclr/loss/__init__.py): one ``Loss`` record.

    gsimclr pretrain --plugin align_uniform_plugin --loss align_uniform --uniform-t 2 ...
"""

import torch
import torch.nn.functional as F

from gsimclr.loss import LOSSES, Loss
from gsimclr.options import Option


class AlignUniformLoss(torch.nn.Module):
    def __init__(self, t: float):
        super().__init__()
        self.t = t

    def forward(self, views, pseudo_labels=None):
        z = F.normalize(views.float(), dim=-1)                                  # (V, N, D)
        align = (z[0] - z[1:]).pow(2).sum(-1).mean()
        uniform = torch.stack([torch.pdist(v).pow(2).mul(-self.t).exp().mean().log() for v in z]).mean()
        return align + uniform


def build_align_uniform(cfg):
    return AlignUniformLoss(cfg.uniform_t)


LOSSES.register("align_uniform", Loss(
    "alignment + uniformity", build_align_uniform,
    options=(Option("uniform_t", 2.0, "align_uniform: the uniformity kernel's t", gt=0),),
    guidance=("none",), guidance_why="it reads no pseudo labels; use --guidance none"))
