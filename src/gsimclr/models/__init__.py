from gsimclr.models.heads import POINTS, ProjectionHead
from gsimclr.models.registry import BACKBONES, create_backbone, register_backbone
from gsimclr.models.simclr import SimCLRModel

__all__ = ["BACKBONES", "POINTS", "ProjectionHead", "SimCLRModel", "create_backbone", "register_backbone"]
