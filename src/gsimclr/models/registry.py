"""One registry of backbones with one constructor signature: ``create_backbone(name, **options)``.

Names are either registered one by one (``BACKBONES``) or belong to a family registered by prefix
(``BACKBONE_FAMILIES``): ``timm:NAME`` builds any timm model (see :mod:`gsimclr.models.timm_backbone`).

Example:
    >>> net = create_backbone("resnet18_cifar")
    >>> net.num_features
    512
    >>> is_backbone("timm:vit_tiny_patch16_224"), is_backbone("vgg")
    (True, False)
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from gsimclr.models.resnet import PaperResNet, TorchvisionResNet

BACKBONES: dict[str, Callable[..., nn.Module]] = {}
# prefix -> constructor taking (the name after the prefix, **options)
BACKBONE_FAMILIES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str):
    def wrap(fn: Callable[..., nn.Module]):
        BACKBONES[name] = fn
        return fn

    return wrap


def register_backbone_family(prefix: str):
    """Register a constructor for every name ``PREFIX:NAME``; it receives ``NAME`` and the options."""
    def wrap(fn: Callable[..., nn.Module]):
        BACKBONE_FAMILIES[prefix] = fn
        return fn

    return wrap


@register_backbone("paper_resnet")
def _paper_resnet(n_blocks: int = 3, **_) -> nn.Module:
    return PaperResNet(n_blocks=n_blocks)


@register_backbone("resnet18_cifar")
def _resnet18_cifar(**_) -> nn.Module:
    return TorchvisionResNet("resnet18", cifar_stem=True)


@register_backbone("resnet18")
def _resnet18(**_) -> nn.Module:
    return TorchvisionResNet("resnet18")


@register_backbone("resnet50")
def _resnet50(**_) -> nn.Module:
    return TorchvisionResNet("resnet50")


@register_backbone_family("timm")
def _timm(name: str, image_size: int | None = None, patch_size: int | None = None, **_) -> nn.Module:
    from gsimclr.models.timm_backbone import TimmBackbone

    return TimmBackbone(name, image_size, patch_size=patch_size)


def _family(name: str) -> tuple[str, str] | None:
    prefix, sep, rest = name.partition(":")
    return (prefix, rest) if sep and prefix in BACKBONE_FAMILIES and rest else None


def is_backbone(name: str) -> bool:
    """Whether ``name`` is a registered backbone or has a registered family's prefix (not checked further)."""
    return name in BACKBONES or _family(name) is not None


def backbone_names() -> list[str]:
    """The registered names and, for each family, ``PREFIX:NAME``: what a help text lists."""
    return sorted(BACKBONES) + [f"{p}:NAME" for p in sorted(BACKBONE_FAMILIES)]


class _BackboneChoices:
    """The names an option may take (:func:`backbone_names`, read when iterated), for ``Config.model``'s choices."""

    def __iter__(self):
        return iter(backbone_names())


BACKBONE_CHOICES = _BackboneChoices()


def create_backbone(name: str, **options) -> nn.Module:
    """Build a registered backbone; unknown names raise ValueError listing the known ones.
    Options a backbone does not use (``n_blocks`` for a torchvision ResNet) are ignored."""
    family = _family(name)
    if family is not None:
        return BACKBONE_FAMILIES[family[0]](family[1], **options)
    if name not in BACKBONES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(backbone_names())}")
    return BACKBONES[name](**options)
