from gsimclr.models.heads import POINTS, ProjectionHead
from gsimclr.models.registry import (BACKBONE_FAMILIES, BACKBONES, backbone_names, create_backbone, is_backbone,
                                     register_backbone, register_backbone_family)
from gsimclr.models.simclr import SimCLRModel

__all__ = ["BACKBONE_FAMILIES", "BACKBONES", "backbone_names", "is_backbone", "register_backbone_family", "POINTS", "ProjectionHead", "SimCLRModel", "create_backbone", "register_backbone"]
