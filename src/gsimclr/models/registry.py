"""One registry of backbones with one constructor signature: ``create_backbone(name, **options)``.

Each entry (:class:`Backbone`) carries what is needed to build it, the Keras defaults it stands for
and its **export target**: the model of another library its weights load into with ``strict=True``
(read by :mod:`gsimclr.export`). Names are either registered one by one (:data:`BACKBONES`) or belong
to a family registered by prefix (:data:`BACKBONE_FAMILIES`): ``timm:NAME`` builds any timm model
(see :mod:`gsimclr.models.timm_backbone`). Adding a backbone is one :func:`register_backbone` call;
``--model``'s choices and help, the export and ``create_backbone`` read the registries.

This module imports no PyTorch itself (the constructors do), so option checks stay fast.

Example:
    >>> net = create_backbone("resnet18_cifar")
    >>> net.num_features
    512
    >>> is_backbone("timm:vit_tiny_patch16_224"), is_backbone("vgg")
    (True, False)
    >>> export_target("resnet18_cifar", {})["cifar_stem"]
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from gsimclr.errors import UserError
from gsimclr.options import Declares
from gsimclr.registry import Registry

if TYPE_CHECKING:
    from torch import nn

ExportTarget = Callable[[str, dict], dict]
"""``(name, options) -> {"library", "name", "kwargs", "cifar_stem", ...}``: the model a backbone's weights
load into (``options``: the backbone options it was built with, e.g. ``n_blocks``, ``image_size``,
``timm_kwargs``); ``library`` is a key of :data:`gsimclr.export.EXPORT_TARGETS`."""


@dataclass(frozen=True)
class Backbone:
    """A registered backbone: its constructor (``**options`` -> module with ``num_features``), the Keras
    initialiser and BatchNorm epsilon of the model it stands for, its export target and a help line."""

    build: Callable[..., "nn.Module"]
    keras_conv_init: str = "glorot_uniform"
    keras_bn_eps: float = 1e-3
    export: ExportTarget | None = None
    help: str = ""

    def __call__(self, **options) -> "nn.Module":
        return self.build(**options)


@dataclass(frozen=True)
class BackboneFamily:
    """Backbones named ``PREFIX:NAME``: ``build(NAME, **options)``, ``export(NAME, options)``,
    ``check(NAME)`` (a UserError for an unknown NAME, run while options are validated)."""

    build: Callable[..., "nn.Module"]
    export: ExportTarget | None = None
    check: Callable[[str], None] | None = None
    help: str = ""


_TRAINING = ("run", "pretrain", "supervised")
BACKBONES: Registry = Registry("backbone", option="model", section="model", commands=_TRAINING)
BACKBONE_FAMILIES: Registry = Registry("backbone family", option="model", pick=lambda name: name.partition(":")[0],
                                       section="model", commands=_TRAINING)
DEFAULTS = ("torch", "keras")
KERAS_BN_MOMENTUM = 0.01  # Keras' BatchNormalization(momentum=0.99) in torch's convention

# The denoising autoencoders of the pseudo labels (gsimclr.models.autoencoder), named here so that
# --ae-model and --ae-decoder are checked before PyTorch is imported: (encoder widths, kernel size)
AUTOENCODERS = {"shallow": ((32, 64, 128), 3), "deep": ((64, 128, 256, 512, 1024), 5)}
AUTOENCODER_DECODERS = ("conv_first", "upsample_first")


def register_backbone(name: str, keras_conv_init: str = "glorot_uniform", keras_bn_eps: float = 1e-3,
                      export: ExportTarget | None = None, help: str = "", declares: Declares | None = None):
    """Decorator registering a constructor as backbone ``name`` (see :class:`Backbone`); ``declares``:
    its options (``--model`` section; of ``run``, ``pretrain`` and ``supervised``), checks and titles."""
    def wrap(fn: Callable[..., "nn.Module"]):
        BACKBONES.register(name, Backbone(fn, keras_conv_init, keras_bn_eps, export, help), declares=declares)
        return fn

    return wrap


def register_backbone_family(prefix: str, export: ExportTarget | None = None,
                             check: Callable[[str], None] | None = None, help: str = "",
                             declares: Declares | None = None):
    """Register a constructor for every name ``PREFIX:NAME``; it receives ``NAME`` and the options."""
    def wrap(fn: Callable[..., "nn.Module"]):
        BACKBONE_FAMILIES.register(prefix, BackboneFamily(fn, export, check, help), declares=declares)
        return fn

    return wrap


# ------------------------------------------------------------------------------- export targets


def _torchvision_target(name: str, options: dict) -> dict:
    target = {"library": "torchvision", "name": name.removesuffix("_cifar"), "kwargs": {},
              "cifar_stem": name.endswith("_cifar")}
    if options.get("downsample_in_1x1") and target["name"] != "resnet18":
        target["downsample_in_1x1"] = True  # the recipe moves the stride (ResNet v1), as the backbone does
    return target


def _paper_resnet_target(name: str, options: dict) -> dict:
    kwargs: dict[str, Any] = {"n_blocks": options.get("n_blocks", 3)}
    if options.get("shortcut_bn") is False:
        kwargs["shortcut_bn"] = False
    return {"library": "gsimclr", "name": "PaperResNet", "kwargs": kwargs, "cifar_stem": False}


def _timm_target(name: str, options: dict) -> dict:
    from gsimclr.models.timm_backbone import split_cifar, timm_options

    base, cifar = split_cifar(name)
    kwargs = options.get("timm_kwargs")
    if kwargs is None:
        kwargs = timm_options(base, options.get("image_size"), patch_size=options.get("patch_size"))
    return {"library": "timm", "name": base, "kwargs": dict(kwargs), "cifar_stem": cifar}


# ------------------------------------------------------------------------------------ backbones


@register_backbone("paper_resnet", keras_conv_init="he_normal", export=_paper_resnet_target,
                   help="the paper's CIFAR ResNet (--n-blocks sets its depth)")
def _paper_resnet(n_blocks: int = 3, shortcut_bn: bool = True, pre_pool_bn: bool = False, **_) -> "nn.Module":
    from gsimclr.models.resnet import PaperResNet

    return PaperResNet(n_blocks=n_blocks, shortcut_bn=shortcut_bn, pre_pool_bn=pre_pool_bn)


@register_backbone("resnet18_cifar", keras_bn_eps=1.001e-5, export=_torchvision_target,
                   help="torchvision ResNet-18 with a 3x3 stride-1 stem and no max-pool")
def _resnet18_cifar(**_) -> "nn.Module":
    from gsimclr.models.resnet import TorchvisionResNet

    return TorchvisionResNet("resnet18", cifar_stem=True)


@register_backbone("resnet18", keras_bn_eps=1.001e-5, export=_torchvision_target, help="torchvision ResNet-18")
def _resnet18(**_) -> "nn.Module":
    from gsimclr.models.resnet import TorchvisionResNet

    return TorchvisionResNet("resnet18")


@register_backbone("resnet50", keras_bn_eps=1.001e-5, export=_torchvision_target,  # keras.applications.ResNet50's
                   help="torchvision ResNet-50 (--downsample-in-1x1: ResNet v1)")
def _resnet50(downsample_in_1x1: bool = False, **_) -> "nn.Module":
    from gsimclr.models.resnet import TorchvisionResNet

    return TorchvisionResNet("resnet50", downsample_in_1x1=downsample_in_1x1)


def _check_timm(name: str) -> None:
    from gsimclr.models.timm_backbone import check_timm_name

    check_timm_name(name)


@register_backbone_family("timm", export=_timm_target, check=_check_timm,
                          help="any timm model without its classifier (timm:NAME_cifar: a ResNet with a CIFAR stem)")
def _timm(name: str, image_size: int | None = None, patch_size: int | None = None, **_) -> "nn.Module":
    from gsimclr.models.timm_backbone import TimmBackbone

    return TimmBackbone(name, image_size, patch_size=patch_size)


# ---------------------------------------------------------------------------------------- lookup


def _family(name: str) -> tuple[str, str] | None:
    prefix, sep, rest = name.partition(":")
    return (prefix, rest) if sep and prefix in BACKBONE_FAMILIES and rest else None


def is_backbone(name: str) -> bool:
    """Whether ``name`` is a registered backbone or has a registered family's prefix (not checked further)."""
    return name in BACKBONES or _family(name) is not None


