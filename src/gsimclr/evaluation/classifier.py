"""Training a backbone with a linear classifier end to end: fine-tuning a pretrained encoder on a
fraction of the labels (the paper's 10%), and the fully supervised baseline with the same backbone.

Fine-tuning first trains the classifier on frozen features, then everything at a low learning
rate. Training images get a light augmentation (random resized crop with scale 0.5-1, flip).

Example:
    >>> import numpy as np
    >>> labels = np.repeat(np.arange(3), 10)
    >>> idx = label_subset(labels, 0.2, seed=0)
    >>> len(idx), sorted(set(labels[idx].tolist()))
    (6, [0, 1, 2])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gsimclr.data.splits import label_subset
from gsimclr.evaluation.fit import FitOptions, epoch_batches, fit, score, seeded
from gsimclr.evaluation.images import Images, LabelledImages, TensorBatches
from gsimclr.transforms.augment import IMAGENET_MEAN, IMAGENET_STD, Augment

__all__ = ["Classifier", "batch_bounds", "finetune", "label_subset", "supervised", "train_classifier",
           "train_head_on_features"]


class Classifier(nn.Module):
    """Backbone, then a linear classifier on standardised features (BatchNorm without affine
    parameters, as MAE's linear probe): the same feature scaling as the linear evaluation, so the
    classifier learns at one learning rate whatever the backbone's feature scale."""

    def __init__(self, backbone: nn.Module, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Sequential(nn.BatchNorm1d(backbone.num_features, affine=False),
                                nn.Linear(backbone.num_features, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each training batch of ``n`` images; a last batch of one image is merged into
    the one before (BatchNorm cannot train on a single image), and a data set of one image gives no batch.

    >>> batch_bounds(5, 2), batch_bounds(4, 2), batch_bounds(1, 2)
    ([(0, 2), (2, 5)], [(0, 2), (2, 4)], [])
    """
    return [(int(b[0]), int(b[-1]) + 1) for b in epoch_batches(torch.arange(n), batch_size, "merge")]


def _cross_entropy(model: nn.Module):
    return lambda batch: F.cross_entropy(model(batch[0]).float(), batch[1])


def train_classifier(model: Classifier, train: LabelledImages, epochs: int, lr: float, batch_size: int = 128,
                     optimizer: str = "adam", seed: int = 0, precision: str = "auto",
                     desc: str = "classifier") -> Classifier:
    """Cross-entropy training of the whole network with augmentation (a random resized crop with scale
    0.5-1 and a flip) and a cosine schedule; SGD with Nesterov momentum and weight decay 5e-4, or Adam."""
    augment = Augment(train.image_size, scale=(0.5, 1.0), jitter_p=0.0, gray_p=0.0, mean=train.mean, std=train.std)
    options = FitOptions(epochs, lr, batch_size, optimizer=optimizer, nesterov=True,
                         weight_decay=5e-4 if optimizer == "sgd" else 0.0, shuffle="numpy", lone="merge", seed=seed,
                         precision=precision, progress=desc)
    fit(model, train.training(augment, seed, stream=10_000), _cross_entropy(model), options)
    return model


def train_head_on_features(model: Classifier, train: LabelledImages, epochs: int, lr: float, batch_size: int = 64,
                           seed: int = 0, precision: str = "auto") -> dict:
    """Train the classifier on frozen backbone features, extracted once (no augmentation)."""
    model.eval()
    feats, labels = train.embed(model.backbone, precision=precision)
    options = FitOptions(epochs, lr, batch_size, schedule="constant", lone="merge", seed=seed, precision=precision)
    return fit(model.fc, TensorBatches(feats, labels), _cross_entropy(model.fc), options)


def accuracy(model: nn.Module, test: LabelledImages, precision: str = "auto", batch_size: int = 512) -> float:
    """Test top-1 (%) of ``model`` in inference mode."""
    return score(model.eval(), test.in_order(batch_size), precision)[1]


def _splits(train: Images, test: Images, image_size: int, device: torch.device, mean, std):
    return (LabelledImages(train, image_size, device, "training", mean, std),
            LabelledImages(test, image_size, device, "test", mean, std))


def finetune(backbone: nn.Module, train: Images, test: Images, fraction: float, image_size: int,
             head_epochs: int, epochs: int, lr: float, device: torch.device, seed: int = 0,
             precision: str = "auto", sampling: str = "stratified", head_lr: float | None = None,
             mean=IMAGENET_MEAN, std=IMAGENET_STD) -> float:
    """Fine-tune a pretrained backbone on a ``fraction`` of the training labels (drawn by ``sampling``,
    see :func:`gsimclr.evaluation.standard_linear.label_fraction_indices`); test top-1 (%).

    First the classifier alone on frozen features (``head_epochs``, learning rate ``head_lr``, default
    10 x ``lr``), then the whole network with augmentation at ``lr`` (``epochs``)."""
    from gsimclr.evaluation.standard_linear import label_fraction_indices

    train, test = _splits(train, test, image_size, device, mean, std)
    subset = train.subset(label_fraction_indices(train.data.labels, fraction, sampling, seed), "labelled")
    with seeded(seed):
        model = Classifier(backbone, train.num_classes).to(device, memory_format=torch.channels_last)
    batch = min(64, len(subset))
    train_head_on_features(model, subset, head_epochs, head_lr or lr * 10, batch, seed, precision)
    train_classifier(model, subset, epochs, lr, batch, seed=seed + 1, precision=precision, desc="fine-tune")
    return accuracy(model, test, precision)


def supervised(backbone: nn.Module, train: Images, test: Images, image_size: int, epochs: int, lr: float,
               device: torch.device, batch_size: int = 128, seed: int = 0, precision: str = "auto",
               mean=IMAGENET_MEAN, std=IMAGENET_STD) -> float:
    """The fully supervised baseline: the same backbone trained from scratch on all labels (SGD)."""
    train, test = _splits(train, test, image_size, device, mean, std)
    model = Classifier(backbone, train.num_classes).to(device, memory_format=torch.channels_last)
    train_classifier(model, train, epochs, lr, min(batch_size, len(train)), optimizer="sgd", seed=seed,
                     precision=precision, desc="supervised")
    return accuracy(model, test, precision)


def run_finetune(ctx) -> float:
    """The registered ``finetune`` evaluation: a copy of the pretrained backbone, fine-tuned."""
    import copy

    from gsimclr.transforms.augment import NORMALIZATIONS

    cfg = ctx.cfg
    backbone = copy.deepcopy(ctx.model.backbone)  # any backbone (timm ones too) with its pretrained weights
    mean, std = NORMALIZATIONS[cfg.normalize]
    return finetune(backbone, ctx.train, ctx.test, cfg.label_fraction, cfg.image_size, cfg.finetune_head_epochs,
                    cfg.finetune_epochs, cfg.finetune_lr, ctx.device, cfg.seed, cfg.precision,
                    sampling=getattr(cfg, "label_sampling", "stratified"), head_lr=cfg.finetune_head_lr,
                    mean=mean, std=std)
