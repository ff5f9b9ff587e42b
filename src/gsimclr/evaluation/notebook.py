"""The G-SimCLR notebooks' evaluation protocols, beside gsimclr's own (:mod:`.linear`, :mod:`.classifier`).

All three train with Keras' ``fit`` semantics: Adam (Keras' epsilon 1e-7), cross-entropy of a
softmax Dense layer, the training samples reshuffled every epoch in batches of 64 (the last one
short), a validation loss after each epoch and :class:`~gsimclr.evaluation.early_stopping.EarlyStopping`
(patience 2 in every notebook). The result is the test top-1 of the final weights, with the epoch
early stopping chose.

- :func:`notebook_linear_probe` (``Linear_Evaluation.ipynb``): a Dense softmax on raw (not
  standardised) frozen features, Adam 1e-3, up to 100 epochs (ImageNet P2/P3: 35).
- :func:`notebook_finetune` (``Fine_tune_10Perc.ipynb``): 10% of the training images drawn
  uniformly at random (CIFAR: 5,000 without replacement; ImageNet: ``len // 10`` = 125 draws *with*
  replacement), no augmentation; a Dense head on the frozen encoder (Adam 1e-3, up to 35 epochs),
  then every layer (Adam 1e-5, up to 35 epochs). The encoder is called with ``training=False``, so
  its BatchNorm layers stay in inference mode (running statistics used, not updated; their scale
  and shift still train): ``bn="frozen"``.
- :func:`notebook_supervised` (``Supervised_Training_*.ipynb``): a network trained from scratch on
  every label, Adam 1e-3, batch 64, up to 75 (CIFAR, ResNet20) or 200 (ImageNet, ResNet-50) epochs.
  The ImageNet notebook builds ResNet-50 with ``training=True`` baked into the call, so its BatchNorm
  uses batch statistics even on the test set: ``bn_eval="batch"``.

The notebooks' quirk: ``validation_data`` is the test set, so early stopping selects the epoch on
the test set (``select_on="test"``). ``select_on="holdout"`` carves a stratified
``holdout_fraction`` out of the training samples (for fine-tuning: out of the labelled subset) and
selects on it, so the test set is only used for the final number.

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(300, 6); y = (x[:, 0] > 0).long()
    >>> r = notebook_linear_probe(x[:200], y[:200], x[200:], y[200:], epochs=30, lr=0.02, select_on="holdout")
    >>> r["top1"] > 85, r["selected_on"], r["best_epoch"] <= r["epochs_run"] <= 30
    (True, 'holdout', True)
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gsimclr.data.dataset import ImageData
from gsimclr.evaluation.classifier import label_subset
from gsimclr.evaluation.early_stopping import EarlyStopping
from gsimclr.runtime import autocast
from gsimclr.transforms.augment import IMAGENET_MEAN, IMAGENET_STD, eval_transform

SELECT_ON = ("test", "holdout")
LABEL_SAMPLINGS = ("stratified", "uniform", "uniform_replace")
FINETUNE_BN = ("frozen", "train")
BN_EVAL = ("running", "batch")
KERAS_ADAM_EPS = 1e-7


def keras_dense(in_features: int, out_features: int, defaults: str = "keras", kernel: str = "glorot_uniform") -> nn.Linear:
    """A Dense layer with Keras' initialisers (``defaults="keras"``: ``kernel`` weights, zero bias) or torch's."""
    layer = nn.Linear(in_features, out_features)
    if defaults == "keras":
        if kernel == "he_normal":
            std = (2.0 / in_features) ** 0.5 / 0.87962566103423978
            nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
        else:
            nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
    return layer


def split_for_selection(labels: np.ndarray, select_on: str, holdout_fraction: float, seed: int):
    """(train indices, holdout indices or None): with ``select_on="holdout"`` a stratified
    ``holdout_fraction`` of ``labels`` is held out for model selection."""
    if select_on not in SELECT_ON:
        raise ValueError(f"select_on must be one of {', '.join(SELECT_ON)}, got {select_on!r}")
    if select_on == "test":
        return np.arange(len(labels)), None
    held = label_subset(labels, holdout_fraction, seed)
    if len(held) >= len(labels):
        from gsimclr.errors import UserError

        raise UserError(f"--holdout-fraction {holdout_fraction} leaves none of the {len(labels)} labelled samples "
                        "for training; use more data or --select-on test")
    return np.setdiff1d(np.arange(len(labels)), held), held


def fit(module: nn.Module, batch_loss: Callable[[torch.Tensor], torch.Tensor], n: int, val_loss: Callable[[], float],
        epochs: int, lr: float, batch_size: int, early_stopping: EarlyStopping, seed: int = 0,
        params=None, train_mode: Callable[[], None] | None = None) -> dict:
    """Keras' ``fit``: ``epochs`` passes over ``n`` samples reshuffled each epoch, Adam at ``lr`` on
    ``params`` (default: ``module``'s), ``batch_loss(indices)`` per batch, ``val_loss()`` after each
    epoch for early stopping (which saves and restores ``module``). Returns the early-stopping summary."""
    opt = torch.optim.Adam(list(params if params is not None else module.parameters()), lr=lr, eps=KERAS_ADAM_EPS)
    gen = torch.Generator().manual_seed(seed)
    early_stopping.start(module)
    for epoch in range(1, epochs + 1):
        (train_mode or module.train)()
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            loss = batch_loss(order[i:i + batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if early_stopping.update(epoch, val_loss(), module):
            break
    early_stopping.finish(module)
    return early_stopping.summary()


# --------------------------------------------------------------------------------------------
# Linear probe
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def _feature_loss(clf: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> float:
    clf.eval()
    return float(sum(F.cross_entropy(clf(x[i:i + chunk]), y[i:i + chunk], reduction="sum")
                     for i in range(0, len(x), chunk))) / len(x)


@torch.no_grad()
def _feature_top1(clf: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    clf.eval()
    return 100.0 * float((clf(x).argmax(1) == y).float().mean())


def train_dense_on_features(clf: nn.Module, xs: torch.Tensor, ys: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor,
                            epochs: int, lr: float, batch_size: int, early_stopping: EarlyStopping,
                            seed: int = 0) -> dict:
    """Fit a classifier on (device) features with validation features ``xv, yv``."""
    return fit(clf, lambda idx: F.cross_entropy(clf(xs[idx.to(xs.device)]), ys[idx.to(xs.device)]), len(xs),
               lambda: _feature_loss(clf, xv, yv), epochs, lr, batch_size, early_stopping, seed)


def notebook_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                          epochs: int = 100, lr: float = 1e-3, batch_size: int = 64, patience: int = 2,
                          select_on: str = "test", holdout_fraction: float = 0.1, restore: str = "on_stop",
                          min_delta: float = 0.0, seed: int = 0, defaults: str = "keras",
                          device: str | torch.device = "cpu") -> dict:
    """The notebooks' linear evaluation on frozen features; ``{"top1": %, "selected_on", epochs...}``."""
    device = torch.device(device)
    train_idx, held = split_for_selection(train_y.numpy(), select_on, holdout_fraction, seed)
    xs, ys = train_x[train_idx].float().to(device), train_y[train_idx].long().to(device)
    xt, yt = test_x.float().to(device), test_y.long().to(device)
    xv, yv = (xt, yt) if held is None else (train_x[held].float().to(device), train_y[held].long().to(device))
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    torch.manual_seed(seed)
    clf = keras_dense(xs.shape[1], n_classes, defaults).to(device)
    summary = train_dense_on_features(clf, xs, ys, xv, yv, epochs, lr, batch_size,
                                      EarlyStopping(patience, min_delta, restore), seed)
    return {"top1": _feature_top1(clf, xt, yt), "selected_on": select_on, **summary}


# --------------------------------------------------------------------------------------------
# Images through a network
# --------------------------------------------------------------------------------------------


class DenseClassifier(nn.Module):
    """A backbone (images to pooled features), then one Dense layer (softmax in the loss)."""

    def __init__(self, backbone: nn.Module, n_classes: int, defaults: str = "keras", kernel: str = "glorot_uniform"):
        super().__init__()
        self.backbone = backbone
        self.fc = keras_dense(backbone.num_features, n_classes, defaults, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))


