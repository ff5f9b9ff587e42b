"""One registry of backbones with one constructor signature: ``create_backbone(name, **options)``.

Example:
    >>> net = create_backbone("resnet18_cifar")
    >>> net.num_features
    512
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


def register_backbone(name: str, keras_conv_init: str = "glorot_uniform", keras_bn_eps: float = 1e-3):
    def wrap(fn: Callable[..., nn.Module]):
        BACKBONES[name] = fn
        KERAS_DEFAULTS[name] = (keras_conv_init, keras_bn_eps)
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
    ``defaults="keras"`` gives it the framework defaults of its Keras counterpart (:func:`apply_defaults`)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(BACKBONES))}")
    return apply_defaults(BACKBONES[name](**options), defaults, *KERAS_DEFAULTS[name])
