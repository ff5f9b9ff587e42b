"""Generate a large synthetic ImageNet-style JPEG folder for the data-path benchmark (never in the repo).

``OUT/<split>/<wnid>/<wnid>_<i>.JPEG`` (``--split`` train or val): ``--classes`` classes, ``--images`` images in all, shorter side
``--size`` px, the longer side 1 to 1.5 times that (a random aspect ratio per image, landscape or
portrait). Each class has one smooth random base image (colour gradients and blobs); every image is
its class's base, shifted and flipped at random, with pixel noise, re-encoded as JPEG (quality 85).
Fast: about 1.5 ms per image per core. Run it niced, e.g.::

    nice -n 10 python benchmarks/make_jpeg_set.py /work/gen/jpeg200k --images 200000 --workers 2
    nice -n 10 python benchmarks/make_jpeg_set.py /work/gen/jpeg200k --split val --images 5000 --workers 2

A ``val`` split (the same classes, other shifts and noise) is the evaluation split, so that a run
trains on every ``train`` image instead of holding 20% of them out.
"""

from __future__ import annotations

import argparse
import io
import os
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image


def base_image(rng: np.random.Generator, side: int) -> np.ndarray:
    """A smooth random RGB image (side x side): a colour gradient plus a few soft blobs."""
    y, x = np.mgrid[0:side, 0:side] / side
    img = np.zeros((side, side, 3), np.float32)
    for c in range(3):
        a, b, k = rng.uniform(-1, 1, 3)
        img[..., c] = 128 + 60 * a * x + 60 * b * y + 30 * np.sin(6 * k * x + 3 * b)
    for _ in range(4):
        cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.25)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        img += blob[..., None] * rng.uniform(-90, 90, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_class(args: tuple[Path, int, int, int, int, str]) -> int:
    """Write ``count`` images of class ``label`` under ``out/split``; returns the bytes written."""
    out, label, count, size, seed, split = args
    rng = np.random.default_rng([seed, label])
    wnid = f"n{label:08d}"
    folder = out / split / wnid
    folder.mkdir(parents=True, exist_ok=True)
    base = base_image(rng, int(size * 1.6))
    if split != "train":  # the same class base image, other draws
        rng = np.random.default_rng([seed, label, 1])
    written = 0
    for i in range(count):
        path = folder / f"{wnid}_{i}.JPEG"
        if path.exists():
            written += path.stat().st_size
            continue
        long_side = int(size * rng.uniform(1.0, 1.5))
        h, w = (size, long_side) if rng.random() < 0.5 else (long_side, size)
        top, left = rng.integers(0, base.shape[0] - h + 1), rng.integers(0, base.shape[1] - w + 1)
        img = base[top:top + h, left:left + w]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        noise = rng.integers(-12, 13, (h // 4, w // 4, 1), dtype=np.int16).repeat(4, 0).repeat(4, 1)
        pixels = np.clip(img.astype(np.int16) + np.pad(noise, ((0, h % 4), (0, w % 4), (0, 0))), 0, 255)
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=85)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, path)
        written += buffer.tell()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--size", type=int, default=256, help="shorter side in pixels")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=("train", "val"), default="train")
    args = parser.parse_args()
    per_class = [args.images // args.classes + (c < args.images % args.classes) for c in range(args.classes)]
    jobs = [(args.out, c, n, args.size, args.seed, args.split) for c, n in enumerate(per_class)]
    with Pool(args.workers) as pool:
        total = sum(pool.imap_unordered(write_class, jobs))
    print(f"{args.images} images, {total / 1e9:.2f} GB of JPEG under {args.out / args.split}")


if __name__ == "__main__":
    main()