class _Inputs:
    """Batches of model inputs from uint8 images: the evaluation transform on the device."""

    def __init__(self, data: ImageData, image_size: int, device: torch.device, mean, std):
        self.images, self.labels = torch.from_numpy(data.images), torch.from_numpy(data.labels).long()
        self.size, self.device, self.mean, self.std = image_size, device, tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = eval_transform(self.images[idx].to(self.device), self.size, self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last), self.labels[idx].to(self.device)


def _set_bn_mode(model: nn.Module, training: bool) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train(training)


@torch.no_grad()
def _image_pass(model: nn.Module, inputs: _Inputs, batch_size: int, precision: str, bn_batch_stats: bool = False,
                seed: int = 0) -> tuple[float, float]:
    """(mean cross-entropy, top-1 %) over ``inputs``. ``bn_batch_stats``: BatchNorm normalises each
    batch with its own statistics (a network called with ``training=True``), over batches of
    ``batch_size`` in a seeded random order, as the notebook's shuffled test set."""
    model.eval()
    order = torch.arange(len(inputs))
    if bn_batch_stats:
        _set_bn_mode(model, True)
        order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed))
        saved = {k: v.clone() for k, v in model.state_dict().items()}  # running statistics stay untouched
    loss, correct = 0.0, 0
    for i in range(0, len(inputs), batch_size):
        x, y = inputs.batch(order[i:i + batch_size])
        with autocast(inputs.device, precision):
            logits = model(x).float()
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    if bn_batch_stats:
        model.load_state_dict(saved)
        model.eval()
    return loss / len(inputs), 100.0 * correct / len(inputs)


