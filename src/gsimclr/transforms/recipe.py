"""The one interface every augmentation (view recipe) provides, and the registry of recipes.

A view recipe turns a uint8 batch ``(N, H, W, 3)`` into one augmented view ``(N, 3, size, size)`` on the
batch's device. It is split in two stages so that every data path runs the same recipe:

- the **crop stage** (``crop``, ``scale``, ``ratio``): a random resized crop drawn as torchvision's
  ``RandomResizedCrop``; the in-memory path does it on the device, the encoded store's decoder
  (:class:`gsimclr.data.decode.BatchDecoder.for_recipe`) does it while decoding, on each image's own
  aspect ratio. A recipe without a crop (``crop = False``) gets the centred square of each image.
- the **device stage** (:meth:`ViewRecipe.device_stage`): everything else (flip, colour, blur,
  normalisation), batched on the device.

:meth:`ViewRecipe.views` and :meth:`ViewRecipe.views_from_crops` give ``count`` views of a batch on
either path. A recipe is registered in :data:`AUGMENTATIONS` with the run options it reads
(:func:`register_augment`), and :func:`build_augment` builds it from a run's configuration, so no
caller maps recipe names to arguments.

Example:
    >>> import torch
    >>> from gsimclr.transforms.augment import build_augment
    >>> recipe = build_augment("notebook", 16)
    >>> recipe.crop, tuple(recipe.views(torch.zeros(4, 20, 20, 3, dtype=torch.uint8), 2).shape)
    (False, (2, 4, 3, 16, 16))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from gsimclr.registry import Registry

# This module imports no PyTorch (the command line checks --augment, --normalize and --color-drop
# against the names below before PyTorch is imported); the recipes live in gsimclr.transforms.augment.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))}
"""Input normalisations by name (``--normalize``): (mean, std) per channel."""
COLOR_DROPS = ("grayscale", "identity")
"""What the notebook recipe's colour drop does (``--color-drop``)."""


class ViewRecipe:
    """Base of every augmentation: ``size`` (output side), the crop stage a decoder can run (``crop``,
    ``scale``, ``ratio``; class defaults: no crop) and ``__call__(images, generator=None)``, the whole
    recipe on a uint8 ``(N, H, W, 3)`` (or float ``(N, 3, H, W)``) batch."""

    size: int
    crop = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, images, generator=None):
        raise NotImplementedError

    def device_stage(self) -> "ViewRecipe":
        """The recipe without its crop stage: what runs on the device after a decoder made the crops
        (the recipe itself when it has no crop)."""
        return self

    def views(self, images, count: int):
        """``count`` independent views ``(count, N, 3, size, size)`` of a uint8 batch ``(N, H, W, 3)``."""
        import torch

        return torch.stack([self(images) for _ in range(count)])

    def views_from_crops(self, crops, count: int):
        """``count`` views of the decoder's crops ``(V, N, size, size, 3)`` (V = ``count`` for a recipe
        with a crop, else 1: the centred squares): the device stage on each view's crops."""
        import torch

        rest = self.device_stage()
        return torch.stack([rest(crops[min(v, len(crops) - 1)]) for v in range(count)])


@dataclass(frozen=True)
class RecipeEntry:
    """A registered recipe: ``build(size, mean=, std=, **options)`` and ``options(cfg)``, the build
    options a run's configuration gives it (besides size and normalisation)."""

    build: Callable[..., ViewRecipe]
    options: Callable[[Any], dict]
    help: str = ""


AUGMENTATIONS = Registry("augmentation")
"""Augmentation recipes by name (``--augment``)."""
AUGMENTATIONS.declare("simclr", "paper", "notebook", module="gsimclr.transforms.augment")


def register_augment(name: str, options: Callable[[Any], dict] = lambda cfg: {}, help: str = ""):
    """Decorator: register a recipe factory ``build(size, **kwargs) -> ViewRecipe`` as ``name``, with
    ``options(cfg)`` the keyword arguments it takes from a run's configuration."""

    def wrap(build):
        doc = (build.__doc__ or "").strip().splitlines()
        AUGMENTATIONS.register(name, RecipeEntry(build, options, help or (doc[0] if doc else name)))
        return build

    return wrap


def build_augment(recipe, size: int | None = None, **options) -> ViewRecipe:
    """The view recipe of a run's configuration (``build_augment(cfg)``: ``cfg.augment`` at
    ``cfg.image_size``, normalised as ``cfg.normalize``, with the options its registry entry reads),
    or the recipe registered as ``recipe`` (a name) for images of ``size`` with ``options``."""
    if isinstance(recipe, str):
        return AUGMENTATIONS.get(recipe).build(size, **options)
    entry = AUGMENTATIONS.get(recipe.augment)
    mean, std = NORMALIZATIONS[recipe.normalize]
    return entry.build(recipe.image_size, mean=mean, std=std, **entry.options(recipe), **options)
