"""Generated image folders for the data tests (imported by them; not a test module)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def jpeg_folder(root, count: int = 12, classes: int = 2, seed: int = 0, sizes=(16, 40), colours=None):
    """``root/train/c<k>/<i>.jpg``: ``count`` JPEGs of random sizes in ``sizes`` (aspect ratios vary),
    image i in class ``i % classes``; noise, or each class's colour in ``colours`` plus noise."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = root / "train" / f"c{i % classes}"
        path.mkdir(parents=True, exist_ok=True)
        h, w = rng.integers(sizes[0], sizes[1], 2)
        if colours is None:
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        else:
            pixels = np.clip(np.array(colours[i % classes]) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path / f"{i:03d}.jpg", quality=90)
    return root
