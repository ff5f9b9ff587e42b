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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from gsimclr.data.dataset import ImageData
from gsimclr.runtime import autocast, backward_step, grad_scaler, seed_epoch
from gsimclr.transforms.augment import Augment, eval_transform


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


def label_subset(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A stratified ``fraction`` of the indices, at least one per class, sorted."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picks.append(rng.choice(idx, max(1, round(fraction * len(idx))), replace=False))
    return np.sort(np.concatenate(picks))


@torch.no_grad()
def accuracy(model: nn.Module, data: ImageData, image_size: int, device: torch.device, precision: str = "auto",
             batch_size: int = 512) -> float:
    model.eval()
    images, correct = torch.from_numpy(data.images), 0
    labels = torch.from_numpy(data.labels)
    for i in range(0, len(data), batch_size):
        x = eval_transform(images[i:i + batch_size].to(device), image_size)
        with autocast(device, precision):
            pred = model(x).argmax(1).cpu()
        correct += int((pred == labels[i:i + batch_size]).sum())
    return 100.0 * correct / len(data)


def train_classifier(model: Classifier, data: ImageData, image_size: int, epochs: int, lr: float, device: torch.device,
                     batch_size: int = 128, optimizer: str = "adam", seed: int = 0,
                     precision: str = "auto", desc: str = "classifier") -> Classifier:
    """Cross-entropy training of the whole network with augmentation and a cosine schedule."""
    params = list(model.parameters())
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    else:
        opt = torch.optim.Adam(params, lr=lr)
    steps_per_epoch = -(-len(data) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * steps_per_epoch))
    augment = Augment(image_size, scale=(0.5, 1.0), jitter_p=0.0, gray_p=0.0)
    images = torch.from_numpy(data.images)
    labels = torch.from_numpy(data.labels)
    if device.type == "cuda":
        images, labels = images.to(device), labels.to(device)
    rng = np.random.default_rng(seed)
    scaler = grad_scaler(device, precision)  # enabled for fp16 only
    for epoch in tqdm(range(epochs), desc=desc, unit="epoch", leave=False, disable=None):
        model.train()
        seed_epoch(seed, 10_000 + epoch)
        order = torch.from_numpy(rng.permutation(len(data)))
        for i in range(0, len(data), batch_size):
            idx = order[i:i + batch_size].to(images.device)
            x = augment(images[idx].to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
            y = labels[idx].to(device, non_blocking=True)
            with autocast(device, precision):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            backward_step(loss, opt, scaler)
            sched.step()
    return model


def train_head_on_features(model: Classifier, data: ImageData, image_size: int, epochs: int, lr: float,
                           device: torch.device, batch_size: int = 64, seed: int = 0, precision: str = "auto") -> None:
    """Train the classifier on frozen backbone features, extracted once (no augmentation)."""
    model.eval()
    with torch.no_grad(), autocast(device, precision):
        images = torch.from_numpy(data.images)
        feats = torch.cat([model.backbone(eval_transform(images[i:i + 512].to(device), image_size)).float()
                           for i in range(0, len(data), 512)])
    labels = torch.from_numpy(data.labels).to(device)
    opt = torch.optim.Adam(model.fc.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.fc.train()
    for _ in range(epochs):
        order = torch.randperm(len(feats), generator=gen).to(device)
        for i in range(0, len(feats), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            loss = F.cross_entropy(model.fc(feats[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def finetune(backbone: nn.Module, train: ImageData, test: ImageData, fraction: float, image_size: int,
             head_epochs: int, epochs: int, lr: float, device: torch.device, seed: int = 0,
             precision: str = "auto", sampling: str = "stratified") -> float:
    """Fine-tune a pretrained backbone on a ``fraction`` of the training labels (drawn by ``sampling``,
    see :func:`gsimclr.evaluation.standard_linear.label_fraction_indices`); test top-1 (%).

    First the classifier alone on frozen features (``head_epochs``, learning rate 10 x ``lr``), then
    the whole network with augmentation at ``lr`` (``epochs``)."""
    from gsimclr.evaluation.standard_linear import label_fraction_indices

    subset = train.subset(label_fraction_indices(train.labels, fraction, sampling, seed))
    model = Classifier(backbone, train.num_classes).to(device, memory_format=torch.channels_last)
    batch = min(64, len(subset))
    train_head_on_features(model, subset, image_size, head_epochs, lr * 10, device, batch, seed, precision)
    train_classifier(model, subset, image_size, epochs, lr, device, batch, seed=seed + 1,
                     precision=precision, desc="fine-tune")
    return accuracy(model, test, image_size, device, precision)


def supervised(backbone: nn.Module, train: ImageData, test: ImageData, image_size: int, epochs: int, lr: float,
               device: torch.device, batch_size: int = 128, seed: int = 0, precision: str = "auto") -> float:
    """The fully supervised baseline: the same backbone trained from scratch on all labels (SGD)."""
    model = Classifier(backbone, train.num_classes).to(device, memory_format=torch.channels_last)
    train_classifier(model, train, image_size, epochs, lr, device, min(batch_size, len(train)), optimizer="sgd",
                     seed=seed, precision=precision, desc="supervised")
    return accuracy(model, test, image_size, device, precision)


def run_finetune(ctx) -> float:
    """The registered ``finetune`` evaluation: a copy of the pretrained backbone, fine-tuned."""
    import copy

    cfg = ctx.cfg
    backbone = copy.deepcopy(ctx.model.backbone)  # any backbone (timm ones too) with its pretrained weights
    return finetune(backbone, ctx.train, ctx.test, cfg.label_fraction, cfg.image_size, cfg.finetune_head_epochs,
                    cfg.finetune_epochs, cfg.finetune_lr, ctx.device, cfg.seed, cfg.precision,
                    sampling=getattr(cfg, "label_sampling", "stratified"))

