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

from gsimclr.models.resnet import PaperResNet, TorchvisionResNet, keras_init, set_batch_norm

BACKBONES: dict[str, Callable[..., nn.Module]] = {}
# the Keras model each backbone stands for: its convolutions' initialiser and its BatchNorm epsilon
KERAS_DEFAULTS: dict[str, tuple[str, float]] = {}
DEFAULTS = ("torch", "keras")
KERAS_BN_MOMENTUM = 0.01  # Keras' BatchNormalization(momentum=0.99) in torch's convention
# prefix -> constructor taking (the name after the prefix, **options)
BACKBONE_FAMILIES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str, keras_conv_init: str = "glorot_uniform", keras_bn_eps: float = 1e-3):
    def wrap(fn: Callable[..., nn.Module]):
        BACKBONES[name] = fn
        KERAS_DEFAULTS[name] = (keras_conv_init, keras_bn_eps)
        return fn

    return wrap


def register_backbone_family(prefix: str):
    """Register a constructor for every name ``PREFIX:NAME``; it receives ``NAME`` and the options."""
    def wrap(fn: Callable[..., nn.Module]):
        BACKBONE_FAMILIES[prefix] = fn
        return fn

    return wrap


@register_backbone("paper_resnet", keras_conv_init="he_normal")
def _paper_resnet(n_blocks: int = 3, shortcut_bn: bool = True, pre_pool_bn: bool = False, **_) -> nn.Module:
    return PaperResNet(n_blocks=n_blocks, shortcut_bn=shortcut_bn, pre_pool_bn=pre_pool_bn)


@register_backbone("resnet18_cifar", keras_bn_eps=1.001e-5)
def _resnet18_cifar(**_) -> nn.Module:
    return TorchvisionResNet("resnet18", cifar_stem=True)


@register_backbone("resnet18", keras_bn_eps=1.001e-5)
def _resnet18(**_) -> nn.Module:
    return TorchvisionResNet("resnet18")


@register_backbone("resnet50", keras_bn_eps=1.001e-5)  # keras.applications.ResNet50's epsilon
def _resnet50(downsample_in_1x1: bool = False, **_) -> nn.Module:
    return TorchvisionResNet("resnet50", downsample_in_1x1=downsample_in_1x1)


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


def apply_defaults(module: nn.Module, defaults: str = "torch", conv_init: str = "glorot_uniform",
                   bn_eps: float = 1e-3) -> nn.Module:
    """``defaults="keras"``: the framework defaults of the notebooks' Keras layers on ``module``:
    Keras' initialisers (:func:`keras_init`, ``conv_init`` for convolutions) and BatchNorm momentum
    0.99 (torch's 0.01) with epsilon ``bn_eps``; ``"torch"`` leaves torch's. Returns ``module``."""
    if defaults not in DEFAULTS:
        raise ValueError(f"unknown defaults {defaults!r}; choose one of {', '.join(DEFAULTS)}")
    if defaults == "keras":
        keras_init(module, conv_init)
        set_batch_norm(module, KERAS_BN_MOMENTUM, bn_eps)
    return module


def create_backbone(name: str, defaults: str = "torch", **options) -> nn.Module:
    """Build a registered backbone; unknown names raise ValueError listing the known ones.
    Options a backbone does not use (``n_blocks`` for a torchvision ResNet) are ignored.
    ``defaults="keras"`` gives a registered backbone the framework defaults of its Keras counterpart
    (:func:`apply_defaults`; a family's backbones, e.g. timm's, keep their own)."""
    family = _family(name)
    if family is not None:
        return BACKBONE_FAMILIES[family[0]](family[1], **options)
    if name not in BACKBONES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(backbone_names())}")
    return apply_defaults(BACKBONES[name](**options), defaults, *KERAS_DEFAULTS[name])
