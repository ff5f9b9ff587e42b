"""Batched SimCLR augmentations that run on the images' device (GPU or CPU, one code path).

Every random parameter is drawn per sample as a tensor of shape ``(N,)`` and every operation
works on the whole batch at once: no Python loop over images and no host synchronisation
(no ``.item()``, ``.tolist()``, ``.nonzero()``, boolean-mask indexing or data-dependent
shapes), so the augmentation can run inside ``torch.compile`` or CUDA graphs.

Input is a ``uint8`` batch ``(N, H, W, 3)`` (NHWC, as the dataset stores it) already on the
device; output is a normalised ``float32`` batch ``(N, 3, size, size)``.

The functional operations reproduce ``torchvision.transforms.v2.functional`` image by image
(see ``tests/test_augment.py`` for the measured tolerances); the samplers draw parameters from
the same distributions as ``RandomResizedCrop`` and ``ColorJitter``.

Examples:
    >>> import torch
    >>> from gsimclr.transforms.augment import simclr_augment
    >>>
    >>> # two SimCLR views of a uint8 NHWC batch, computed on the batch's device
    >>> augment = simclr_augment(size=32)
    >>> images = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8)
    >>> view0, view1 = augment(images), augment(images)
    >>> view0.shape, view0.dtype
    (torch.Size([8, 3, 32, 32]), torch.float32)
    >>>
    >>> # reproducible views: pass a generator that lives on the images' device
    >>> g0, g1 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    >>> torch.equal(augment(images, generator=g0), augment(images, generator=g1))
    True
    >>>
    >>> # the G-SimCLR paper's recipe and the evaluation transform
    >>> from gsimclr.transforms.augment import build_augment, eval_transform
    >>> build_augment("paper", 32)(images).shape
    torch.Size([8, 3, 32, 32])
    >>> eval_transform(images, size=64).shape
    torch.Size([8, 3, 64, 64])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

# the names a run's options choose from live in the light recipe module (no PyTorch): the registry, the
# normalisations ("none" feeds raw [0, 1] pixels, as the notebooks) and the colour drops
from gsimclr.transforms.recipe import (  # noqa: F401
    AUGMENTATIONS, COLOR_DROPS, IMAGENET_MEAN, IMAGENET_STD, NORMALIZATIONS, ViewRecipe, build_augment, register_augment)

# Colour-jitter operations, as indices into a per-sample order (same numbering as torchvision).
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


# --------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------


def to_float(images: Tensor) -> Tensor:
    """Convert a ``uint8`` NHWC batch to ``float32`` NCHW in ``[0, 1]``.

    A floating-point NCHW batch with 3 channels is returned unchanged.
    """
    if images.ndim != 4:
        raise ValueError(f"expected a batch of images with 4 dimensions, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        if images.shape[-1] != 3:
            raise ValueError(f"expected uint8 images as (N, H, W, 3), got shape {tuple(images.shape)}")
        return images.permute(0, 3, 1, 2).contiguous().float().div_(255)
    if images.is_floating_point() and images.shape[1] == 3:
        return images
    raise ValueError(
        f"expected uint8 (N, H, W, 3) or float (N, 3, H, W) images, got {images.dtype} {tuple(images.shape)}"
    )


def _per_sample(values: Tensor, x: Tensor) -> Tensor:
    """View a per-sample ``(N,)`` tensor as ``(N, 1, 1, 1)`` to broadcast over a batch."""
    return values.to(x.dtype).view(-1, 1, 1, 1)


def resize(x: Tensor, size: int) -> Tensor:
    """Bilinear, antialiased resize of ``x`` to ``(size, size)``; a no-op if it already has that size."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Per-channel ``(x - mean) / std``, as ``torchvision`` ``normalize``."""
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - mean_t) / std_t


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def _axis_grid(start: Tensor, length: Tensor, extent: int, size: int, flip: Tensor | None) -> Tensor:
    """``grid_sample`` coordinates ``(N, size)`` of ``size`` samples spread over ``[start, start + length)``.

    Sample ``j`` sits at pixel ``start + (j + 0.5) * length / size - 0.5`` (``align_corners=False``),
    clamped to the crop's first and last pixel, which is what cropping then resizing with
    ``F.interpolate`` does at the crop's edges. ``flip`` mirrors the samples.
    """
    centres = (torch.arange(size, device=start.device, dtype=start.dtype) + 0.5) / size
    if flip is not None:
        centres = torch.where(flip[:, None], 1.0 - centres, centres)
    pixels = start[:, None] + centres * length[:, None] - 0.5
    pixels = torch.clamp(pixels, min=start[:, None], max=(start + length - 1.0)[:, None])
    return (2.0 * pixels + 1.0) / extent - 1.0