def check_backbone(name: str) -> None:
    """A UserError unless ``name`` is a backbone: a registered one, or a family member its family knows."""
    family = _family(name)
    if family is not None:
        check = BACKBONE_FAMILIES[family[0]].check
        if check is not None:
            check(family[1])
        return
    BACKBONES.get(name)


def backbone_names() -> list[str]:
    """The registered names and, for each family, ``PREFIX:NAME``: what a help text lists."""
    return sorted(BACKBONES) + [f"{p}:NAME" for p in sorted(BACKBONE_FAMILIES)]


class _BackboneChoices:
    """The names an option may take (:func:`backbone_names`, read when iterated), for ``Config.model``'s choices."""

    def __iter__(self):
        return iter(backbone_names())


BACKBONE_CHOICES = _BackboneChoices()


def export_target(name: str, options: dict) -> dict:
    """The export target of backbone ``name`` built with ``options`` (see :data:`ExportTarget`); a
    UserError for a backbone that has none."""
    family = _family(name)
    entry = BACKBONE_FAMILIES[family[0]] if family is not None else BACKBONES.get(name)
    if entry.export is None:
        raise UserError(f"export: --model {name} has no export target (no other library's model takes its weights)")
    return entry.export(family[1] if family is not None else name, options)


def apply_defaults(module: "nn.Module", defaults: str = "torch", conv_init: str = "glorot_uniform",
                   bn_eps: float = 1e-3) -> "nn.Module":
    """``defaults="keras"``: the framework defaults of the notebooks' Keras layers on ``module``:
    Keras' initialisers (:func:`keras_init`, ``conv_init`` for convolutions) and BatchNorm momentum
    0.99 (torch's 0.01) with epsilon ``bn_eps``; ``"torch"`` leaves torch's. Returns ``module``."""
    if defaults not in DEFAULTS:
        raise ValueError(f"unknown defaults {defaults!r}; choose one of {', '.join(DEFAULTS)}")
    if defaults == "keras":
        from gsimclr.models.resnet import keras_init, set_batch_norm

        keras_init(module, conv_init)
        set_batch_norm(module, KERAS_BN_MOMENTUM, bn_eps)
    return module


