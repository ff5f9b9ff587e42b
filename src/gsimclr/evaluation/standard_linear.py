"""The standard linear protocol of the SSL libraries, beside ours.

solo-learn and lightly report linear accuracy from a linear layer trained on the frozen backbone
with SGD (momentum 0.9, no weight decay, learning rate 0.1 per 256 images), images augmented every
epoch with a random resized crop (scale 0.08-1) and a horizontal flip, evaluated on centre (here:
resized) test images, for 90-100 epochs; lightly uses a cosine schedule, solo-learn a step or
warm-up cosine one. This module runs that protocol (cosine, 100 epochs by default), so that a number
can be set beside their tables. Ours (:mod:`gsimclr.evaluation.linear`) trains Adam on
standardised features extracted once from unaugmented images: much cheaper, but not the same
number. The result table names the protocol behind each number.

Label fractions (semi-supervised tables) are drawn by :func:`label_fraction_indices`: ``stratified``
(the same fraction of every class, at least one image each; solo-learn's ``data_fraction`` draws a
class-stratified split) or ``uniform`` (a random fraction of all images, whatever their class).

Example:
    >>> import numpy as np
    >>> labels = np.array([0] * 90 + [1] * 10)
    >>> np.bincount(labels[label_fraction_indices(labels, 0.1, "stratified")]).tolist()
    [9, 1]
    >>> len(label_fraction_indices(labels, 0.1, "uniform"))
    10
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gsimclr.errors import UserError
from gsimclr.evaluation.fit import FitOptions, fit, freeze, score, seeded
from gsimclr.evaluation.images import Images, LabelledImages
from gsimclr.runtime import autocast
from gsimclr.transforms.augment import IMAGENET_MEAN, IMAGENET_STD, Augment

PROTOCOL = "standard"  # the name the result table shows; ours is "features"
SAMPLINGS = ("stratified", "uniform")


def label_fraction_indices(labels: np.ndarray, fraction: float, sampling: str = "stratified",
                           seed: int = 0, option: str = "--label-fraction") -> np.ndarray:
    """Sorted indices of a ``fraction`` of the images, by ``sampling`` (see the module docstring);
    ``option`` is the setting that gave ``fraction``, named in errors and warnings."""
    labels = np.asarray(labels)
    if not 0 < fraction <= 1:
        raise UserError(f"{option}: the label fraction must be in (0, 1], got {fraction}")
    if sampling not in SAMPLINGS:
        raise UserError(f"label sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    rng = np.random.default_rng(seed)
    if fraction == 1:
        return np.arange(len(labels))
    if sampling == "uniform":
        picked = np.sort(rng.choice(len(labels), max(1, round(fraction * len(labels))), replace=False))
        check_every_class(labels, picked, fraction, sampling, option)
        return picked
    from gsimclr.data.splits import label_subset  # the stratified draw fine-tuning always used

    return check_stratified_floor(labels, label_subset(labels, fraction, seed), fraction, option)


def check_stratified_floor(labels: np.ndarray, picked: np.ndarray, fraction: float,
                           option: str = "--label-fraction") -> np.ndarray:
    """``picked``, with a warning when the stratified draw's one image per class took far more than the
    fraction asked (``--label-fraction 0.001`` of 100 images in 10 classes is 10 images, 10%): the results
    table names the fraction asked, so the labels really used are said."""
    n, k = len(labels), len(np.unique(labels))
    if n and len(picked) > 1.5 * max(1.0, fraction * n):
        warnings.warn(f"{option} {fraction:g} of {n} labelled images is less than one image per class: the "
                      f"stratified draw takes at least one of each of the {k} classes, {len(picked)} images "
                      f"({100 * len(picked) / n:.3g}%)", stacklevel=2)
    return picked


def check_every_class(labels: np.ndarray, picked: np.ndarray, fraction: float, sampling: str,
                      option: str = "--label-fraction") -> int:
    """Warn when the labelled subset ``picked`` leaves a class of ``labels`` without an image: a uniform
    draw may do that by design (it is the protocol), but a classifier cannot learn a class it never sees,
    so the number is said. Returns how many classes are missing."""
    missing = np.setdiff1d(np.unique(labels), np.asarray(labels)[picked])
    if len(missing):
        warnings.warn(f"{option} {fraction:g} with --label-sampling {sampling} draws {len(picked)} labelled "
                      f"images and leaves {len(missing)} of {len(np.unique(labels))} classes without one (they cannot "
                      f"be predicted); raise {option} or use --label-sampling stratified", stacklevel=2)
    return len(missing)


def standard_linear_eval(backbone: nn.Module, train: Images, test: Images, image_size: int,
                         device: torch.device, epochs: int = 100, batch_size: int = 256, lr: float = 0.1,
                         momentum: float = 0.9, weight_decay: float = 0.0, fraction: float = 1.0,
                         sampling: str = "stratified", seed: int = 0, precision: str = "auto",
                         mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict:
    """Top-1 accuracy (%) of the standard linear protocol; returns ``{"top1", "protocol", ...settings}``.

    ``lr`` is per 256 images (scaled linearly with ``batch_size``, as lightly does). The backbone stays
    frozen in eval mode (BatchNorm statistics unchanged); only the linear layer learns. Inputs are
    normalised with ``mean``/``std`` (the run's ``--normalize``)."""
    if not (train.has_labels and test.has_labels):
        raise UserError("the standard linear protocol needs labelled train and test data")
    train = LabelledImages(train, image_size, device, "training", mean, std)
    test = LabelledImages(test, image_size, device, "test", mean, std)
    picked = label_fraction_indices(train.data.labels, fraction, sampling, seed, "--standard-label-fraction")
    subset = train.subset(picked) if fraction < 1 else train
    backbone = freeze(backbone.to(device, memory_format=torch.channels_last))
    n_classes = max(train.num_classes, int(test.labels.max()) + 1)
    with seeded(seed):
        clf = nn.Linear(backbone.num_features, n_classes).to(device)
    batch = min(batch_size, len(subset))
    options = FitOptions(epochs, lr * batch / 256, batch, optimizer="sgd", momentum=momentum,
                         weight_decay=weight_decay, shuffle="numpy", seed=seed, precision=precision)
    augment = Augment(image_size, scale=(0.08, 1.0), jitter_p=0.0, gray_p=0.0, mean=tuple(mean), std=tuple(std))

    def loss(batch_: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad(), autocast(train.device, precision):
            feats = backbone(batch_[0]).float()
        return F.cross_entropy(clf(feats).float(), batch_[1])

    fit(clf, subset.training(augment, seed, stream=20_000), loss, options, train_mode=clf.train)
    top1 = score(nn.Sequential(backbone, clf).eval(), test.in_order(512), precision)[1]
    return {"top1": top1, "protocol": PROTOCOL, "epochs": epochs, "batch_size": batch,
            "lr": lr, "momentum": momentum, "weight_decay": weight_decay, "fraction": fraction,
            "sampling": sampling, "train_images": len(subset)}


def run_standard_linear(ctx) -> dict:
    """The registered ``linear_standard`` evaluation: the standard protocol on the backbone (P3)."""
    import copy

    from gsimclr.transforms.augment import NORMALIZATIONS

    cfg = ctx.cfg
    mean, std = NORMALIZATIONS[cfg.normalize]
    return standard_linear_eval(copy.deepcopy(ctx.model.backbone), ctx.train, ctx.test, cfg.image_size, ctx.device,
                                epochs=cfg.standard_epochs, batch_size=cfg.standard_batch_size, lr=cfg.standard_lr,
                                fraction=cfg.standard_label_fraction, sampling=cfg.label_sampling, seed=cfg.seed,
                                precision=cfg.precision, mean=mean, std=std)
