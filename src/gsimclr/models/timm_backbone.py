"""Backbones from timm by name (``--model timm:NAME``): any timm model without its classifier.

``timm:NAME`` builds ``timm.create_model(NAME, pretrained=False, num_classes=0)``; ViTs and other
models with a fixed input size (anything accepting ``img_size``) are built for the run's image size.
``timm:NAME_cifar`` is the CIFAR-stem variant, which applies to timm's ResNet family only (resnet18,
resnet50, resnext, ...): conv1 becomes a 3x3 stride-1 convolution and the max-pool an identity, as in
our ``resnet18_cifar``. For 32 px images with a ViT pass a smaller patch through ``patch_size``
(e.g. 4: 8x8 tokens); ConvNeXt's 4x4 patchify stem has no CIFAR variant here and gives a 1x1 map
at 32 px after its three downsamplings.

The timm model is kept as ``self.net`` unchanged, so ``self.net.state_dict()`` loads with
``strict=True`` into ``timm.create_model(NAME, num_classes=0, **same options)`` (plus the same stem
change for ``_cifar``), which is what :mod:`gsimclr.export` writes.

Example:
    >>> import torch
    >>> net = TimmBackbone("resnet18_cifar")  # doctest: +SKIP
    >>> net(torch.zeros(2, 3, 32, 32)).shape  # doctest: +SKIP
    torch.Size([2, 512])
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from gsimclr.errors import UserError

PREFIX = "timm:"
CIFAR_SUFFIX = "_cifar"


def import_timm():
    """The timm module, or a one-line UserError saying how to install it."""
    try:
        import timm
    except ImportError:
        raise UserError("timm backbones need timm: pip install 'gsimclr[timm]'") from None
    return timm


def split_cifar(name: str) -> tuple[str, bool]:
    """(timm name, whether the CIFAR stem was asked for) for ``NAME`` or ``NAME_cifar``."""
    if name.endswith(CIFAR_SUFFIX):
        return name[: -len(CIFAR_SUFFIX)], True
    return name, False


def timm_options(name: str, image_size: int | None = None, **options) -> dict:
    """Keyword arguments for ``timm.create_model``: ``num_classes=0``, ``img_size`` for models that take
    one (ViT, Swin, ...), and the given ones that the model's constructor accepts (e.g. ``patch_size``)."""
    timm = import_timm()
    kwargs: dict = {"num_classes": 0}
    cls = _model_class(name) if timm.models.is_model(name) else None
    accepted = set(inspect.signature(cls.__init__).parameters) if cls is not None else set()
    if image_size and "img_size" in accepted:
        kwargs["img_size"] = image_size
    for key, value in options.items():
        if key in accepted and value is not None:
            kwargs[key] = value
    return kwargs


def _model_class(name: str):
    """The nn.Module class timm builds for ``name`` (read from a meta-device instance, no weights)."""
    timm = import_timm()
    try:
        with torch.device("meta"):
            return type(timm.create_model(name, pretrained=False, num_classes=0))
    except Exception:
        return None


def apply_cifar_stem(net: nn.Module, name: str) -> None:
    """conv1 -> 3x3 stride 1 (same width), max-pool -> identity; a UserError for a model without that stem."""
    conv = getattr(net, "conv1", None)
    if not isinstance(conv, nn.Conv2d) or not hasattr(net, "maxpool"):
        raise UserError(f"--model timm:{name}{CIFAR_SUFFIX}: the CIFAR stem applies to timm ResNets only "
                        f"(a 'conv1' convolution and a 'maxpool'); use timm:{name}")
    net.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None)
    net.maxpool = nn.Identity()


def check_timm_name(name: str) -> None:
    """A UserError unless timm is installed and knows ``name`` (``NAME`` or ``NAME_cifar``)."""
    timm = import_timm()
    base, _ = split_cifar(name)
    if not timm.models.is_model(base):
        raise UserError(f"--model timm:{name}: timm has no model {base!r} (see timm.list_models())")


def build_timm_model(name: str, image_size: int | None = None, **options) -> tuple[nn.Module, dict]:
    """The bare timm model for ``name`` (``NAME`` or ``NAME_cifar``) without a classifier, and the
    keyword arguments it was created with."""
    timm = import_timm()
    check_timm_name(name)
    base, cifar = split_cifar(name)
    kwargs = timm_options(base, image_size, **options)
    net = timm.create_model(base, pretrained=False, **kwargs)
    if cifar:
        apply_cifar_stem(net, base)
    return net, kwargs


class TimmBackbone(nn.Module):
    """A timm model without its classifier: images (N, 3, H, W) -> pooled features (N, num_features)."""

    def __init__(self, name: str, image_size: int | None = None, **options):
        super().__init__()
        self.net, self.create_kwargs = build_timm_model(name, image_size, **options)
        self.num_features = int(self.net.num_features)
        self.timm_name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
