"""Backbones (:mod:`gsimclr.models.registry`), projection heads and the SimCLR model.

The registry is imported eagerly (it imports no PyTorch, so option checks stay fast); the modules
that build networks are imported on first use.
"""

from gsimclr.models.registry import (BACKBONE_FAMILIES, BACKBONES, backbone_names, create_backbone, is_backbone,
                                     register_backbone, register_backbone_family)

_LAZY = {"POINTS": "gsimclr.models.heads", "ProjectionHead": "gsimclr.models.heads",
         "SimCLRModel": "gsimclr.models.simclr"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gsimclr.models' has no attribute {name!r}")


__all__ = ["BACKBONE_FAMILIES", "BACKBONES", "backbone_names", "is_backbone", "register_backbone_family", "POINTS",
           "ProjectionHead", "SimCLRModel", "create_backbone", "register_backbone"]
