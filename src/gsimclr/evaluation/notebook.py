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
selects on it, so the test set is only used for the final number
(:class:`~gsimclr.evaluation.fit.Selection`).

Every one trains with :func:`gsimclr.evaluation.fit.fit`, the loop of every evaluation; Keras' ``fit``
is its options (:func:`keras`).

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(300, 6); y = (x[:, 0] > 0).long()
    >>> r = notebook_linear_probe(x[:200], y[:200], x[200:], y[200:], keras(epochs=30, lr=0.02),
    ...                           Selection(select_on="holdout"))
    >>> r["top1"] > 85, r["selected_on"], r["best_epoch"] <= r["epochs_run"] <= 30
    (True, 'holdout', True)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gsimclr.data.splits import label_subset
from gsimclr.evaluation.fit import KERAS_ADAM_EPS, SELECT_ON, FitOptions, Selection, chunks, fit, score, seeded
from gsimclr.evaluation.images import Images, LabelledImages, TensorBatches
from gsimclr.evaluation.registry import BN_EVAL, FINETUNE_BN, LABEL_SAMPLINGS

__all__ = ["SELECT_ON", "LABEL_SAMPLINGS", "FINETUNE_BN", "BN_EVAL", "KERAS_ADAM_EPS", "Selection", "keras",
           "keras_dense", "DenseClassifier", "sample_labelled", "notebook_linear_probe", "notebook_finetune",
           "notebook_supervised", "run_linear_notebook", "run_finetune_notebook", "run_supervised_notebook"]



def keras(epochs: int, lr: float, batch_size: int = 64, seed: int = 0, precision: str = "auto") -> FitOptions:
    """Keras' ``fit`` as :func:`~gsimclr.evaluation.fit.fit` options: Adam with Keras' epsilon at a constant
    rate, the samples reshuffled every epoch in batches of ``batch_size`` (the last one short)."""
    return FitOptions(epochs, lr, batch_size, eps=KERAS_ADAM_EPS, schedule="constant", seed=seed, precision=precision)


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


def _cross_entropy(model: nn.Module):
    return lambda batch: F.cross_entropy(model(batch[0]).float(), batch[1])


def _fit_dense(clf: nn.Module, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
               options: FitOptions, selection: Selection) -> dict:
    """Fit a classifier on (device) features, early stopping on the loss of the ``val`` features."""
    return fit(clf, TensorBatches(*train), _cross_entropy(clf), options,
               validate=lambda: score(clf.eval(), chunks(*val), options.precision)[0],
               early_stopping=selection.early_stopping())


# --------------------------------------------------------------------------------------------
# Linear probe
# --------------------------------------------------------------------------------------------


def notebook_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                          options: FitOptions, selection: Selection = Selection(), defaults: str = "keras",
                          device: str | torch.device = "cpu") -> dict:
    """The notebooks' linear evaluation on frozen features (a Dense layer on raw features, trained with
    ``options``, e.g. :func:`keras`); ``{"top1": %, "selected_on", epochs...}``."""
    device = torch.device(device)
    train_idx, held = selection.split(train_y.numpy(), options.seed)
    xs, ys = train_x[train_idx].float().to(device), train_y[train_idx].long().to(device)
    xt, yt = test_x.float().to(device), test_y.long().to(device)
    xv, yv = (xt, yt) if held is None else (train_x[held].float().to(device), train_y[held].long().to(device))
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    with seeded(options.seed):
        clf = keras_dense(xs.shape[1], n_classes, defaults).to(device)
    summary = _fit_dense(clf, (xs, ys), (xv, yv), options, selection)
    return {"top1": score(clf.eval(), chunks(xt, yt), options.precision)[1], "selected_on": selection.select_on,
            **summary}


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


def _set_bn_mode(model: nn.Module, training: bool) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train(training)


@torch.no_grad()
def _image_score(model: nn.Module, images: LabelledImages, batch_size: int, precision: str,
                 bn_batch_stats: bool = False, seed: int = 0) -> tuple[float, float]:
    """(mean cross-entropy, top-1 %) over ``images``. ``bn_batch_stats``: BatchNorm normalises each
    batch with its own statistics (a network called with ``training=True``), over batches of
    ``batch_size`` in a seeded random order, as the notebook's shuffled test set."""
    model.eval()
    if not bn_batch_stats:
        return score(model, images.in_order(batch_size), precision)
    _set_bn_mode(model, True)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    saved = {k: v.clone() for k, v in model.state_dict().items()}  # running statistics stay untouched
    try:
        return score(model, images.in_order(batch_size, order), precision)
    finally:
        model.load_state_dict(saved)
        model.eval()


