"""``digits``: scikit-learn's bundled 8x8 digits, upsampled to 32x32 RGB (no files needed)."""

from __future__ import annotations

import numpy as np

from gsimclr.data import cache as decoded_cache
from gsimclr.data.dataset import ImageData
from gsimclr.errors import UserError
from gsimclr.data.sources.base import DataSource, Request, register_source
from gsimclr.data.sources.decoding import resize_square


def load_digits(split: str, image_size: int | None) -> ImageData | None:
    """scikit-learn's digits as RGB, stratified 80/20 train/test split (random_state=0)."""
    if split not in ("train", "test"):
        return None
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    train, test = train_test_split(index, test_size=0.2, random_state=0, stratify=digits.target)
    chosen = train if split == "train" else test
    gray = np.round(digits.images[chosen] * (255 / 16)).astype(np.uint8)
    size = image_size or 32
    images = np.repeat(resize_square(gray, size)[..., None], 3, axis=-1)
    key = decoded_cache.fingerprint(kind="digits", split=split, image_size=size)
    return ImageData(images, digits.target[chosen], [str(c) for c in range(10)], "digits", key)


def _load(argument: str | None, request: Request) -> ImageData | None:
    if argument is not None:
        raise UserError(f"digits takes no argument, got digits:{argument}")
    return load_digits(request.split, request.image_size)


register_source("digits", DataSource("digits", "scikit-learn's 8x8 digits upsampled to 32x32 (built in, 80/20 split)",
                                     _load))