def _train_on_images(model: nn.Module, train: _Inputs, val: _Inputs, epochs: int, lr: float, batch_size: int,
                     early_stopping: EarlyStopping, seed: int, precision: str, train_mode: Callable[[], None],
                     params=None, eval_batch: int = 256, bn_batch_stats: bool = False) -> dict:
    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        x, y = train.batch(idx)
        with autocast(train.device, precision):
            return F.cross_entropy(model(x).float(), y)

    val_batch = batch_size if bn_batch_stats else eval_batch
    return fit(model, batch_loss, len(train),
               lambda: _image_pass(model, val, val_batch, precision, bn_batch_stats, seed)[0],
               epochs, lr, batch_size, early_stopping, seed, params, train_mode)


def sample_labelled(labels: np.ndarray, fraction: float, sampling: str, seed: int) -> np.ndarray:
    """The labelled subset for fine-tuning: ``stratified`` (gsimclr's, at least one per class),
    ``uniform`` (``int(fraction * n)`` indices without replacement: the CIFAR notebook's
    ``np.random.choice(50000, 5000, replace=False)``) or ``uniform_replace`` (with replacement,
    duplicates kept: the ImageNet notebooks' ``np.random.choice(train_images, len // 10)``)."""
    if sampling not in LABEL_SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(LABEL_SAMPLINGS)}, got {sampling!r}")
    if sampling == "stratified":
        return label_subset(labels, fraction, seed)
    from gsimclr.evaluation.standard_linear import check_every_class

    n = len(labels)
    count = max(1, int(fraction * n + 1e-9))
    picked = np.random.default_rng(seed).choice(n, count, replace=sampling == "uniform_replace")
    check_every_class(labels, picked, fraction, sampling)
    return picked


