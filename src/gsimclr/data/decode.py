"""Batched JPEG decoding with random resized crops drawn on each image's own aspect ratio.

The encoded store (:mod:`gsimclr.data.store`) keeps images at their own aspect ratio. A
:class:`BatchDecoder` turns a batch of their JPEG bytes into a fixed-size uint8 batch
``(views, N, size, size, 3)``: it draws ``views`` crop boxes per image exactly as torchvision's
``RandomResizedCrop.get_params`` does (on the stored height and width, which keep the original
aspect ratio), decodes each image once and crops and resizes every view from it. It is the crop stage
of a view recipe (:meth:`BatchDecoder.for_recipe`, :class:`gsimclr.transforms.recipe.ViewRecipe`); the
rest of the recipe (flip, colour jitter, grayscale, blur) then runs batched on the result
(``recipe.views_from_crops``). Without ``crop`` each image gives one deterministic view: the centred
square of its shorter side, resized (the evaluation transform, and a recipe without a crop).

Back ends (the choice is made in one place, :func:`default_backend`):

- ``"pil"`` (the CPU default): a thread pool; each thread opens the JPEG with Pillow, asks for a
  DCT-scaled decode no larger than the crops need (``Image.draft``, 1/2, 1/4 or 1/8 scale) and
  crops and resizes with ``Image.resize(box=...)`` (antialiased bilinear). Pillow releases the GIL
  while decoding and resizing. Measured on this 2-core CPU, shared with other jobs (2026-11-23, the
  200,000-image store at 256 px, two 64-px crops per image, batches of 256, 2 threads, median of 3
  alternating rounds, ``benchmarks/data_path.py decoders``): ``pil`` 656 images/s against 57 images/s
  for ``torchvision`` (``decode_jpeg`` on a list, then crop and ``interpolate`` per view), which
  decodes every image at full size and paid for small tensor operations per crop; with every crop in
  one ``roi_align`` (:func:`batched_crops`) the same run gave 645 against 190 images/s (16:05 UTC).
- ``"torchvision"``: ``torchvision.io.decode_jpeg`` on a list, then every crop of the batch in one
  ``roi_align`` (:func:`batched_crops`); kept for comparison and as the path shared with the GPU.
- ``"cuda"``: ``torchvision.io.decode_jpeg(list, device="cuda")`` (nvJPEG, batched) and the crops on
  the GPU (:func:`batched_crops`); the output stays on the GPU. Not measured: no GPU was available when this was written,
  and TorchCodec or DALI were not compared.

Example:
    >>> import io, numpy as np
    >>> from PIL import Image
    >>> def jpeg(h, w):
    ...     buffer = io.BytesIO(); Image.new("RGB", (w, h), (200, 30, 30)).save(buffer, "JPEG")
    ...     return buffer.getvalue()
    >>> decoder = BatchDecoder(size=16, views=2)
    >>> out = decoder([jpeg(40, 60), jpeg(50, 30)], np.array([[40, 60], [50, 30]]), np.random.default_rng(0))
    >>> tuple(out.shape), out.dtype
    ((2, 2, 16, 16, 3), torch.uint8)
"""

from __future__ import annotations

import io
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

BACKENDS = ("pil", "torchvision", "cuda")


def default_backend(device: torch.device | str | None) -> str:
    """The decoder for ``device``: nvJPEG on a CUDA device (unmeasured, see the module docstring), else Pillow."""
    return "cuda" if torch.device(device or "cpu").type == "cuda" else "pil"


