"""Decoding image files and encoded bytes into one uint8 array of square images, in threads.

Images come out as upright RGB uint8 arrays of one square size: ``image_size`` if given, else the
shorter side of the images when they all share one size, else :data:`DEFAULT_IMAGE_SIZE`. Each image
is resized (bicubic) so that its shorter side is that size, then centre-cropped; with
``resize="stretch"`` both sides are resized to that size ignoring the aspect ratio (see :func:`stretch`).
EXIF orientation is applied; transparent pixels are composited onto black; every mode Pillow opens
becomes RGB, 16-bit and 32-bit grey levels scaled to 8 bits (not clipped).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps

from gsimclr.errors import UserError, printable

DEFAULT_IMAGE_SIZE = 256
_DECODE_CHUNK = 256  # images per thread-pool task
_SMALL_FILE_BYTES = 16_384  # below this mean encoded size, decoding is Python-bound: threads only contend


def decode_images(sources: Sequence[str | bytes], names: Sequence[str], options: dict):
    """Decode file paths or encoded bytes to (N, S, S, 3) uint8; returns (images, kept indices).

    Unreadable images are dropped, or raise :class:`UserError` naming the first one when
    ``options["on_corrupt"] == "error"``.
    """
    workers = _worker_count(sources)
    size = options["image_size"] or _common_size(sources, workers)
    images = np.empty((len(sources), size, size, 3), np.uint8)
    errors: dict[int, str] = {}

    def decode(i: int) -> None:
        try:
            images[i] = decode_one(sources[i], size, options.get("resize", "crop"))
        except Exception as exc:  # corrupt files fail in many ways: OSError, SyntaxError, ValueError...
            errors[i] = decode_error(exc)

    run_chunked(decode, len(sources), workers)
    if errors and options["on_corrupt"] == "error":
        first = min(errors)
        raise UserError(f"cannot read image {printable(names[first])} ({' '.join(errors[first].split())})")
    if len(errors) == len(sources):
        raise UserError(f"none of the {len(sources)} images could be read, e.g. {printable(names[min(errors)])}")
    kept = np.setdiff1d(np.arange(len(sources)), list(errors))
    return (images[kept] if errors else images), kept


def decode_error(exc: BaseException) -> str:
    """Why an image could not be read, on one line, without the in-memory buffer Pillow names in place of a
    file ("cannot identify image file <_io.BytesIO object at 0x7f...>")."""
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", " ".join(str(exc).split()))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def decode_one(source: str | bytes, size: int, resize: str = "crop") -> np.ndarray:
    """Decode one image file or encoded bytes to upright RGB, shorter side resized to ``size``, centre-cropped
    (``resize="stretch"``: both sides resized to ``size``, see :func:`stretch`)."""
    with Image.open(_openable(source)) as img:
        if resize == "stretch":
            return stretch(np.asarray(to_rgb(ImageOps.exif_transpose(img))), size)
        img.draft(None, (size, size))  # JPEG: decode at a reduced scale when much larger than needed
        upright = to_rgb(ImageOps.exif_transpose(img))
        if upright.size != (size, size):
            upright = ImageOps.fit(upright, (size, size), Image.Resampling.BICUBIC)
        return np.asarray(upright)


def stretch(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 to ``(size, size, 3)``: bilinear with half-pixel centres and no antialiasing,
    rounded to uint8, i.e. OpenCV's ``INTER_LINEAR`` as the notebooks' ``cv2.resize``."""
    import torch  # here: the other sources decode without it

    if image.shape[:2] == (size, size):
        return image
    x = torch.tensor(image).permute(2, 0, 1)[None].float()
    y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB version of ``img``; transparent pixels are composited onto black. Single-channel images
    wider than 8 bits (16-bit PNGs, 32-bit integer or float TIFFs) are scaled to 8 bits by their value
    range (:func:`to_8bit`), where Pillow's own conversion clips them to black and white."""
    if img.mode == "RGB":
        return img
    if img.mode in _WIDE_MODES:
        return Image.fromarray(to_8bit(np.asarray(img), img.mode)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA") if img.mode != "La" else img.convert("RGBa").convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """uint8 grey levels of a wide single-channel image: 16-bit modes by 255/65535; 32-bit integers as
    8-bit when they fit in 0-255, else as 16-bit when they fit in 0-65535; floats as 0-1 when they fit,
    else as 0-255 when they fit; anything else stretched from its minimum to its maximum.

    >>> to_8bit(np.array([[0, 32896, 65535]], np.uint16), "I;16").tolist()
    [[0, 128, 255]]
    >>> to_8bit(np.array([[0.0, 0.5, 1.0]], np.float32), "F").tolist()
    [[0, 128, 255]]
    """
    x = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        scale, offset = 255 / 65535, 0.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        scale, offset = 255.0, 0.0
    elif lo >= 0 and hi <= 255:
        scale, offset = 1.0, 0.0
    elif mode == "I" and lo >= 0 and hi <= 65535:
        scale, offset = 255 / 65535, 0.0
    else:
        scale, offset = 255 / max(hi - lo, 1e-12), lo
    return np.clip(np.round((x - offset) * scale), 0, 255).astype(np.uint8)


def _common_size(sources: Sequence[str | bytes], workers: int) -> int:
    """The shorter side of the images if they all share one size (read from headers), else 256."""
    sizes: list[tuple[int, int] | None] = [None] * len(sources)

    def probe(i: int) -> None:
        try:
            with Image.open(_openable(sources[i])) as img:
                sizes[i] = img.size
        except Exception:  # unreadable: reported when decoding
            pass

    run_chunked(probe, len(sources), workers)
    distinct = set(sizes) - {None}
    return min(distinct.pop()) if len(distinct) == 1 else DEFAULT_IMAGE_SIZE


def _openable(source: str | bytes):
    """What :func:`PIL.Image.open` takes for a path or encoded bytes."""
    return source if isinstance(source, str) else io.BytesIO(source)


def _worker_count(sources: Sequence[str | bytes]) -> int:
    """Decoding threads: one for tiny images (Python-bound, threads only contend for the GIL), else all cores."""
    sample = sources[:: max(1, len(sources) // 64)]
    sizes = [_encoded_size(s) for s in sample]
    return 1 if np.mean(sizes) < _SMALL_FILE_BYTES else os.cpu_count() or 1


def _encoded_size(source: str | bytes | None) -> int:
    """Bytes of an encoded image or image file; 0 for one that is missing (reported when decoding)."""
    if not isinstance(source, str):
        return len(source or b"")
    try:
        return os.path.getsize(source)
    except OSError:
        return 0


def run_chunked(work: Callable[[int], None], count: int, workers: int) -> None:
    """Call ``work(i)`` for i in range(count) on ``workers`` threads, in chunks of indices."""

    def run(start: int) -> None:
        for i in range(start, min(start + _DECODE_CHUNK, count)):
            work(i)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, range(0, count, _DECODE_CHUNK)))


def resize_square(images: np.ndarray, size: int) -> np.ndarray:
    """Resize square images (N, H, H) or (N, H, H, 3) to ``size`` with bicubic filtering."""
    resized = np.empty((len(images), size, size, *images.shape[3:]), np.uint8)

    def resize(i: int) -> None:
        resized[i] = np.asarray(Image.fromarray(images[i]).resize((size, size), Image.Resampling.BICUBIC))

    run_chunked(resize, len(images), 1 if images.shape[1] < 64 else os.cpu_count() or 1)
    return resized