def create_backbone(name: str, defaults: str = "torch", **options) -> "nn.Module":
    """Build a registered backbone; unknown names raise ValueError listing the known ones.
    Options a backbone does not use (``n_blocks`` for a torchvision ResNet) are ignored.
    ``defaults="keras"`` gives a registered backbone the framework defaults of its Keras counterpart
    (:func:`apply_defaults`; a family's backbones, e.g. timm's, keep their own)."""
    family = _family(name)
    if family is not None:
        return BACKBONE_FAMILIES[family[0]].build(family[1], **options)
    if name not in BACKBONES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(backbone_names())}")
    entry = BACKBONES[name]
    return apply_defaults(entry.build(**options), defaults, entry.keras_conv_init, entry.keras_bn_eps)


def input_size_problem(name: str, size: int, defaults: str = "torch", **options) -> str | None:
    """Why backbone ``name`` (built with ``options``) cannot take ``size`` px images, else None: e.g. a ViT
    whose patches are larger than the image, or a ConvNeXt whose downsamplings leave less than one pixel
    (PyTorch's "Kernel size can't be greater than actual input size" at the first forward). Found on the
    meta device (no memory, no weights, no draw from the random streams) by one forward of two images;
    a failure that is not about the input's size is left to the real build."""
    import re

    import torch

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            net = create_backbone(name, defaults, **options)
            net(torch.zeros(2, 3, size, size))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - only a size problem is reported, anything else is the build's
        text = " ".join(str(exc).split("\n")[0].split())
        if re.search(r"input size|too small|doesn't match model|does not match model|output size", text, re.I):
            return text[:200]
    return None
