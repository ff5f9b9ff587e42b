"""Alignment and uniformity (Wang and Isola, 2020) as a gsimclr loss plug-in (one file): positives pulled
together, every view's embeddings spread over the sphere. Reads no pseudo labels.

    gsimclr pretrain --plugin align_uniform_plugin --loss align_uniform --uniform-t 2 ...
"""

import torch
import torch.nn.functional as F

from gsimclr.loss import LOSSES
from gsimclr.options import Declares, Option


class AlignUniformLoss(torch.nn.Module):
    def __init__(self, t: float):
        super().__init__()
        self.t = t

    def forward(self, views, pseudo_labels=None):
        z = F.normalize(views.float(), dim=-1)                                  # (V, N, D)
        align = (z[0] - z[1:]).pow(2).sum(-1).mean()
        uniform = torch.stack([torch.pdist(v).pow(2).mul(-self.t).exp().mean().log() for v in z]).mean()
        return align + uniform


def _no_guidance(cfg):
    if cfg.guidance != "none":
        return f"--guidance {cfg.guidance}: --loss align_uniform reads no pseudo labels (use --guidance none)"
    return None


@LOSSES.register("align_uniform", declares=Declares(
    options=(Option("uniform_t", 2.0, "align_uniform: the uniformity kernel's t", gt=0),),
    checks=(_no_guidance,), titles={"loss": "alignment + uniformity"}))
def build_align_uniform(cfg):
    return AlignUniformLoss(cfg.uniform_t)
