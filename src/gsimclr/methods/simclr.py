"""SimCLR (and G-SimCLR, the same parts fed guided batches and pseudo labels): ``--views`` augmented
views of every image through one network, the ``--loss`` over the batch (NT-Xent by default; every
anchor has V - 1 positives).

Example:
    >>> from gsimclr.config import load_config
    >>> from gsimclr.methods import METHODS
    >>> recipe = METHODS["simclr"].parts()
    >>> cfg = load_config(None, {"views": 3})
    >>> recipe.n_views(cfg), round(recipe.chance_loss(cfg, [4, 4]), 4)   # log(3 x 4 - 1)
    (3, 2.3979)
"""

from __future__ import annotations

from typing import Sequence

from gsimclr.loss import build_criterion, check_loss
from gsimclr.methods.base import Recipe
from gsimclr.models.simclr import SimCLRModel, backbone_options
from gsimclr.methods.views import VIEW_FORWARDS


class SimCLR(Recipe):
    def check(self, cfg, n_images: int) -> None:
        check_loss(cfg)  # the --loss entry's checks (--guidance against --loss; the configuration ran them first)

    def n_views(self, cfg) -> int:
        return cfg.views

    def build_model(self, cfg) -> SimCLRModel:
        return SimCLRModel.build(cfg.model, cfg.head_dims, cfg.head_batch_norm, **backbone_options(cfg))

    def build_criterion(self, cfg, model):
        return build_criterion(cfg)

    def make_loss_fn(self, cfg, criterion):
        """The views (V, N, C, H, W) through the model, by default in one forward pass stacked into one
        batch (``--views-forward``, :data:`gsimclr.methods.views.VIEW_FORWARDS`), then the criterion
        on (V, N, D)."""
        forward = VIEW_FORWARDS[cfg.views_forward]

        def contrastive_loss(model, views, labels, index):
            return criterion(forward(model, views), pseudo_labels=labels)

        return contrastive_loss

    def chance_loss(self, cfg, batch_sizes: Sequence[int]) -> float | None:
        """The ``--loss``'s mean loss of collapsed embeddings (its criterion's ``chance_loss``; NT-Xent: every
        anchor's V - 1 positives among V b - 1 equal candidates), None for a loss that gives none."""
        chance = getattr(build_criterion(cfg), "chance_loss", None)
        return None if chance is None else chance(batch_sizes, self.n_views(cfg))
