"""A SimSiam-like method as a gsimclr plug-in (one file): SimCLR's backbone and projection head, a
predictor MLP and a stop-gradient; the loss is the negative cosine similarity of each view's prediction
with the other view's (detached) projection (Chen and He, 2021). No negatives, so no guidance.

    gsimclr pretrain --plugin simsiam_plugin --method simsiam --predictor-dim 64 ...
"""

import torch
import torch.nn.functional as F
from torch import nn

from gsimclr.methods import METHODS, Method
from gsimclr.methods.simclr import SimCLR
from gsimclr.options import Declares, Option


class SimSiam(SimCLR):
    compile_loss = False

    def n_views(self, cfg) -> int:
        return 2

    def build_model(self, cfg) -> nn.Module:
        model = super().build_model(cfg)          # backbone + projection head: features() and export as SimCLR's
        width = cfg.head_dims[-1]
        model.predictor = nn.Sequential(nn.Linear(width, cfg.predictor_dim), nn.BatchNorm1d(cfg.predictor_dim),
                                        nn.ReLU(inplace=True), nn.Linear(cfg.predictor_dim, width))
        return model

    def build_criterion(self, cfg, model):
        return None                               # the loss is the step itself

    def make_loss_fn(self, cfg, criterion):
        def simsiam_loss(model, views, labels, index):
            z = torch.stack([model(v) for v in views])               # (2, N, D) projections
            p = model.predictor(z.flatten(0, 1)).view_as(z)           # (2, N, D) predictions
            sim = F.cosine_similarity(p[0], z[1].detach(), dim=-1) + F.cosine_similarity(p[1], z[0].detach(), dim=-1)
            return -sim.mean() / 2

        return simsiam_loss

    def chance_loss(self, cfg, batch_sizes):
        return None                               # collapse gives -1, the best loss: not a chance level


def _views_two(cfg):
    return None if cfg.views == 2 else f"--views {cfg.views}: SimSiam compares two views"


METHODS.register("simsiam", Method("simsiam", "SimSiam", guided=False, recipe=f"{__name__}:SimSiam",
                                   description="SimSiam: a predictor and a stop-gradient, no negatives",
                                   loss_title="negative cosine similarity", default=False),
                 declares=Declares(options=(Option("predictor_dim", 64, "SimSiam: hidden width of the predictor",
                                                   min=1),),
                                   checks=(_views_two,)))