def _fit_images(model: nn.Module, train: LabelledImages, val: LabelledImages, options: FitOptions,
                selection: Selection, train_mode, bn_batch_stats: bool = False) -> dict:
    """Fit ``model`` on unaugmented images, early stopping on the loss of ``val``."""
    val_batch = options.batch_size if bn_batch_stats else 256
    return fit(model, train.training(), _cross_entropy(model), options, train_mode=train_mode,
               validate=lambda: _image_score(model, val, val_batch, options.precision, bn_batch_stats,
                                             options.seed)[0],
               early_stopping=selection.early_stopping())


def sample_labelled(labels: np.ndarray, fraction: float, sampling: str, seed: int) -> np.ndarray:
    """The labelled subset for fine-tuning: ``stratified`` (gsimclr's, at least one per class),
    ``uniform`` (``int(fraction * n)`` indices without replacement: the CIFAR notebook's
    ``np.random.choice(50000, 5000, replace=False)``) or ``uniform_replace`` (with replacement,
    duplicates kept: the ImageNet notebooks' ``np.random.choice(train_images, len // 10)``)."""
    if sampling not in LABEL_SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(LABEL_SAMPLINGS)}, got {sampling!r}")
    from gsimclr.evaluation.standard_linear import check_every_class, check_stratified_floor

    if sampling == "stratified":
        return check_stratified_floor(labels, label_subset(labels, fraction, seed), fraction)

    n = len(labels)
    count = max(1, int(fraction * n + 1e-9))
    picked = np.random.default_rng(seed).choice(n, count, replace=sampling == "uniform_replace")
    check_every_class(labels, picked, fraction, sampling)
    return picked


def notebook_finetune(backbone: nn.Module, train: LabelledImages, test: LabelledImages, head: FitOptions,
                      full: FitOptions, selection: Selection = Selection(), fraction: float = 0.1,
                      sampling: str = "uniform", bn: str = "frozen", defaults: str = "keras") -> dict:
    """The notebooks' fine-tuning of a pretrained ``backbone`` (modified in place) on a ``fraction`` of the
    training labels drawn by ``sampling`` (seeded by ``head.seed``): the Dense head on frozen features
    trained with ``head``, then every layer with ``full`` (e.g. :func:`keras` options each)."""
    if bn not in FINETUNE_BN:
        raise ValueError(f"bn must be one of {', '.join(FINETUNE_BN)}, got {bn!r}")
    seed, precision = head.seed, head.precision
    picked = sample_labelled(train.data.labels, fraction, sampling, seed)
    subset = train.subset(picked, "labelled")
    fit_idx, held = selection.split(subset.data.labels, seed)
    fit_data = subset.subset(fit_idx)
    val_data = test if held is None else subset.subset(held, "held-out")
    with seeded(seed):
        model = DenseClassifier(backbone, train.num_classes, defaults).to(train.device,
                                                                          memory_format=torch.channels_last)

    # 1. the Dense head on the frozen encoder in inference mode: its features are fixed (no
    # augmentation), so they are computed once, which is the same training as Keras' and cheaper
    model.eval()
    features = fit_data.embed(model.backbone, 256, precision), val_data.embed(model.backbone, 256, precision)
    head_summary = _fit_dense(model.fc, *features, head, selection)

    # 2. every layer at a low rate; BatchNorm in inference mode unless bn="train"
    def train_mode() -> None:
        model.train()
        if bn == "frozen":
            _set_bn_mode(model, False)

    all_layers = _fit_images(model, fit_data, val_data, full, selection, train_mode)
    top1 = _image_score(model, test, 256, full.precision)[1]
    return {"top1": top1, "selected_on": selection.select_on, "labelled": len(subset),
            "distinct_labelled": int(len(np.unique(picked))), "head": head_summary, "all_layers": all_layers}


def notebook_supervised(model: nn.Module, train: LabelledImages, test: LabelledImages, options: FitOptions,
                        selection: Selection = Selection(), bn_eval: str = "running") -> dict:
    """The notebooks' supervised baseline: ``model`` (images to logits, e.g. a :class:`DenseClassifier`)
    trained from scratch on every training label with ``options`` (e.g. :func:`keras`). ``bn_eval="batch"``:
    BatchNorm uses batch statistics on validation and test batches too (the ImageNet notebook's ``training=True``)."""
    if bn_eval not in BN_EVAL:
        raise ValueError(f"bn_eval must be one of {', '.join(BN_EVAL)}, got {bn_eval!r}")
    fit_idx, held = selection.split(train.data.labels, options.seed)
    fit_data = train if held is None else train.subset(fit_idx)
    val_data = test if held is None else train.subset(held, "held-out")
    model = model.to(train.device, memory_format=torch.channels_last)
    batch_stats = bn_eval == "batch"
    summary = _fit_images(model, fit_data, val_data, options, selection, model.train, batch_stats)
    top1 = _image_score(model, test, options.batch_size if batch_stats else 256, options.precision, batch_stats,
                        options.seed)[1]
    return {"top1": top1, "selected_on": selection.select_on, **summary}


