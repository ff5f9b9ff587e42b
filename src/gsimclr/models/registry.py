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
# the convolution initialiser of the Keras model each backbone stands for (init="keras")
KERAS_CONV_INIT: dict[str, str] = {}
INITS = ("torch", "keras")


def register_backbone(name: str, keras_conv_init: str = "glorot_uniform"):
    def wrap(fn: Callable[..., nn.Module]):
        BACKBONES[name] = fn
        KERAS_CONV_INIT[name] = keras_conv_init
        return fn

    return wrap


@register_backbone("paper_resnet", keras_conv_init="he_normal")
def _paper_resnet(n_blocks: int = 3, shortcut_bn: bool = True, pre_pool_bn: bool = False, **_) -> nn.Module:
    return PaperResNet(n_blocks=n_blocks, shortcut_bn=shortcut_bn, pre_pool_bn=pre_pool_bn)


@register_backbone("resnet18_cifar")
def _resnet18_cifar(**_) -> nn.Module:
    return TorchvisionResNet("resnet18", cifar_stem=True)


@register_backbone("resnet18")
def _resnet18(**_) -> nn.Module:
    return TorchvisionResNet("resnet18")


@register_backbone("resnet50")
def _resnet50(downsample_in_1x1: bool = False, **_) -> nn.Module:
    return TorchvisionResNet("resnet50", downsample_in_1x1=downsample_in_1x1)


def apply_init(module: nn.Module, init: str = "torch", conv: str = "glorot_uniform",
               bn_momentum: float | None = None, bn_eps: float | None = None) -> nn.Module:
    """``init="keras"``: Keras' initialisers (:func:`keras_init` with ``conv`` for convolutions);
    ``"torch"`` keeps torch's. Then every BatchNorm's ``momentum``/``eps`` (None: unchanged)."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    if init == "keras":
        keras_init(module, conv)
    return set_batch_norm(module, bn_momentum, bn_eps)


def create_backbone(name: str, init: str = "torch", bn_momentum: float | None = None, bn_eps: float | None = None,
                    **options) -> nn.Module:
    """Build a registered backbone; unknown names raise ValueError listing the known ones.
    Options a backbone does not use (``n_blocks`` for a torchvision ResNet) are ignored.
    ``init``, ``bn_momentum`` and ``bn_eps`` apply to every backbone (see :func:`apply_init`)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(BACKBONES))}")
    return apply_init(BACKBONES[name](**options), init, KERAS_CONV_INIT[name], bn_momentum, bn_eps)