def notebook_finetune(backbone: nn.Module, train: ImageData, test: ImageData, image_size: int,
                      fraction: float = 0.1, sampling: str = "uniform", head_epochs: int = 35, head_lr: float = 1e-3,
                      epochs: int = 35, lr: float = 1e-5, batch_size: int = 64, patience: int = 2,
                      select_on: str = "test", holdout_fraction: float = 0.1, restore: str = "on_stop",
                      min_delta: float = 0.0, bn: str = "frozen", defaults: str = "keras",
                      mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                      device: str | torch.device = "cpu", seed: int = 0, precision: str = "auto") -> dict:
    """The notebooks' fine-tuning of a pretrained ``backbone`` (modified in place) on a label fraction."""
    if bn not in FINETUNE_BN:
        raise ValueError(f"bn must be one of {', '.join(FINETUNE_BN)}, got {bn!r}")
    device = torch.device(device)
    picked = sample_labelled(train.labels, fraction, sampling, seed)
    subset = train.subset(picked)
    fit_idx, held = split_for_selection(subset.labels, select_on, holdout_fraction, seed)
    fit_data = subset.subset(fit_idx)
    val_data = test if held is None else subset.subset(held)
    torch.manual_seed(seed)
    model = DenseClassifier(backbone, train.num_classes, defaults).to(device, memory_format=torch.channels_last)
    tr, va, te = (_Inputs(d, image_size, device, mean, std) for d in (fit_data, val_data, test))

    # 1. the Dense head on the frozen encoder in inference mode: its features are fixed (no
    # augmentation), so they are computed once, which is the same training as Keras' and cheaper
    model.eval()
    with torch.no_grad():
        def features(inputs: _Inputs) -> tuple[torch.Tensor, torch.Tensor]:
            parts, ys = [], []
            for i in range(0, len(inputs), 256):
                x, y = inputs.batch(torch.arange(i, min(i + 256, len(inputs))))
                with autocast(device, precision):
                    parts.append(model.backbone(x).float())
                ys.append(y)
            return torch.cat(parts), torch.cat(ys)
        (xs, ys), (xv, yv) = features(tr), features(va)
    head = train_dense_on_features(model.fc, xs, ys, xv, yv, head_epochs, head_lr, batch_size,
                                   EarlyStopping(patience, min_delta, restore), seed)

    # 2. every layer at a low rate; BatchNorm in inference mode unless bn="train"
    def train_mode() -> None:
        model.train()
        if bn == "frozen":
            _set_bn_mode(model, False)

    full = _train_on_images(model, tr, va, epochs, lr, batch_size, EarlyStopping(patience, min_delta, restore),
                            seed + 1, precision, train_mode)
    top1 = _image_pass(model, te, 256, precision)[1]
    return {"top1": top1, "selected_on": select_on, "labelled": len(subset),
            "distinct_labelled": int(len(np.unique(picked))),
            "head": head, "all_layers": full}


def notebook_supervised(model: nn.Module, train: ImageData, test: ImageData, image_size: int, epochs: int = 75,
                        lr: float = 1e-3, batch_size: int = 64, patience: int = 2, select_on: str = "test",
                        holdout_fraction: float = 0.1, restore: str = "on_stop", min_delta: float = 0.0,
                        bn_eval: str = "running", mean: Sequence[float] = IMAGENET_MEAN,
                        std: Sequence[float] = IMAGENET_STD, device: str | torch.device = "cpu", seed: int = 0,
                        precision: str = "auto") -> dict:
    """The notebooks' supervised baseline: ``model`` (images to logits, e.g. a :class:`DenseClassifier`)
    trained from scratch on every training label. ``bn_eval="batch"``: BatchNorm uses batch
    statistics on validation and test batches too (the ImageNet notebook's ``training=True``)."""
    if bn_eval not in BN_EVAL:
        raise ValueError(f"bn_eval must be one of {', '.join(BN_EVAL)}, got {bn_eval!r}")
    device = torch.device(device)
    fit_idx, held = split_for_selection(train.labels, select_on, holdout_fraction, seed)
    fit_data = train if held is None else train.subset(fit_idx)
    val_data = test if held is None else train.subset(held)
    model = model.to(device, memory_format=torch.channels_last)
    tr, va, te = (_Inputs(d, image_size, device, mean, std) for d in (fit_data, val_data, test))
    batch_stats = bn_eval == "batch"
    summary = _train_on_images(model, tr, va, epochs, lr, batch_size, EarlyStopping(patience, min_delta, restore),
                               seed, precision, model.train, bn_batch_stats=batch_stats)
    top1 = _image_pass(model, te, batch_size if batch_stats else 256, precision, batch_stats, seed)[1]
    return {"top1": top1, "selected_on": select_on, **summary}


# --------------------------------------------------------------------------------------------
# Registered evaluations and the supervised stage, reading the run's configuration
# --------------------------------------------------------------------------------------------


