"""Batched augmentations against torchvision, image by image, and the pipeline's behaviour."""

import dataclasses
import doctest

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from scipy.stats import ks_2samp
from torchvision.transforms import RandomResizedCrop

from gsimclr.errors import UserError
from gsimclr.transforms import augment as A

N = 6


def _images(seed: int, height: int = 20, width: int = 28) -> torch.Tensor:
    """Random float images (N, 3, H, W); half of them quantised to 8 bits (ties between channels, gray pixels)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, 3, height, width, generator=g)
    x[: N // 2] = torch.round(x[: N // 2] * 255) / 255
    x[0, :, :4] = x[0, :1, :4]  # some exactly gray pixels
    return x


def _per_image(tv_op, x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    return torch.stack([tv_op(img, float(f)) for img, f in zip(x, factors)])


# Max abs differences measured against torchvision 0.29 on CPU: brightness 0, contrast 6e-8,
# saturation 1.2e-7, grayscale 1.2e-7, hue 1.3e-6, blur 4.8e-7, resized crop 9e-7.
@pytest.mark.parametrize(
    ("ours", "theirs", "low", "high", "tol"),
    [
        (A.adjust_brightness, TF.adjust_brightness, 0.0, 2.0, 1e-5),
        (A.adjust_contrast, TF.adjust_contrast, 0.0, 2.0, 1e-5),
        (A.adjust_saturation, TF.adjust_saturation, 0.0, 2.0, 1e-5),
        (A.adjust_hue, TF.adjust_hue, -0.5, 0.5, 1e-5),
    ],
)
def test_colour_ops_match_torchvision(ours, theirs, low, high, tol):
    for seed in range(3):
        x = _images(seed)
        factors = low + (high - low) * torch.rand(N, generator=torch.Generator().manual_seed(100 + seed))
        assert (ours(x, factors) - _per_image(theirs, x, factors)).abs().max() <= tol


def test_grayscale_matches_torchvision_and_random_grayscale_selects_samples():
    x = _images(0)
    assert (A.rgb_to_grayscale(x) - TF.rgb_to_grayscale(x)).abs().max() <= 1e-5
    mask = torch.tensor([True, False, True, False, False, True])
    out = A.random_grayscale(x, mask)
    assert torch.equal(out[~mask], x[~mask])
    gray = out[mask]
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    assert (gray - TF.rgb_to_grayscale(x[mask], num_output_channels=3)).abs().max() <= 1e-5


@pytest.mark.parametrize("kernel_size", [3, 7, 9])
def test_gaussian_blur_matches_torchvision(kernel_size):
    x = _images(1)
    sigma = 0.1 + 1.9 * torch.rand(N, generator=torch.Generator().manual_seed(kernel_size))
    ours = A.gaussian_blur(x, sigma, kernel_size)
    theirs = torch.stack([TF.gaussian_blur(img, [kernel_size] * 2, [float(s)] * 2) for img, s in zip(x, sigma)])
    assert (ours - theirs).abs().max() <= 1e-5  # separable vs 2-D kernel: rounding only (~5e-7)


@pytest.mark.parametrize("size", [32, 8])  # mostly upscaling crops, then downscaling ones
def test_resized_crop_matches_torchvision(size):
    x = _images(2)
    g = torch.Generator().manual_seed(size)
    boxes = A.sample_crop_boxes(N, 20, 28, generator=g)
    flip = torch.tensor([True, False] * (N // 2))
    ours = A.resized_crop(x, boxes, size, flip)
    theirs = []
    for img, box, f in zip(x, boxes.long(), flip):
        top, left, height, width = box.tolist()
        crop = TF.resized_crop(img, top, left, height, width, [size, size], antialias=False)
        theirs.append(TF.horizontal_flip(crop) if f else crop)
    # The crop's edge pixels are clamped as F.interpolate does, so grid_sample reproduces
    # torchvision up to float rounding of the sampling coordinates (~1e-6), far below 1/255.
    assert (ours - torch.stack(theirs)).abs().max() <= 1e-5


def test_resized_crop_of_whole_image_at_same_size_is_identity_or_flip():
    x = _images(3, 20, 20)
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0]]).expand(N, 4)
    assert (A.resized_crop(x, boxes, 20) - x).abs().max() <= 1e-5
    flipped = A.resized_crop(x, boxes, 20, torch.ones(N, dtype=torch.bool))
    assert (flipped - x.flip(-1)).abs().max() <= 1e-5


def test_color_jitter_applies_each_samples_order_like_torchvision():
    x = _images(4)
    params = A.sample_jitter(N, strength=1.0, generator=torch.Generator().manual_seed(5))
    ops = {
        A.BRIGHTNESS: (TF.adjust_brightness, params.brightness),
        A.CONTRAST: (TF.adjust_contrast, params.contrast),
        A.SATURATION: (TF.adjust_saturation, params.saturation),
        A.HUE: (TF.adjust_hue, params.hue),
    }
    theirs = []
    for i, img in enumerate(x):
        for op in params.order[i].tolist():
            fn, factors = ops[op]
            img = fn(img, float(factors[i]))
        theirs.append(img)
    assert (A.color_jitter(x, params) - torch.stack(theirs)).abs().max() <= 1e-5


@pytest.mark.parametrize("p", [1.0, 0.8, 0.0])
def test_gathered_color_jitter_equals_masked_bit_for_bit(p):
    """The CPU path (each operation on its own samples) and the compile-friendly masked path agree
    exactly, including samples left unjittered (p < 1) and a batch with no jitter at all."""
    g = torch.Generator().manual_seed(11)
    x = torch.rand(64, 3, 12, 10, generator=g)
    x[:8] = (x[:8] * 255).round() / 255  # 8-bit values: ties between channels, gray pixels
    params = A.sample_jitter(64, strength=1.0, p=p, generator=g)
    masked, gathered = A.color_jitter(x, params, gather=False), A.color_jitter(x, params, gather=True)
    assert torch.equal(masked, gathered)
    assert A.color_jitter(x, params) is not x and torch.equal(A.color_jitter(x, params), gathered)  # CPU default


def test_sample_jitter_ranges_orders_and_probability():
    n, s = 4000, 0.5
    params = A.sample_jitter(n, s, p=0.8, generator=torch.Generator().manual_seed(0))
    applied = params.hue != 0
    for factor in (params.brightness, params.contrast, params.saturation):
        assert factor.min() >= 1 - 0.8 * s and factor.max() <= 1 + 0.8 * s
        assert torch.all(factor[~applied] == 1)
    assert params.hue.abs().max() <= 0.2 * s
    assert abs(applied.float().mean().item() - 0.8) < 0.03
    assert torch.equal(params.order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    assert len({tuple(row) for row in params.order.tolist()}) == 24  # every permutation occurs


def _torchvision_boxes(n, height, width, seed):
    torch.manual_seed(seed)
    image = torch.empty(3, height, width)
    return torch.tensor([RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)])


@pytest.mark.parametrize(("height", "width", "n"), [(32, 32, 20_000), (8, 64, 10_000)])
def test_sample_crop_boxes_follows_random_resized_crop(height, width, n):
    """Two-sample KS tests; on 8x64 about half the samples take the centre-crop fallback."""
    ours = A.sample_crop_boxes(n, height, width, generator=torch.Generator().manual_seed(0)).long()
    theirs = _torchvision_boxes(n, height, width, seed=1)
    for boxes in (ours, theirs):
        top, left, h, w = boxes.unbind(dim=1)
        assert torch.all((top >= 0) & (left >= 0) & (h >= 1) & (w >= 1))
        assert torch.all((top + h <= height) & (left + w <= width))

    def stats(boxes):
        top, left, h, w = boxes.double().unbind(dim=1)
        return {"area": h * w / (height * width), "log_ratio": torch.log(w / h), "top": top, "left": left}

    for key, a in stats(ours).items():
        assert ks_2samp(a.numpy(), stats(theirs)[key].numpy()).pvalue > 1e-3, key
    if (height, width) == (8, 64):
        fallback = (ours[:, 2] == 8) & (ours[:, 3] == 11)
        assert 0.3 < fallback.float().mean() < 0.7


def test_sample_crop_boxes_fallback_for_impossible_scale():
    boxes = A.sample_crop_boxes(5, 10, 40, scale=(2.0, 3.0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(boxes, torch.tensor([[0.0, 13.0, 10.0, 13.0]]).expand(5, 4))


def _uint8_batch(n=8, height=32, width=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, height, width, 3), dtype=torch.uint8, generator=g)


def test_to_float_layouts():
    images = _uint8_batch(2, 5, 7)
    x = A.to_float(images)
    assert x.shape == (2, 3, 5, 7) and x.dtype == torch.float32
    assert torch.equal(x, images.permute(0, 3, 1, 2).float() / 255)
    assert A.to_float(x) is x
    with pytest.raises(ValueError):
        A.to_float(images.permute(0, 3, 1, 2))


def test_augment_shape_range_and_every_op():
    augment = A.Augment(size=24, jitter_strength=1.0, blur_p=0.5, mean=(0, 0, 0), std=(1, 1, 1))
    out = augment(_uint8_batch(16, 40, 36), generator=torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 24, 24) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1 + 1e-6


def test_augment_is_deterministic_per_seed_and_random_per_sample():
    augment = A.simclr_augment(32, blur=True)
    images = _uint8_batch(1).expand(8, 32, 32, 3)  # eight copies of one image

    def run(seed):
        return augment(images, generator=torch.Generator().manual_seed(seed))

    first = run(0)
    assert torch.equal(first, run(0))
    assert not torch.allclose(first, run(1))
    flat = first.flatten(1)
    assert all(not torch.allclose(flat[i], flat[j]) for i in range(8) for j in range(i + 1, 8))


def test_paper_preset_has_no_crop():
    images = _uint8_batch(6, 32, 32)
    paper = A.paper_augment(32, mean=(0, 0, 0), std=(1, 1, 1))
    assert not paper.crop and paper.blur_p == 0
    assert (paper.flip_p, paper.jitter_strength, paper.jitter_p, paper.gray_p) == (0.5, 0.2, 0.5, 0.5)
    identity = dataclasses.replace(paper, flip_p=0.0, jitter_p=0.0, gray_p=0.0)
    assert torch.equal(identity(images), A.to_float(images))
    flip_only = dataclasses.replace(identity, flip_p=1.0)
    assert torch.equal(flip_only(images), A.to_float(images).flip(-1))


def test_grayscale_step_makes_channels_equal():
    gray = dataclasses.replace(A.paper_augment(32, mean=(0, 0, 0), std=(1, 1, 1)), gray_p=1.0)
    out = gray(_uint8_batch(4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


def test_presets_and_registry():
    assert A.simclr_augment(32).blur_p == 0 and A.simclr_augment(96).blur_p == 0.5
    assert A.simclr_augment(96).kernel_size == 9 and A.simclr_augment(224).kernel_size == 23
    assert A.simclr_augment(32, blur=True).blur_p == 0.5
    simclr = A.simclr_augment(32)
    assert simclr.crop and (simclr.flip_p, simclr.jitter_p, simclr.gray_p) == (0.5, 0.8, 0.2)
    assert simclr.mean == A.IMAGENET_MEAN and simclr.std == A.IMAGENET_STD
    assert A.build_augment("paper", 64, mean=(0.5,) * 3) == A.paper_augment(64, mean=(0.5,) * 3)
    with pytest.raises(UserError, match="unknown augmentation 'nope'"):
        A.build_augment("nope", 32)
    with pytest.raises(ValueError):
        A.Augment(size=32, gray_p=1.5)
    with pytest.raises(ValueError):
        A.Augment(size=32, blur_kernel=4)


def test_eval_transform_resizes_only_when_needed():
    images = _uint8_batch(3, 32, 32)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.4)
    expected = TF.normalize(A.to_float(images), list(mean), list(std))
    assert (A.eval_transform(images, 32, mean, std) - expected).abs().max() <= 1e-6
    resized = A.eval_transform(images, 48, mean, std)
    expected = TF.normalize(TF.resize(A.to_float(images), [48, 48], antialias=True), list(mean), list(std))
    assert resized.shape == (3, 3, 48, 48) and (resized - expected).abs().max() <= 1e-5


def test_module_examples():
    result = doctest.testmod(A, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_pipeline_traces_as_one_graph():
    """fullgraph=True fails on any graph break: .item(), .nonzero(), data-dependent shapes."""
    augment = A.simclr_augment(32, blur=True)
    compiled = torch.compile(lambda images: augment(images), fullgraph=True, backend="eager")
    out = compiled(_uint8_batch(4, 40, 40))
    assert out.shape == (4, 3, 32, 32)
