"""One registry of backbones with one constructor signature: ``create_backbone(name, **options)``.

Example:
    >>> net = create_backbone("resnet18_cifar")
    >>> net.num_features
    512
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from gsimclr.models.resnet import PaperResNet, TorchvisionResNet

BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str):
    def wrap(fn: Callable[..., nn.Module]):
        BACKBONES[name] = fn
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


def create_backbone(name: str, **options) -> nn.Module:
    """Build a registered backbone; unknown names raise ValueError listing the known ones.
    Options a backbone does not use (``n_blocks`` for a torchvision ResNet) are ignored."""
    if name not in BACKBONES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](**options)
