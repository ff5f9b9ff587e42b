"""Batched image augmentations that run on the images' device (:mod:`gsimclr.transforms.augment`), each a
view recipe registered in :data:`AUGMENTATIONS` (:mod:`gsimclr.transforms.recipe`)."""

import importlib

from gsimclr.transforms.recipe import (
    AUGMENTATIONS,
    COLOR_DROPS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALIZATIONS,
    RecipeEntry,
    ViewRecipe,
    build_augment,
    register_augment,
)

__all__ = [
    "AUGMENTATIONS",
    "COLOR_DROPS",
    "NORMALIZATIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Augment",
    "JitterParams",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "build_augment",
    "color_jitter",
    "eval_transform",
    "gaussian_blur",
    "normalize",
    "paper_augment",
    "random_grayscale",
    "resized_crop",
    "rgb_to_grayscale",
    "sample_crop_boxes",
    "sample_jitter",
    "simclr_augment",
    "to_float",
    "NotebookAugment",
    "TFJitterParams",
    "notebook_augment",
    "sample_tf_jitter",
    "tf_adjust_brightness",
    "tf_adjust_contrast",
    "tf_adjust_hue",
    "tf_adjust_saturation",
    "tf_color_jitter",
    "RecipeEntry",
    "ViewRecipe",
    "register_augment",
]


def __getattr__(name: str):
    """The recipes and their operations (:mod:`gsimclr.transforms.augment`, which imports PyTorch) on first
    use, so that importing the package for its registry and names stays light."""
    if name in __all__:
        return getattr(importlib.import_module("gsimclr.transforms.augment"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
