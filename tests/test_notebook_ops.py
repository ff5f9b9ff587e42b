"""The notebooks' TensorFlow/Keras semantics, held against TensorFlow's own outputs
(tests/data/tf_reference.npz, made by scripts/make_tf_reference.py with tensorflow-cpu 2.21)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from gsimclr.models.registry import create_backbone
from gsimclr.models.resnet import Bottleneck, PaperResNet
from gsimclr.training.optim import lr_multiplier
from gsimclr.methods.views import VIEW_FORWARDS
from gsimclr.transforms.augment import (
    NotebookAugment,
    TFJitterParams,
    build_augment,
    rgb_to_grayscale,
    sample_tf_jitter,
    tf_adjust_brightness,
    tf_adjust_contrast,
    tf_adjust_hue,
    tf_adjust_saturation,
    tf_color_jitter,
)

REF = np.load(Path(__file__).parent / "data" / "tf_reference.npz")


def _nchw(name):
    return torch.from_numpy(REF[name]).permute(0, 3, 1, 2)


def _vec(name):
    return torch.from_numpy(REF[name])


@pytest.mark.parametrize("op,param,ref", [
    (tf_adjust_brightness, "brightness", "adjust_brightness"),
    (tf_adjust_contrast, "contrast", "adjust_contrast"),
    (tf_adjust_saturation, "saturation", "adjust_saturation"),
    (tf_adjust_hue, "hue", "adjust_hue"),
])
def test_tf_colour_ops_match_tensorflow(op, param, ref):
    out = op(_nchw("x"), _vec(param))
    assert torch.allclose(out, _nchw(ref), atol=5e-6)


def test_tf_jitter_chain_matches_tensorflow_and_skips_unapplied():
    x = _nchw("x")
    apply = torch.tensor([True, True, False, True, True, True])
    params = TFJitterParams(_vec("brightness"), _vec("contrast"), _vec("saturation"), _vec("hue"), apply)
    out = tf_color_jitter(x, params)
    assert torch.allclose(out[apply], _nchw("jitter")[apply], atol=5e-6)
    assert torch.equal(out[2], x[2])  # not applied: unchanged and not clipped
    assert torch.allclose(rgb_to_grayscale(x).expand_as(x), _nchw("grayscale"), atol=1e-6)


def test_brightness_is_additive_not_multiplicative():
    x = torch.full((1, 3, 2, 2), 0.2)
    assert torch.allclose(tf_adjust_brightness(x, torch.tensor([0.3])), torch.full_like(x, 0.5))


def test_per_batch_draws_share_parameters_per_image_draws_do_not():
    g = torch.Generator().manual_seed(0)
    batch = sample_tf_jitter(16, 0.2, 0.5, per_batch=True, generator=g)
    assert all(len(set(t.tolist())) == 1 for t in batch)
    image = sample_tf_jitter(16, 0.2, 0.5, per_batch=False, generator=g)
    assert len(set(image.brightness.tolist())) == 16
    assert 0 < int(image.apply.sum()) < 16


def _views(aug, n=64, seed=0):
    images = torch.randint(0, 256, (n, 8, 8, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return images, aug(images, generator=torch.Generator().manual_seed(seed))


def test_colour_drop_identity_quirk_vs_working():
    kwargs = dict(size=8, flip_p=0.0, jitter_p=0.0, gray_p=1.0)
    images, out = _views(NotebookAugment(color_drop="identity", **kwargs))
    assert torch.allclose(out, images.permute(0, 3, 1, 2).float() / 255)
    _, gray = _views(NotebookAugment(color_drop="grayscale", **kwargs))
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])


def test_per_batch_flip_flips_all_or_none():
    images, out = _views(NotebookAugment(size=8, jitter_p=0.0, gray_p=0.0, per_batch=True), seed=3)
    x = images.permute(0, 3, 1, 2).float() / 255
    flipped = [bool(torch.allclose(o, xi.flip(-1))) and not torch.allclose(o, xi) for o, xi in zip(out, x)]
    assert len(set(flipped)) == 1
    _, out = _views(NotebookAugment(size=8, jitter_p=0.0, gray_p=0.0, per_batch=False), seed=3)
    flipped = [bool(torch.allclose(o, xi.flip(-1))) for o, xi in zip(out, x)]
    assert len(set(flipped)) == 2


def test_notebook_augment_registered_and_unnormalised():
    aug = build_augment("notebook", 8, strength=1.0, jitter_p=0.8, gray_p=0.2, per_batch=False, color_drop="grayscale")
    _, out = _views(aug)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("kwargs,ref", [
    (dict(schedule="cosine_restarts", restart_steps=1000), "restarts"),
    (dict(schedule="cosine_restarts", restart_steps=300, t_mul=1.5, m_mul=0.8), "restarts_m"),
    (dict(schedule="cosine", decay_steps=1000), "decay"),
])
def test_schedules_match_keras(kwargs, ref):
    f = lr_multiplier(total_steps=10**6, **kwargs)
    ours = np.array([0.1 * f(int(s)) for s in REF["restart_steps"]])
    assert np.abs(ours - REF[ref]).max() < 1e-6


def test_schedule_defaults_unchanged():
    f = lr_multiplier("cosine", total_steps=100, warmup_steps=10)
    assert (round(f(0), 2), round(f(10), 2), round(f(100), 2)) == (0.1, 1.0, 0.0)
    with pytest.raises(ValueError):
        lr_multiplier("cosine_restarts", 100, restart_steps=10, t_mul=0.5)


def test_paper_resnet_shortcut_without_bn_has_bias():
    net = PaperResNet(n_blocks=0, shortcut_bn=False)
    shortcuts = [m.shortcut for m in net.modules() if isinstance(m, Bottleneck) and not isinstance(m.shortcut, torch.nn.Identity)]
    assert len(shortcuts) == 3
    assert all(len(s) == 1 and s[0].bias is not None for s in shortcuts)
    assert all(isinstance(s[1], torch.nn.BatchNorm2d) for s in [m.shortcut for m in PaperResNet(n_blocks=0).modules()
                                                                 if isinstance(m, Bottleneck) and len(m.shortcut._modules)])


def test_paper_resnet_depths_match_notebooks():
    convs = lambda net: sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())  # noqa: E731
    # n = 4 (pretraining): 3 groups x (projection + 3 identity) blocks x 3 convs + 3 shortcuts + stem
    assert convs(PaperResNet(n_blocks=3)) == 3 * 4 * 3 + 3 + 1
    assert convs(PaperResNet(n_blocks=1)) == 3 * 2 * 3 + 3 + 1  # ResNet20 (n = 2)
    assert PaperResNet(n_blocks=1)(torch.zeros(2, 3, 32, 32)).shape == (2, 256)


def test_keras_defaults_initialisers_and_batch_norm():
    torch.manual_seed(0)
    net = create_backbone("paper_resnet", n_blocks=0, defaults="keras")
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == 0.01 and m.eps == 1e-3 for m in bns)
    r50 = create_backbone("resnet50", defaults="keras")
    assert {m.eps for m in r50.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1.001e-5}
    assert all(m.momentum == 0.1 for m in create_backbone("paper_resnet", n_blocks=0).modules()
               if isinstance(m, torch.nn.BatchNorm2d))
    stem = net.net[0].weight
    std = (2 / 27) ** 0.5
    assert stem.abs().max() <= 2 * std / 0.87962566103423978 + 1e-6
    torch.manual_seed(0)
    assert not torch.equal(create_backbone("paper_resnet", n_blocks=0).net[0].weight, stem)


def test_resnet50_v1_stride_in_first_1x1():
    net = create_backbone("resnet50", downsample_in_1x1=True).net
    block = net.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert create_backbone("resnet50").net.layer2[0].conv2.stride == (2, 2)


def test_separate_views_use_per_view_batch_statistics():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4), torch.nn.BatchNorm1d(4))
    views = torch.randn(2, 8, 3, 2, 2)
    separate = VIEW_FORWARDS["separate"](net, views)
    assert torch.allclose(separate, torch.stack([net(v) for v in views]))  # each view with its own statistics
    joint = VIEW_FORWARDS["joint"](net, views)
    assert torch.allclose(joint, net(views.flatten(0, 1)).view(2, 8, 4))
    assert not torch.allclose(joint, separate)


def test_rank_order_sampler_is_the_notebooks_fixed_order():
    from gsimclr.guidance.samplers import PaperBatchSampler, rank_order

    labels = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1, 0])
    order = rank_order(labels)
    assert labels[order].tolist() == [0, 1, 2] * 3 + [0]
    assert order[:3].tolist() == [0, 1, 3]  # each cluster's lowest index first
    sampler = PaperBatchSampler(labels, 3)  # the remainder is dropped
    batches = [b.tolist() for b in sampler]
    sampler.set_epoch(7)
    assert [b.tolist() for b in sampler] == batches and len(batches) == 3 == len(sampler)


def test_buffer_shuffle_and_frozen_order():
    from gsimclr.guidance.samplers import RandomBatchSampler, buffer_shuffle

    order = buffer_shuffle(2000, 16, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(2000))
    assert order[0] < 16 and np.abs(order - np.arange(2000)).max() < 200  # a small buffer moves elements little
    frozen = RandomBatchSampler(100, 10, seed=1, shuffle_buffer=32, reshuffle=False)
    first = [b.tolist() for b in frozen]
    frozen.set_epoch(3)
    assert [b.tolist() for b in frozen] == first
    fresh = RandomBatchSampler(100, 10, seed=1)
    fresh.set_epoch(3)
    assert [b.tolist() for b in fresh] != first


def test_stretch_resize_ignores_aspect(tmp_path):
    from PIL import Image

    from gsimclr.data.sources import load_split

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        img = np.zeros((40, 80, 3), np.uint8)
        img[:, :20] = 255  # left quarter white
        Image.fromarray(img).save(tmp_path / c / "x.png")
    crop = load_split(str(tmp_path), image_size=20, cache=False)
    stretch = load_split(str(tmp_path), image_size=20, cache=False, resize="stretch")
    assert stretch.images.shape == crop.images.shape == (2, 20, 20, 3)
    assert stretch.images[0, :, :4].min() == 255 and stretch.images[0, :, 6:].max() == 0  # the whole width kept
    assert crop.images[0, :, :4].max() < 50  # a centre crop cuts the white quarter off


def test_autoencoder_notebook_decoder_and_kmeans_restarts():
    from gsimclr.models.autoencoder import DenoisingAutoencoder
    from gsimclr.guidance.kmeans import kmeans

    ae = DenoisingAutoencoder("shallow", decoder="upsample_first")
    assert isinstance(ae.decoder[0], torch.nn.Upsample) and isinstance(ae.decoder[1], torch.nn.Conv2d)
    assert ae(torch.rand(2, 3, 32, 32)).shape == (2, 3, 32, 32)
    assert isinstance(DenoisingAutoencoder("shallow").decoder[0], torch.nn.Conv2d)
    feats = np.random.default_rng(0).normal(size=(60, 4))
    assert kmeans(feats, 5, n_init=10).shape == (60,)