def resized_crop(x: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """Crop each image to its box, resize it bilinearly to ``(size, size)`` and optionally flip it.

    Args:
        x: images ``(N, C, H, W)``, floating point.
        boxes: ``(N, 4)`` boxes ``(top, left, height, width)`` in pixels, as
            ``RandomResizedCrop.get_params`` returns them.
        size: output height and width.
        flip: optional ``bool`` ``(N,)``: flip these samples horizontally.

    One ``F.grid_sample`` over per-sample affine grids does the crop, the resize and the flip.
    The sampling points are those of ``F.interpolate(..., antialias=False)`` on the crop, so the
    result equals torchvision's ``resized_crop`` without antialiasing; when a crop is larger than
    ``size`` it is downscaled without an antialiasing filter.
    """
    n, _, height, width = x.shape
    boxes = boxes.to(x.dtype)
    top, left, box_h, box_w = boxes.unbind(dim=1)
    xs = _axis_grid(left, box_w, width, size, flip)  # (N, size)
    ys = _axis_grid(top, box_h, height, size, None)  # (N, size)
    grid = torch.stack((xs[:, None, :].expand(n, size, size), ys[:, :, None].expand(n, size, size)), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def horizontal_flip(x: Tensor, apply: Tensor) -> Tensor:
    """Flip the samples where ``apply`` (``bool`` ``(N,)``) is true."""
    return torch.where(apply.view(-1, 1, 1, 1), x.flip(-1), x)


# --------------------------------------------------------------------------------------------
# Colour
# --------------------------------------------------------------------------------------------


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """ITU-R 601-2 luma ``(N, 1, H, W)`` of RGB images, with torchvision's weights."""
    r, g, b = x.unbind(dim=1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def random_grayscale(x: Tensor, apply_mask: Tensor) -> Tensor:
    """Replace the samples where ``apply_mask`` is true by their 3-channel grayscale."""
    gray = rgb_to_grayscale(x).expand_as(x)
    return torch.where(apply_mask.view(-1, 1, 1, 1), gray, x)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``factor * x + (1 - factor) * other`` clamped to ``[0, 1]``, per sample."""
    f = _per_sample(factor, x)
    return (x * f + other * (1.0 - f)).clamp(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Multiply each sample by its factor and clamp to ``[0, 1]``; factor 1 is the identity."""
    return (x * _per_sample(factor, x)).clamp(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each sample with the mean of its grayscale image; factor 1 is the identity."""
    mean = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each sample with its grayscale image; factor 1 is the identity."""
    return _blend(x, rgb_to_grayscale(x), factor)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    """RGB to HSV in ``[0, 1]``, torchvision's algorithm (no NaN for gray pixels)."""
    r, g, b = x.unbind(dim=1)
    minc, maxc = torch.aminmax(x, dim=1)
    gray = maxc == minc
    spread = maxc - minc
    ones = torch.ones_like(maxc)
    s = spread / torch.where(gray, ones, maxc)
    spread = torch.where(gray, ones, spread)
    rc, gc, bc = (maxc - r) / spread, (maxc - g) / spread, (maxc - b) / spread
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    is_b = ~is_r & ~is_g
    h = (bc - gc) * is_r + (2.0 + rc - bc) * is_g + (4.0 + gc - rc) * is_b
    h = (h / 6.0 + 1.0).fmod(1.0)
    return torch.stack((h, s, maxc), dim=1)


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    """HSV to RGB with the closed form ``v - v s clamp(min(k, 4 - k), 0, 1)``, ``k = (n + 6h) mod 6``.

    Equal to torchvision's sector table up to float rounding, without a lookup table.
    """
    h, s, v = hsv.unbind(dim=1)
    channels = []
    for n in (5.0, 3.0, 1.0):  # red, green, blue
        k = (n + 6.0 * h).remainder(6.0)
        channels.append(v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return torch.stack(channels, dim=1).clamp(0.0, 1.0)


def adjust_hue(x: Tensor, factor: Tensor) -> Tensor:
    """Rotate the hue of each sample by its factor in ``[-0.5, 0.5]`` (a full turn is 1).

    Factor 0 is an identity only up to float rounding (the HSV round trip); callers that need
    an exact identity select with ``torch.where``, as :func:`color_jitter` does.
    """
    h, s, v = _rgb_to_hsv(x).unbind(dim=1)
    h = (h + factor.to(x.dtype).view(-1, 1, 1)).remainder(1.0)
    return _hsv_to_rgb(torch.stack((h, s, v), dim=1))


class JitterParams(NamedTuple):
    """Per-sample colour-jitter parameters, each of shape ``(N,)`` except ``order`` ``(N, 4)``.

    ``order[i, k]`` is the operation (``BRIGHTNESS``, ``CONTRAST``, ``SATURATION`` or ``HUE``)
    applied to sample ``i`` in slot ``k``. A hue of exactly 0 means "no hue change".
    """

    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    order: Tensor


def color_jitter(x: Tensor, params: JitterParams, gather: bool | None = None) -> Tensor:
    """Apply brightness, contrast, saturation and hue in each sample's own order.

    Two equal ways (bit for bit; tests/test_augment.py):

    - masked (the default on GPUs and under ``torch.compile``): for each of the 4 slots every
      operation runs on the whole batch, with its factor set to the identity (1, or hue skipped
      through ``torch.where``) for the samples whose order does not put that operation in that slot.
      No data-dependent shapes or host synchronisation, but 16 operation passes instead of 4,
      dominated by the 4 HSV round trips of the hue passes.
    - gathered (``gather=True``, the default on the CPU outside compilation): each operation runs
      only on the samples that have it in that slot (``index_select`` / ``index_copy_``), 4 passes
      over the batch in all and one HSV round trip. It needs the indices on the host, which costs
      nothing on the CPU: 256 images of 64x64 on one thread took 45-73 ms against 338-354 ms masked
      (2026-11-23, the project's 2-core CPU; the store path's effect is in docs/results/speed.md).

    Samples whose factor is exactly the identity (1, or hue 0: not jittered) are skipped by the
    gathered path; for images in ``[0, 1]`` the masked path leaves them unchanged too.
    """
    if gather is None:
        gather = x.device.type == "cpu" and not _compiling()
    if gather:
        return _color_jitter_gathered(x, params)
    identity = torch.ones_like(params.brightness)
    for slot in range(4):
        op = params.order[:, slot]
        x = adjust_brightness(x, torch.where(op == BRIGHTNESS, params.brightness, identity))
        x = adjust_contrast(x, torch.where(op == CONTRAST, params.contrast, identity))
        x = adjust_saturation(x, torch.where(op == SATURATION, params.saturation, identity))
        use_hue = (op == HUE) & (params.hue != 0)
        x = torch.where(use_hue.view(-1, 1, 1, 1), adjust_hue(x, params.hue), x)
    return x


def _compiling() -> bool:
    """Whether torch.compile is tracing (``torch.compiler.is_compiling`` from torch 2.3, dynamo's before)."""
    check = getattr(torch.compiler, "is_compiling", None)
    if check is None:  # torch 2.2
        from torch._dynamo import is_compiling as check
    return bool(check())


_JITTER_OPS = ((BRIGHTNESS, adjust_brightness, "brightness"), (CONTRAST, adjust_contrast, "contrast"),
               (SATURATION, adjust_saturation, "saturation"), (HUE, adjust_hue, "hue"))


def _color_jitter_gathered(x: Tensor, params: JitterParams) -> Tensor:
    """:func:`color_jitter` on the samples each operation applies to (host-side indices)."""
    x = x.clone()
    # a factor of exactly 1 (hue 0) is the identity: skip those samples (non-jittered ones, p < 1)
    active = {"brightness": params.brightness != 1, "contrast": params.contrast != 1,
              "saturation": params.saturation != 1, "hue": params.hue != 0}
    for slot in range(4):
        op = params.order[:, slot]
        for code, adjust, name in _JITTER_OPS:
            index = ((op == code) & active[name]).nonzero().squeeze(1)
            if index.numel():
                factor = getattr(params, name).index_select(0, index)
                x.index_copy_(0, index, adjust(x.index_select(0, index), factor))
    return x


# --------------------------------------------------------------------------------------------
# Blur
# --------------------------------------------------------------------------------------------


def _gaussian_kernels(sigma: Tensor, kernel_size: int, dtype: torch.dtype) -> Tensor:
    """Normalised 1-D Gaussian kernels ``(N, kernel_size)``, one per sigma, as torchvision's."""
    offsets = torch.arange(kernel_size, device=sigma.device, dtype=dtype) - (kernel_size - 1) / 2
    return torch.softmax(-0.5 * (offsets / sigma.to(dtype)[:, None]) ** 2, dim=1)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Gaussian blur with a per-sample ``sigma`` ``(N,)`` and an odd ``kernel_size``.

    Reflect padding as torchvision; separable (a horizontal then a vertical pass), each pass one
    grouped convolution over the batch folded into channels ``(1, N * C, H, W)``. Needs
    ``kernel_size // 2 < min(H, W)`` for the reflect padding.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    n, c, height, width = x.shape
    weight = _gaussian_kernels(sigma, kernel_size, x.dtype).repeat_interleave(c, dim=0)  # (N*C, k)
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, n * c, height, width), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, weight.view(n * c, 1, 1, kernel_size), groups=n * c)
    y = F.conv2d(y, weight.view(n * c, 1, kernel_size, 1), groups=n * c)
    return y.view(n, c, height, width)


# --------------------------------------------------------------------------------------------
# Parameter samplers
# --------------------------------------------------------------------------------------------


def _uniform(shape, low: float, high: float, generator, device) -> Tensor:
    """Uniform samples in ``[low, high)``."""
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def _bernoulli(n: int, p: float, generator, device) -> Tensor:
    """``bool`` ``(n,)``, each true with probability ``p``."""
    return torch.rand(n, generator=generator, device=device) < p


def _centre_crop_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """RandomResizedCrop's fallback crop size: the whole image with its ratio clamped to ``ratio``."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return int(round(width / min(ratio))), width
    if in_ratio > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw ``n`` crop boxes ``(top, left, height, width)`` as ``RandomResizedCrop.get_params``.

    Each sample makes 10 attempts (area uniform in ``scale * height * width``, log aspect ratio
    uniform in ``log(ratio)``, sizes rounded to integers) and keeps the first that fits in the
    image; all attempts are drawn at once and the first valid one is picked with ``argmax``.
    Samples with no valid attempt take the centre crop with the ratio clamped to ``ratio``.
    Offsets are uniform integers. Returns a ``float32`` tensor ``(n, 4)`` of integer values.
    """
    attempts = 10
    area = _uniform((n, attempts), scale[0], scale[1], generator, device) * (height * width)
    log_ratio = _uniform((n, attempts), math.log(ratio[0]), math.log(ratio[1]), generator, device)
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)
    found = valid.any(dim=1)

    fallback_h, fallback_w = _centre_crop_size(height, width, ratio)
    h = torch.where(found, h.gather(1, first).squeeze(1), float(fallback_h))
    w = torch.where(found, w.gather(1, first).squeeze(1), float(fallback_w))
    u = torch.rand((n, 2), generator=generator, device=device)
    top = torch.minimum(torch.floor(u[:, 0] * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(u[:, 1] * (width - w + 1)), width - w)
    top = torch.where(found, top, float((height - fallback_h) // 2))
    left = torch.where(found, left, float((width - fallback_w) // 2))
    return torch.stack((top, left, h, w), dim=1)


def sample_jitter(
    n: int,
    strength: float,
    p: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> JitterParams:
    """Draw SimCLR colour-jitter parameters of strength ``s`` for ``n`` samples.

    As ``ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s)``: brightness, contrast and saturation factors
    uniform in ``[max(0, 1 - 0.8 s), 1 + 0.8 s]``, hue uniform in ``[-0.2 s, 0.2 s]``, and a
    uniformly random order of the four operations per sample. With probability ``1 - p`` a
    sample gets identity parameters (factors 1, hue 0), i.e. is not jittered.
    """
    if not 0 <= 0.2 * strength <= 0.5:
        raise ValueError(f"jitter strength must be in [0, 2.5], got {strength}")
    low, high = max(0.0, 1.0 - 0.8 * strength), 1.0 + 0.8 * strength
    brightness, contrast, saturation = _uniform((3, n), low, high, generator, device)
    hue = _uniform(n, -0.2 * strength, 0.2 * strength, generator, device)
    order = torch.rand((n, 4), generator=generator, device=device).argsort(dim=1)
    applied = _bernoulli(n, p, generator, device)
    return JitterParams(
        brightness=torch.where(applied, brightness, 1.0),
        contrast=torch.where(applied, contrast, 1.0),
        saturation=torch.where(applied, saturation, 1.0),
        hue=torch.where(applied, hue, 0.0),
        order=order,
    )


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------


def default_blur_kernel(size: int) -> int:
    """The odd kernel size nearest to 10% of ``size``, as SimCLR."""
    return 2 * int(0.05 * size) + 1


@dataclasses.dataclass(frozen=True)
class Augment(ViewRecipe):
    """A batch augmentation pipeline with per-sample random parameters (a :class:`ViewRecipe`).

    Order: random resized crop (or a resize to ``size`` if needed) with horizontal flip, colour
    jitter, grayscale, Gaussian blur, normalisation. An operation with probability 0 is skipped.

    Args:
        size: output height and width.
        crop: random resized crop with ``scale`` and ``ratio``; without it images are only resized,
            and only when they are not ``size`` x ``size`` already.
        flip_p: probability of a horizontal flip.
        jitter_strength: SimCLR colour-jitter strength ``s`` (see :func:`sample_jitter`).
        jitter_p: probability of colour jitter.
        gray_p: probability of converting to grayscale (colour drop).
        blur_p: probability of a Gaussian blur with sigma uniform in ``blur_sigma``.
        blur_kernel: odd blur kernel size; ``None`` for the odd size nearest 10% of ``size``.
        mean, std: normalisation constants.

    Examples:
        >>> augment = Augment(size=32, jitter_strength=0.5, mean=(0, 0, 0), std=(1, 1, 1))
        >>> images = torch.randint(0, 256, (4, 40, 40, 3), dtype=torch.uint8)
        >>> out = augment(images)
        >>> out.shape, bool(out.min() >= 0), bool(out.max() <= 1)
        (torch.Size([4, 3, 32, 32]), True, True)
    """

    size: int
    crop: bool = True
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_strength: float = 0.5
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.jitter_strength <= 2.5:
            raise ValueError(f"jitter_strength must be in [0, 2.5], got {self.jitter_strength}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"blur_kernel must be a positive odd integer, got {self.blur_kernel}")

    def device_stage(self) -> "Augment":
        """Everything but the random resized crop (a decoder made the crops at ``size``)."""
        return dataclasses.replace(self, crop=False) if self.crop else self

    @property
    def kernel_size(self) -> int:
        """The blur kernel size in use."""
        return default_blur_kernel(self.size) if self.blur_kernel is None else self.blur_kernel

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch: ``uint8`` ``(N, H, W, 3)`` (or float ``(N, 3, H, W)``) to ``(N, 3, size, size)``.

        ``generator`` must live on the images' device; ``None`` uses the global generator
        (inside ``torch.compile``, which cannot trace an explicit generator, use ``None``).
        """
        x = to_float(images)
        n, device = x.shape[0], x.device
        flip = _bernoulli(n, self.flip_p, generator, device)
        if self.crop:
            boxes = sample_crop_boxes(n, x.shape[2], x.shape[3], self.scale, self.ratio, generator, device)
            x = resized_crop(x, boxes, self.size, flip)
        else:
            x = horizontal_flip(resize(x, self.size), flip)
        if self.jitter_p > 0 and self.jitter_strength > 0:
            x = color_jitter(x, sample_jitter(n, self.jitter_strength, self.jitter_p, generator, device))
        if self.gray_p > 0:
            x = random_grayscale(x, _bernoulli(n, self.gray_p, generator, device))
        if self.blur_p > 0:
            sigma = _uniform(n, self.blur_sigma[0], self.blur_sigma[1], generator, device)
            blurred = gaussian_blur(x, sigma, self.kernel_size)
            x = torch.where(_bernoulli(n, self.blur_p, generator, device).view(-1, 1, 1, 1), blurred, x)
        return normalize(x, self.mean, self.std)


def _simclr_options(cfg) -> dict:
    return {"strength": cfg.jitter_strength, "scale": (cfg.crop_scale_min, 1.0), "jitter_p": cfg.jitter_p,
            "gray_p": cfg.gray_p}


@register_augment("simclr", _simclr_options)
def simclr_augment(
    size: int,
    strength: float = 0.5,
    blur: bool | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    jitter_p: float = 0.8,
    gray_p: float = 0.2,
) -> Augment:
    """The SimCLR augmentations.

    Random resized crop, horizontal flip with p=0.5, colour jitter of strength ``strength`` with
    p=0.8, grayscale with p=0.2, and Gaussian blur with p=0.5 (sigma in [0.1, 2], kernel about 10%
    of ``size``). ``blur=None`` blurs only when ``size >= 96``, as SimCLR does for CIFAR-sized images.
    """
    use_blur = size >= 96 if blur is None else blur
    return Augment(
        size=size,
        scale=tuple(scale),
        jitter_strength=strength,
        jitter_p=jitter_p,
        gray_p=gray_p,
        blur_p=0.5 if use_blur else 0.0,
        mean=tuple(mean),
        std=tuple(std),
    )


@register_augment("paper")
def paper_augment(
    size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Augment:
    """The G-SimCLR paper's recipe: horizontal flip, colour jitter (s=0.2) with p=0.5, colour drop with p=0.5.

    No crop: images are only resized to ``size`` if needed. The paper's notebook returns the
    image unchanged in its colour-drop step (a bug); we implement colour drop as intended
    (grayscale replicated to 3 channels).
    """
    return Augment(
        size=size,
        crop=False,
        flip_p=0.5,
        jitter_strength=0.2,
        jitter_p=0.5,
        gray_p=0.5,
        blur_p=0.0,
        mean=tuple(mean),
        std=tuple(std),
    )


# --------------------------------------------------------------------------------------------
# TensorFlow's colour ops, as the G-SimCLR notebooks call them
# --------------------------------------------------------------------------------------------


def _tf_rgb_to_hsv(x: Tensor) -> Tensor:
    """RGB to HSV as TensorFlow's ``adjust_saturation``/``adjust_hue`` kernels compute it.

    Unlike :func:`_rgb_to_hsv` it also defines pixels outside ``[0, 1]`` (which TF's additive
    brightness produces) as TF does: saturation ``range / max`` when ``max > 0``, else 0.
    """
    r, g, b = x.unbind(dim=1)
    minc, maxc = torch.aminmax(x, dim=1)
    spread = maxc - minc
    s = torch.where(maxc > 0, spread / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    safe = torch.where(spread > 0, spread, torch.ones_like(spread))
    h = torch.where(r == maxc, (g - b) / (6 * safe),
                    torch.where(g == maxc, (b - r) / (6 * safe) + 2.0 / 6.0, (r - g) / (6 * safe) + 4.0 / 6.0))
    h = torch.where(spread > 0, h, torch.zeros_like(h))
    h = torch.where(h < 0, h + 1.0, h)
    return torch.stack((h, s, maxc), dim=1)


def _tf_hsv_to_rgb(hsv: Tensor) -> Tensor:
    """HSV to RGB as TensorFlow's kernels (the sector formula, no clipping)."""
    h, s, v = hsv.unbind(dim=1)
    channels = []
    for n in (5.0, 3.0, 1.0):  # red, green, blue; equals TF's sector table for h in [0, 1)
        k = (n + 6.0 * h).remainder(6.0)
        channels.append(v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return torch.stack(channels, dim=1)


def tf_adjust_brightness(x: Tensor, delta: Tensor) -> Tensor:
    """``tf.image.adjust_brightness``: add ``delta`` (per sample), no clipping."""
    return x + _per_sample(delta, x)


def tf_adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """``tf.image.adjust_contrast``: ``(x - mean) * factor + mean`` with the mean of each image's
    channel over its pixels (not of its grayscale, unlike torchvision), no clipping."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * _per_sample(factor, x) + mean


def tf_adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """``tf.image.adjust_saturation``: scale the HSV saturation, clipped to ``[0, 1]``."""
    h, s, v = _tf_rgb_to_hsv(x).unbind(dim=1)
    s = (s * factor.to(x.dtype).view(-1, 1, 1)).clamp(0.0, 1.0)
    return _tf_hsv_to_rgb(torch.stack((h, s, v), dim=1))


def tf_adjust_hue(x: Tensor, delta: Tensor) -> Tensor:
    """``tf.image.adjust_hue``: rotate the HSV hue by ``delta`` (a full turn is 1)."""
    h, s, v = _tf_rgb_to_hsv(x).unbind(dim=1)
    h = (h + delta.to(x.dtype).view(-1, 1, 1)).remainder(1.0)
    return _tf_hsv_to_rgb(torch.stack((h, s, v), dim=1))


class TFJitterParams(NamedTuple):
    """Per-sample parameters of :func:`tf_color_jitter`, each ``(N,)``; ``apply`` says which samples
    are jittered at all (the notebooks' ``_random_apply``)."""

    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    apply: Tensor


def tf_color_jitter(x: Tensor, params: TFJitterParams) -> Tensor:
    """The notebooks' ``_color_jitter`` in its fixed order: ``random_brightness`` (additive),
    ``random_contrast``, ``random_saturation``, ``random_hue``, then ``clip_by_value(x, 0, 1)``;
    samples with ``apply`` false pass unchanged (and unclipped, as ``tf.cond`` leaves them)."""
    y = tf_adjust_brightness(x, params.brightness)
    y = tf_adjust_contrast(y, params.contrast)
    y = tf_adjust_saturation(y, params.saturation)
    y = tf_adjust_hue(y, params.hue).clamp(0.0, 1.0)
    return torch.where(params.apply.view(-1, 1, 1, 1), y, x)


def _draws(n: int, per_batch: bool) -> int:
    return 1 if per_batch else n


def sample_tf_jitter(n: int, strength: float, p: float, per_batch: bool = False,
                     generator: torch.Generator | None = None, device=None) -> TFJitterParams:
    """Parameters of the notebooks' jitter of strength ``s``: brightness delta uniform in
    ``[-0.8 s, 0.8 s]``, contrast and saturation factors in ``[1 - 0.8 s, 1 + 0.8 s]``, hue delta in
    ``[-0.2 s, 0.2 s]``, applied with probability ``p``. ``per_batch`` draws every parameter once
    for the whole batch, as the notebooks do (they call the TF ops on a 4-D batch)."""
    if not 0 <= 0.2 * strength <= 0.5:
        raise ValueError(f"jitter strength must be in [0, 2.5], got {strength}")
    m = _draws(n, per_batch)
    brightness = _uniform(m, -0.8 * strength, 0.8 * strength, generator, device)
    contrast, saturation = _uniform((2, m), 1 - 0.8 * strength, 1 + 0.8 * strength, generator, device)
    hue = _uniform(m, -0.2 * strength, 0.2 * strength, generator, device)
    apply = _bernoulli(m, p, generator, device)
    return TFJitterParams(*(t.expand(n) for t in (brightness, contrast, saturation, hue, apply)))


@dataclasses.dataclass(frozen=True)
class NotebookAugment(ViewRecipe):
    """The G-SimCLR notebooks' ``CustomAugment``: horizontal flip (p 0.5), TF colour jitter of
    strength ``jitter_strength`` with probability ``jitter_p``, colour drop with probability ``gray_p``;
    no crop (images are resized to ``size`` only if needed).

    Quirks, each an argument: ``per_batch`` (the notebooks draw each decision and parameter once per
    batch, so a batch is flipped, jittered or dropped as a whole) and ``color_drop`` (``"identity"``:
    the CIFAR notebook's ``_color_drop`` computes a grayscale image and returns its input; the
    ImageNet notebooks' works, ``"grayscale"``). ``mean``/``std`` of 0/1 feed raw ``[0, 1]`` pixels,
    as the notebooks do.

    Example:
        >>> aug = NotebookAugment(32, jitter_strength=0.2, jitter_p=0.5, gray_p=0.5, per_batch=True)
        >>> aug(torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)).shape
        torch.Size([4, 3, 32, 32])
    """

    size: int
    flip_p: float = 0.5
    jitter_strength: float = 0.2
    jitter_p: float = 0.5
    gray_p: float = 0.5
    per_batch: bool = True
    color_drop: str = "identity"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        for name in ("flip_p", "jitter_p", "gray_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.jitter_strength <= 2.5:
            raise ValueError(f"jitter_strength must be in [0, 2.5], got {self.jitter_strength}")
        if self.color_drop not in COLOR_DROPS:
            raise ValueError(f"color_drop must be one of {', '.join(COLOR_DROPS)}, got {self.color_drop!r}")

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = resize(to_float(images), self.size)
        n, device = x.shape[0], x.device
        m = _draws(n, self.per_batch)
        x = horizontal_flip(x, _bernoulli(m, self.flip_p, generator, device).expand(n))
        x = tf_color_jitter(x, sample_tf_jitter(n, self.jitter_strength, self.jitter_p, self.per_batch, generator, device))
        drop = _bernoulli(m, self.gray_p, generator, device).expand(n)
        if self.color_drop == "grayscale":
            x = random_grayscale(x, drop)
        return normalize(x, self.mean, self.std)


def _notebook_options(cfg) -> dict:
    return {"strength": cfg.jitter_strength, "jitter_p": cfg.jitter_p, "gray_p": cfg.gray_p,
            "per_batch": cfg.augment_draw == "batch", "color_drop": cfg.color_drop}


@register_augment("notebook", _notebook_options)
def notebook_augment(size: int, strength: float = 0.2, jitter_p: float = 0.5, gray_p: float = 0.5,
                     per_batch: bool = True, color_drop: str = "identity", mean: Sequence[float] = (0.0, 0.0, 0.0),
                     std: Sequence[float] = (1.0, 1.0, 1.0)) -> NotebookAugment:
    """The notebooks' augmentation (defaults: the CIFAR notebook's, quirks included)."""
    return NotebookAugment(size, 0.5, strength, jitter_p, gray_p, per_batch, color_drop, tuple(mean), tuple(std))


def eval_transform(
    images: Tensor, size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Tensor:
    """Evaluation transform: ``uint8`` NHWC to normalised ``(N, 3, size, size)``, resizing only if needed."""
    return normalize(resize(to_float(images), size), mean, std)