def sample_boxes(heights: np.ndarray, widths: np.ndarray, views: int, rng: np.random.Generator,
                 scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> np.ndarray:
    """Crop boxes ``(top, left, height, width)`` as int64 ``(views, N, 4)``, one per view and image.

    The distribution of ``RandomResizedCrop.get_params`` for each image's own ``heights[i]`` and
    ``widths[i]``: 10 attempts (area uniform in ``scale`` times the image's area, log aspect ratio
    uniform in ``log(ratio)``), the first that fits, else the centre crop with its ratio clamped.
    """
    heights = np.asarray(heights, np.float64)[None, :, None]
    widths = np.asarray(widths, np.float64)[None, :, None]
    shape = (views, heights.shape[1], 10)
    area = rng.uniform(scale[0], scale[1], shape) * heights * widths
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), shape))
    w = np.round(np.sqrt(area * aspect))
    h = np.round(np.sqrt(area / aspect))
    valid = (w > 0) & (w <= widths) & (h > 0) & (h <= heights)
    first = valid.argmax(axis=2)[..., None]
    found = valid.any(axis=2)
    h = np.take_along_axis(h, first, 2)[..., 0]
    w = np.take_along_axis(w, first, 2)[..., 0]
    hh, ww = heights[..., 0], widths[..., 0]
    in_ratio = ww / hh
    fallback_w = np.where(in_ratio < ratio[0], ww, np.where(in_ratio > ratio[1], np.round(hh * ratio[1]), ww))
    fallback_h = np.where(in_ratio < ratio[0], np.round(ww / ratio[0]), hh)
    h = np.where(found, h, fallback_h)
    w = np.where(found, w, fallback_w)
    u = rng.random((2, *h.shape))
    top = np.where(found, np.minimum(np.floor(u[0] * (hh - h + 1)), hh - h), (hh - h) // 2)
    left = np.where(found, np.minimum(np.floor(u[1] * (ww - w + 1)), ww - w), (ww - w) // 2)
    return np.stack((top, left, h, w), axis=-1).astype(np.int64)


def centre_boxes(heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The centred square of each image's shorter side, as ``(1, N, 4)`` boxes."""
    heights, widths = np.asarray(heights, np.int64), np.asarray(widths, np.int64)
    side = np.minimum(heights, widths)
    return np.stack(((heights - side) // 2, (widths - side) // 2, side, side), axis=-1)[None]


@dataclass
class BatchDecoder:
    """Decode a batch of JPEG bytes into ``(views, N, size, size, 3)`` uint8 crops.

    ``crop``: random resized crops (``scale``, ``ratio``), ``views`` per image; without it one centred
    square per image. ``backend``: one of :data:`BACKENDS` (see the module docstring); ``workers``:
    threads of the CPU back ends (default: every core).
    """

    size: int
    views: int = 2
    crop: bool = True
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    backend: str = "pil"
    workers: int | None = None
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown decoder back end {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.size < 1 or self.views < 1:
            raise ValueError("size and views must be positive")

    @classmethod
    def for_recipe(cls, recipe, views: int, backend: str = "pil", workers: int | None = None) -> "BatchDecoder":
        """The decoder that runs the crop stage of ``recipe`` (any
        :class:`gsimclr.transforms.recipe.ViewRecipe`: its ``size``, ``crop``, ``scale``, ``ratio``):
        ``views`` random resized crops per image, or one centred square for a recipe without a crop.
        Its output goes to ``recipe.views_from_crops``."""
        return cls(recipe.size, views=views if recipe.crop else 1, crop=bool(recipe.crop), scale=tuple(recipe.scale),
                   ratio=tuple(recipe.ratio), backend=backend, workers=workers)

    def boxes(self, sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sizes = np.asarray(sizes).reshape(-1, 2)
        if not self.crop:
            return centre_boxes(sizes[:, 0], sizes[:, 1])
        return sample_boxes(sizes[:, 0], sizes[:, 1], self.views, rng, self.scale, self.ratio)

    def __call__(self, payloads, sizes: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """Crops of the images ``payloads`` (JPEG bytes) whose stored (height, width) are ``sizes``."""
        boxes = self.boxes(sizes, rng)
        if self.backend == "pil":
            return self._decode_pil(payloads, boxes)
        return self._decode_torchvision(payloads, boxes, "cuda" if self.backend == "cuda" else "cpu")

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers or os.cpu_count() or 1, thread_name_prefix="decode")
        return self._pool

    def _decode_pil(self, payloads, boxes: np.ndarray) -> torch.Tensor:
        n = len(payloads)
        out = np.empty((boxes.shape[0], n, self.size, self.size, 3), np.uint8)
        chunk = max(1, -(-n // (4 * (self.workers or os.cpu_count() or 1))))

        def work(start: int) -> None:
            for i in range(start, min(start + chunk, n)):
                _pil_crops(payloads[i], boxes[:, i], self.size, out[:, i])

        list(self._threads().map(work, range(0, n, chunk)))
        return torch.from_numpy(out)

    def _decode_torchvision(self, payloads, boxes: np.ndarray, device: str) -> torch.Tensor:
        import warnings

        from torchvision.io import ImageReadMode, decode_jpeg

        data = [torch.frombuffer(bytearray(p), dtype=torch.uint8) for p in payloads]
        with warnings.catch_warnings():  # torchvision >= 0.29 points to TorchCodec; the API still works
            warnings.simplefilter("ignore", DeprecationWarning)
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        return batched_crops(images, boxes, self.size)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def batched_crops(images: list[torch.Tensor], boxes: np.ndarray, size: int) -> torch.Tensor:
    """Every view's crop of every image, resized to ``size`` x ``size``, in one ``roi_align`` call.

    ``images``: decoded uint8 ``(3, H_i, W_i)`` tensors of any sizes, on one device; ``boxes``:
    ``(views, N, 4)`` as ``(top, left, height, width)``. The images are copied into one zero-padded float
    batch with a replicated last row and column (so samples between the last pixel and the edge clamp
    to it, as ``interpolate`` does); ``roi_align(aligned=True)`` samples each output pixel where
    ``interpolate(align_corners=False)`` does, averaging ``ceil(box / size)`` bilinear samples per axis
    when it shrinks a crop (a box filter in place of interpolate's antialiasing triangle). Returns
    uint8 ``(views, N, size, size, 3)`` on the images' device. Launches three copies per image (the image,
    its last row, its last column) and one ``roi_align`` instead of about six small kernels per crop (the
    per-crop loop this replaces: ``tests/test_store.py``).
    """
    from torchvision.ops import roi_align

    views, n = boxes.shape[:2]
    device = images[0].device
    height = max(int(im.shape[1]) for im in images) + 1
    width = max(int(im.shape[2]) for im in images) + 1
    batch = torch.zeros((n, 3, height, width), dtype=torch.float32, device=device)
    for i, image in enumerate(images):
        h, w = image.shape[1:]
        batch[i, :, :h, :w] = image
        batch[i, :, h, :w] = batch[i, :, h - 1, :w]
        batch[i, :, :h + 1, w] = batch[i, :, :h + 1, w - 1]
    b = torch.as_tensor(np.asarray(boxes, np.float32)).reshape(views * n, 4)
    top, left, h, w = b.unbind(1)
    index = torch.arange(n, dtype=torch.float32).repeat(views)
    rois = torch.stack((index, left, top, left + w, top + h), dim=1).to(device)
    out = roi_align(batch, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out.view(views, n, 3, size, size).permute(0, 1, 3, 4, 2).contiguous()


def _pil_crops(payload, boxes: np.ndarray, size: int, out: np.ndarray) -> None:
    """Decode one JPEG at the smallest DCT scale that keeps every crop at least ``size`` px, then
    crop and resize each of ``boxes`` (views, 4) into ``out`` (views, size, size, 3)."""
    with Image.open(io.BytesIO(payload)) as img:
        width, height = img.size
        smallest = int(min(boxes[:, 2].min(), boxes[:, 3].min()))
        reduce = max(1, smallest // size)
        if reduce > 1:
            img.draft("RGB", (max(1, -(-width // reduce)), max(1, -(-height // reduce))))
        if img.mode != "RGB":
            img = img.convert("RGB")
        sx, sy = img.size[0] / width, img.size[1] / height
        for v, (top, left, h, w) in enumerate(boxes.tolist()):
            box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
            out[v] = np.asarray(img.resize((size, size), Image.Resampling.BILINEAR, box=box))