# --------------------------------------------------------------------------------------------
# Registered evaluations and the supervised stage, reading the run's configuration
# --------------------------------------------------------------------------------------------


def _images(cfg, data: Images, device: torch.device, role: str) -> LabelledImages:
    from gsimclr.transforms.augment import NORMALIZATIONS

    mean, std = NORMALIZATIONS[cfg.normalize]
    return LabelledImages(data, cfg.image_size, device, role, mean, std)


def check_linear_notebook(cfg, train: Images, test: Images) -> None:
    """The registered ``linear_notebook`` evaluation's check: a holdout leaves training images."""
    Selection.of(cfg).split(train.labels, cfg.seed, "training images")


def check_finetune_notebook(cfg, train: Images, test: Images) -> None:
    """The registered ``finetune_notebook`` evaluation's check: a holdout leaves labelled images to train on."""
    import warnings

    with warnings.catch_warnings():  # said once, when the evaluation runs
        warnings.simplefilter("ignore")
        picked = sample_labelled(train.labels, cfg.label_fraction, cfg.label_sampling, cfg.seed)
    Selection.of(cfg).split(train.labels[picked], cfg.seed, f"labelled images (--label-fraction {cfg.label_fraction:g})")


def run_linear_notebook(ctx) -> dict[str, dict]:
    """The registered ``linear_notebook`` evaluation: a probe at each of P1, P2, P3 (up to
    ``--linear-epochs``, ``--linear-epochs-p2``, ``--linear-epochs-p3``)."""
    cfg = ctx.cfg
    epochs = {"P1": cfg.linear_epochs, "P2": cfg.linear_epochs_p2 or cfg.linear_epochs,
              "P3": cfg.linear_epochs_p3 or cfg.linear_epochs}
    return {p: notebook_linear_probe(*ctx.features_pair(p),
                                     keras(epochs[p], cfg.linear_lr, cfg.linear_batch_size, cfg.seed, cfg.precision),
                                     Selection.of(cfg), cfg.defaults, ctx.device)
            for p in ("P1", "P2", "P3")}


def run_finetune_notebook(ctx) -> dict:
    """The registered ``finetune_notebook`` evaluation: a copy of the pretrained backbone, fine-tuned."""
    import copy

    cfg = ctx.cfg
    backbone = copy.deepcopy(ctx.model.backbone)  # with its pretrained weights
    head = keras(cfg.finetune_head_epochs, cfg.finetune_head_lr or 10 * cfg.finetune_lr, 64, cfg.seed, cfg.precision)
    full = keras(cfg.finetune_epochs, cfg.finetune_lr, 64, cfg.seed + 1, cfg.precision)
    return notebook_finetune(backbone, _images(cfg, ctx.train, ctx.device, "training"),
                             _images(cfg, ctx.test, ctx.device, "test"), head, full, Selection.of(cfg),
                             cfg.label_fraction, cfg.label_sampling, cfg.finetune_bn, cfg.defaults)


def backbone_options(cfg, supervised: bool = False) -> dict:
    """The backbone options of a run's config (the supervised baseline's depth when ``supervised``),
    ``defaults`` included: :func:`gsimclr.models.simclr.backbone_options` (no import of the trainer)."""
    from gsimclr.models.simclr import backbone_options as options

    out = options(cfg)
    if supervised and cfg.supervised_n_blocks is not None:
        out["n_blocks"] = cfg.supervised_n_blocks
    return out


def run_supervised_notebook(cfg, train: Images, test: Images, device: torch.device) -> dict:
    """The notebooks' supervised baseline for a run's config: ``--supervised-model`` (default ``--model``),
    a Dense head (``bn_relu``: BN, ReLU, pooling, Dense with he_normal weights, resnet_cifar10's), Adam at
    ``--supervised-lr``, batches of ``--batch-size``, up to ``--supervised-epochs`` with early stopping."""
    from gsimclr.models.registry import create_backbone

    torch.manual_seed(cfg.seed)
    name = cfg.supervised_model or cfg.model
    bn_relu = cfg.supervised_head == "bn_relu"
    if bn_relu and name != "paper_resnet":
        from gsimclr.errors import UserError

        raise UserError(f"--supervised-head bn_relu needs --supervised-model paper_resnet, got {name}")
    backbone = create_backbone(name, pre_pool_bn=bn_relu, **backbone_options(cfg, supervised=True))
    model = DenseClassifier(backbone, train.num_classes, cfg.defaults, "he_normal" if bn_relu else "glorot_uniform")
    options = keras(cfg.supervised_epochs, cfg.supervised_lr, cfg.batch_size, cfg.seed, cfg.precision)
    return notebook_supervised(model, _images(cfg, train, device, "training"), _images(cfg, test, device, "test"),
                               options, Selection.of(cfg), cfg.supervised_bn_eval)