def _selection(cfg) -> dict:
    return {"patience": cfg.es_patience, "select_on": cfg.select_on, "holdout_fraction": cfg.holdout_fraction,
            "restore": cfg.es_restore}


def run_linear_notebook(ctx) -> dict[str, dict]:
    """The registered ``linear_notebook`` evaluation: a probe at each of P1, P2, P3 (up to
    ``--linear-epochs``, ``--linear-epochs-p2``, ``--linear-epochs-p3``)."""
    cfg = ctx.cfg
    epochs = {"P1": cfg.linear_epochs, "P2": cfg.linear_epochs_p2 or cfg.linear_epochs,
              "P3": cfg.linear_epochs_p3 or cfg.linear_epochs}
    return {p: notebook_linear_probe(*ctx.features_pair(p), epochs=epochs[p], lr=cfg.linear_lr,
                                     batch_size=cfg.linear_batch_size, seed=cfg.seed, defaults=cfg.defaults,
                                     device=ctx.device, **_selection(cfg))
            for p in ("P1", "P2", "P3")}


def run_finetune_notebook(ctx) -> dict:
    """The registered ``finetune_notebook`` evaluation: a copy of the pretrained backbone, fine-tuned."""
    import copy

    from gsimclr.transforms.augment import NORMALIZATIONS

    cfg = ctx.cfg
    backbone = copy.deepcopy(ctx.model.backbone)  # with its pretrained weights
    mean, std = NORMALIZATIONS[cfg.normalize]
    return notebook_finetune(backbone, ctx.train, ctx.test, cfg.image_size, fraction=cfg.label_fraction,
                             sampling=cfg.label_sampling, head_epochs=cfg.finetune_head_epochs,
                             head_lr=cfg.finetune_head_lr or 10 * cfg.finetune_lr, epochs=cfg.finetune_epochs,
                             lr=cfg.finetune_lr, batch_size=64, bn=cfg.finetune_bn, defaults=cfg.defaults,
                             mean=mean, std=std, device=ctx.device, seed=cfg.seed, precision=cfg.precision,
                             **_selection(cfg))


def backbone_options(cfg, supervised: bool = False) -> dict:
    """The backbone options of a run's config (the supervised baseline's depth when ``supervised``),
    ``defaults`` included: :func:`gsimclr.training.pretrain.backbone_options`."""
    from gsimclr.training.pretrain import backbone_options as options

    out = options(cfg)
    if supervised and cfg.supervised_n_blocks is not None:
        out["n_blocks"] = cfg.supervised_n_blocks
    return out


def run_supervised_notebook(cfg, train: ImageData, test: ImageData, device: torch.device) -> dict:
    """The notebooks' supervised baseline for a run's config: ``--supervised-model`` (default ``--model``),
    a Dense head (``bn_relu``: BN, ReLU, pooling, Dense with he_normal weights, resnet_cifar10's), Adam at
    ``--supervised-lr``, batches of ``--batch-size``, up to ``--supervised-epochs`` with early stopping."""
    from gsimclr.models.registry import create_backbone
    from gsimclr.transforms.augment import NORMALIZATIONS

    torch.manual_seed(cfg.seed)
    name = cfg.supervised_model or cfg.model
    bn_relu = cfg.supervised_head == "bn_relu"
    if bn_relu and name != "paper_resnet":
        from gsimclr.errors import UserError

        raise UserError(f"--supervised-head bn_relu needs --supervised-model paper_resnet, got {name}")
    backbone = create_backbone(name, pre_pool_bn=bn_relu, **backbone_options(cfg, supervised=True))
    model = DenseClassifier(backbone, train.num_classes, cfg.defaults, "he_normal" if bn_relu else "glorot_uniform")
    mean, std = NORMALIZATIONS[cfg.normalize]
    return notebook_supervised(model, train, test, cfg.image_size, epochs=cfg.supervised_epochs, lr=cfg.supervised_lr,
                               batch_size=cfg.batch_size, bn_eval=cfg.supervised_bn_eval, mean=mean, std=std,
                               device=device, seed=cfg.seed, precision=cfg.precision, **_selection(cfg))
