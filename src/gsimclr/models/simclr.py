"""The SimCLR model: a backbone followed by a projection head.

Example:
    >>> import torch
    >>> model = SimCLRModel.build("paper_resnet", head_dims=[256, 128, 50], n_blocks=0)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 50])
    >>> {k: v.shape[1] for k, v in model.features(torch.zeros(2, 3, 32, 32)).items()}
    {'P1': 128, 'P2': 256, 'P3': 256}
"""

from __future__ import annotations

import torch
from torch import nn

from gsimclr.models.heads import ProjectionHead
from gsimclr.models.registry import apply_defaults, create_backbone


def backbone_options(cfg) -> dict:
    """What :func:`gsimclr.models.create_backbone` needs from a config (each backbone takes what it uses)."""
    return {"n_blocks": cfg.n_blocks, "image_size": cfg.image_size, "patch_size": cfg.patch_size,
            "shortcut_bn": cfg.shortcut_bn, "downsample_in_1x1": cfg.downsample_in_1x1, "defaults": cfg.defaults}


class SimCLRModel(nn.Module):
    def __init__(self, backbone: nn.Module, head: ProjectionHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    @classmethod
    def build(cls, model: str, head_dims: list[int], head_batch_norm: bool = False, defaults: str = "torch",
              **options) -> "SimCLRModel":
        """Backbone ``model`` (built with ``options``) and a head of ``head_dims``; ``defaults``
        (torch's or Keras' initialisers and BatchNorm settings) applies to both
        (:func:`gsimclr.models.registry.apply_defaults`)."""
        backbone = create_backbone(model, defaults, **options)
        head = apply_defaults(ProjectionHead(backbone.num_features, head_dims, head_batch_norm), defaults)
        return cls(backbone, head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features at P1, P2 and P3 for evaluation."""
        return self.head(self.backbone(x), return_features=True)[1]

    def feature_dims(self) -> dict[str, int]:
        return self.head.feature_dims(self.backbone.num_features)
