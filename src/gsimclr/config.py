"""Run configuration: one dataclass whose fields carry their own help, type, choices, section and
valid range; presets are YAML files shipped in ``gsimclr/presets``.

Every field is declared with :func:`opt`::

    lr: float = opt(0.1, "pretrain", "peak learning rate", gt=0)
    sampler: str = opt("spread", "guidance", "how batches are built", choices="gsimclr.guidance.samplers:SAMPLERS")

- ``section`` groups the option in ``--help`` and decides which subcommands take it
  (:data:`gsimclr.cli.COMMANDS` lists each subcommand's sections);
- ``choices`` are names (a fixed vocabulary: the option owns it, and the code that runs it reads
  :func:`choices_of`), or a ``"module:REGISTRY"`` reference read lazily from a registry
  (:func:`gsimclr.registry.resolve`), so the choices shown and checked are the registry's; a choice
  ``PREFIX:NAME`` stands for a family and accepts any ``PREFIX:<name>`` (``timm:NAME`` for backbones).
  Every referenced module imports no PyTorch (a registry of heavy entries declares their names,
  :meth:`gsimclr.registry.Registry.declare`), so every option is checked before PyTorch is imported;
- ``min``/``max`` (inclusive) and ``gt``/``lt`` (exclusive) bound numbers; every float must be finite;
- ``check`` is a function ``value -> message or None`` for anything else, or a ``"module:FUNCTION"``
  reference to one, imported on first use like a registry (the check of a registry's entries lives
  beside them, and this module imports nothing above it).

The type comes from the annotation (``typing.get_type_hints``): ``int``, ``float``, ``str``, ``bool``,
``list[int]`` (comma-separated on the command line) and ``X | None``. :meth:`Config.validate` checks
every field and every combination before any work starts; a bad value is one :class:`UserError`.

Example:
    >>> cfg = load_config("digits-quick", {"epochs": 2})
    >>> cfg.epochs, cfg.data
    (2, 'digits')
    >>> load_config(None, {"lr": -1})
    Traceback (most recent call last):
    ...
    gsimclr.errors.UserError: --lr must be > 0, got -1.0
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from gsimclr.errors import UserError
from gsimclr.options import SECTIONS, Declares, flag, metadata
from gsimclr.registry import Registry, resolve, resolve_function

__all__ = ["Config", "FIELDS", "SECTIONS", "TYPES", "check_value", "choices_of", "config_from_dict", "flag",
           "load_config", "opt", "parse_value", "preset_names", "read_preset", "section_fields", "type_name"]

def opt(default: Any, section: str, help: str, *, choices: Any = None, min: float | None = None,
        max: float | None = None, gt: float | None = None, lt: float | None = None,
        check: Callable[[Any], str | None] | str | None = None, metavar: str | None = None) -> Any:
    """A core :class:`Config` field with its metadata (see the module docstring)."""
    meta = metadata(section, help, choices=choices, min=min, max=max, gt=gt, lt=lt, check=check, metavar=metavar)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _device_check(value: str) -> str | None:
    if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        return None
    return f"--device must be auto, cpu, mps, cuda or cuda:N, got {value!r}"


MAX_WIDTH = 2**24
"""The widest projection layer (a 2**24-wide layer on a 2048-wide backbone is 137 GB of weights)."""
MAX_SIDE = 65536
"""The largest --image-size and --cache-size (one decoded image at this side is 12.9 GB)."""
MAX_BLOCKS = 1000
"""The largest --n-blocks (paper_resnet depth 9,011, 2.8e8 parameters, ~40 s to build here; ResNet-1001, the deepest CIFAR
ResNet, is n = 111): a larger one took minutes to build and then could not train."""


def comma_items(raw: str, option: str) -> list[str]:
    """The items of a comma-separated option value, stripped; "" gives none. An empty item between
    items ("256,,50", "simclr,") is a typo, not a shorter list: a UserError naming ``option``.

    >>> comma_items(" 256, 50 ", "--head-dims"), comma_items("", "--head-dims")
    (['256', '50'], [])
    """
    items = [x.strip() for x in str(raw).split(",")]
    if not any(items):
        return []
    if not all(items):
        raise UserError(f"{option}: invalid value {raw!r} (an empty item between commas)")
    return items


def _positive_list(value: list[int]) -> str | None:
    if not value:
        return "needs at least one width"
    if any(v < 1 or v > MAX_WIDTH for v in value):   # past 2**63 PyTorch could not even say it is out of memory
        return f"widths must be >= 1 and <= {MAX_WIDTH}, got {','.join(map(str, value))}"
    return None


@dataclass
class Config:
    # data
    data: str = opt("digits", "data", "a source: digits, a parquet file or folder, an image folder, cifar10[:ROOT], "
                    "cifar100[:ROOT], stl10[:ROOT], hf:NAME[:CONFIG] (a Hugging Face data set id or local folder)")
    test_data: str | None = opt(None, "data", "evaluation data (default: the source's test split, else 20% of a "
                                "labelled training set)")
    image_size: int = opt(32, "data", "the model's input size in pixels", min=8, max=MAX_SIDE)
    cache_size: int | None = opt(None, "data", "stored resolution: the side of decoded images, or the capped shorter "
                                 "side of the JPEG store (default: --image-size)", min=8, max=MAX_SIDE)
    store: str = opt("auto", "data", "where images live while training: memory (one decoded uint8 array), jpeg (the "
                     "memory-mapped encoded store, decoded batch by batch), or auto (memory while the decoded set "
                     "fits --memory-budget-gb)", choices=("auto", "memory", "jpeg"))
    memory_budget_gb: float | None = opt(None, "data", "store auto: the most decoded images kept in memory, in GB "
                                         "(default: half of this machine's memory)", gt=0)
    on_corrupt: str = opt("skip", "data", "unreadable images: skip and count them, or stop with an error",
                          choices=("skip", "error"))
    label_sampling: str = opt("stratified", "data", "how a fraction of the labels is drawn: stratified (the same "
                              "fraction of every class, at least one each, as solo-learn), uniform (random images) or "
                              "uniform_replace (random draws with replacement, duplicates kept: the ImageNet "
                              "notebooks' fine-tuning; notebook protocol only)",
                              choices="gsimclr.evaluation.registry:LABEL_SAMPLINGS")
    train_limit: int = opt(0, "data", "use a random subset of this many training images (0: all)", min=0)
    test_limit: int = opt(0, "data", "use a random subset of this many evaluation images (0: all)", min=0)
    resize: str = opt("crop", "data", "image files to squares: shorter side resized then centre crop, or both sides "
                      "resized ignoring the aspect ratio (stretch: the ImageNet notebooks' cv2.resize)",
                      choices="gsimclr.data.sources:RESIZES")
    normalize: str = opt("imagenet", "data", "network inputs: ImageNet mean/std, or raw [0, 1] pixels (none: the "
                         "notebooks)", choices="gsimclr.transforms.recipe:NORMALIZATIONS")
    # model
    model: str = opt("paper_resnet", "model", "backbone: a registered one, or timm:NAME for any timm model "
                     "(timm:NAME_cifar: a timm ResNet with a 3x3 stride-1 stem and no max-pool)",
                     choices="gsimclr.models.registry:BACKBONE_CHOICES")
    patch_size: int | None = opt(None, "model", "timm ViTs: patch size (default: the model's; e.g. 4 for 32 px images)",
                                 min=1)
    init: str | None = opt(None, "model", "start pretraining from local backbone weights: a torchvision or timm state "
                           "dict (.pth/.safetensors), a gsimclr checkpoint or an exported folder (the supervised "
                           "baseline stays from scratch)", metavar="PATH")
    n_blocks: int = opt(3, "model", "paper_resnet: identity blocks per group (depth 9 * n_blocks + 11)", min=0,
                        max=MAX_BLOCKS)
    head_dims: list[int] = opt([256, 128, 50], "model", "projection head widths, comma-separated (P1 is the "
                               "output of the last hidden layer)", check=_positive_list, metavar="W,W,...")
    head_batch_norm: bool = opt(False, "model", "BatchNorm in the projection head")
    shortcut_bn: bool = opt(True, "model", "paper_resnet: BatchNorm on the projection shortcuts (false: a 1x1 conv "
                            "with bias and no BatchNorm, the notebooks' resnet_cifar10)")
    downsample_in_1x1: bool = opt(False, "model", "resnet50: stride in the first 1x1 conv of a downsampling block "
                                  "(ResNet v1, Keras' ResNet50) instead of the 3x3 (torchvision's v1.5)")
    defaults: str = opt("torch", "model", "framework defaults of every network: keras = Keras' initialisers, "
                        "BatchNorm momentum 0.99 and epsilon 1e-3 (ResNet-50: 1.001e-5), Adam epsilon 1e-7",
                        choices="gsimclr.models.registry:DEFAULTS")
    # augmentation
    augment: str = opt("simclr", "augment", "augmentation recipe", choices="gsimclr.transforms.recipe:AUGMENTATIONS")
    jitter_strength: float = opt(0.5, "augment", "colour jitter strength s (simclr recipe)", min=0)
    crop_scale_min: float = opt(0.08, "augment", "smallest crop area fraction of random resized crop", gt=0, max=1)
    jitter_p: float = opt(0.8, "augment", "probability of colour jitter (simclr and notebook recipes)", min=0, max=1)
    gray_p: float = opt(0.2, "augment", "probability of colour drop to grayscale (simclr and notebook recipes)",
                        min=0, max=1)
    augment_draw: str = opt("image", "augment", "notebook recipe: random decisions and parameters drawn per image, "
                            "or once per batch (the notebooks)", choices=("image", "batch"))
    color_drop: str = opt("grayscale", "augment", "notebook recipe: colour drop to grayscale, or identity (the CIFAR "
                          "notebook's _color_drop returns its input)", choices="gsimclr.transforms.recipe:COLOR_DROPS")
    # contrastive pretraining
    epochs: int = opt(15, "pretrain", "pretraining epochs", min=1)
    batch_size: int = opt(64, "pretrain", "images per batch (the global batch under torchrun)", min=2)
    temperature: float = opt(0.1, "pretrain", "temperature of the contrastive loss", gt=0)
    loss: str = opt("ntxent", "pretrain", "contrastive loss of SimCLR and G-SimCLR (MoCo has its own)",
                    choices="gsimclr.loss:LOSSES")
    optimizer: str = opt("sgd", "pretrain", "optimizer", choices="gsimclr.training.optim:OPTIMIZERS")
    lr: float = opt(0.1, "pretrain", "peak learning rate", gt=0)
    momentum: float = opt(0.9, "pretrain", "SGD/LARS momentum", min=0, lt=1)
    weight_decay: float = opt(1e-6, "pretrain", "weight decay", min=0)
    schedule: str = opt("cosine", "pretrain", "learning-rate schedule", choices="gsimclr.training.optim:SCHEDULES")
    warmup_epochs: float = opt(0.0, "pretrain", "linear warmup epochs", min=0)
    restart_epochs: float = opt(1.0, "pretrain", "first period of cosine_restarts in epochs (doubles each restart)",
                                gt=0)
    restart_steps: int = opt(0, "pretrain", "first period of cosine_restarts in optimizer steps (0: --restart-epochs); "
                             "Keras' first_decay_steps", min=0)
    restart_t_mul: float = opt(2.0, "pretrain", "cosine_restarts: each period is this many times the previous one "
                               "(Keras' t_mul)", min=1)
    restart_m_mul: float = opt(1.0, "pretrain", "cosine_restarts: each peak is this many times the previous one "
                               "(Keras' m_mul)", gt=0)
    decay_steps: int = opt(0, "pretrain", "cosine: optimizer steps to reach 0, then 0 (Keras' CosineDecay; 0: the "
                           "whole run)", min=0)
    drop_last: bool = opt(False, "pretrain", "skip an epoch's short last batch (tf.data drop_remainder)")
    shuffle_buffer: int = opt(0, "pretrain", "unguided batches: shuffle with a tf.data buffer of this many images "
                              "(0: a full permutation)", min=0)
    reshuffle: bool = opt(True, "pretrain", "unguided batches: a new order every epoch (false: the first epoch's order "
                          "every epoch, as tf.data shuffle().cache())")
    views_forward: str = opt("joint", "pretrain", "forward passes: one over both views (BatchNorm statistics over 2N), "
                             "or one per view (separate: the notebooks)", choices="gsimclr.methods.views:VIEW_FORWARDS")
    views: int = opt(2, "pretrain", "augmented views of every image per step (SimCLR: every anchor has views - 1 "
                     "positives; MoCo takes 2, a query and a key)", min=2)
    checkpoint_every: int = opt(0, "pretrain", "epochs between checkpoints (0: only at the end)", min=0)
    checkpoint_minutes: float = opt(0.0, "pretrain", "also checkpoint within an epoch every this many minutes of "
                                    "training, so a kill loses at most that much (0: only at epoch ends); --resume "
                                    "continues from the step to the uncut result", min=0)
    monitor_every: int = opt(0, "pretrain", "epochs between kNN accuracy checks during pretraining (0: none)", min=0)
    sync_batch_norm: bool = opt(True, "pretrain", "multi-GPU runs: SyncBatchNorm across processes")
    # G-SimCLR guidance
    sampler: str = opt("spread", "guidance", "how G-SimCLR's batches are built from the pseudo labels (SimCLR "
                       "always shuffles): spread each cluster evenly over the batches, random, the paper's "
                       "fixed batches, or greedy", choices="gsimclr.guidance.samplers:SAMPLERS")
    guidance: str = opt("none", "guidance", "G-SimCLR's loss-side guidance: same-pseudo-label candidates stay "
                        "negatives, are masked out of the denominator, or attracted as positives",
                        choices="gsimclr.guidance.loss_guidance:GUIDANCE")
    # pseudo labels
    pseudo_labels: str = opt("autoencoder", "pseudo_labels", "where pseudo labels come from: autoencoder (the "
                             "paper), encoder (k-means on the encoder's features, refreshed during training), "
                             "or file:PATH (labels .npy, or embeddings .npy/.parquet to cluster)",
                             check="gsimclr.guidance.sources:source_problem", metavar="{autoencoder,encoder,file:PATH}")
    recluster_every: int = opt(1, "pseudo_labels", "encoder pseudo labels: epochs between re-clusterings", min=1)
    recluster_warmup: int = opt(1, "pseudo_labels", "encoder pseudo labels: epochs before the first clustering "
                                "(trained as SimCLR)", min=0)
    ae_model: str = opt("shallow", "pseudo_labels", "denoising autoencoder (shallow for 32 px, deep for 224 px)",
                        choices="gsimclr.models.registry:AUTOENCODERS")
    ae_epochs: int = opt(20, "pseudo_labels", "autoencoder epochs (at most; early stopping)", min=0)
    ae_batch_size: int = opt(128, "pseudo_labels", "autoencoder batch size", min=1)
    ae_lr: float = opt(1e-3, "pseudo_labels", "autoencoder Adam learning rate", gt=0)
    ae_noise: float = opt(0.01, "pseudo_labels", "standard deviation of the denoising autoencoder's input noise", min=0)
    ae_patience: int = opt(3, "pseudo_labels", "autoencoder early-stopping patience in epochs", min=1)
    ae_decoder: str = opt("conv_first", "pseudo_labels", "autoencoder decoder stages: conv then upsample, or upsample "
                          "then conv (the notebooks)", choices="gsimclr.models.registry:AUTOENCODER_DECODERS")
    ae_select: str = opt("holdout", "pseudo_labels", "the split the autoencoder's early stopping watches: 10% held out "
                         "of the training images, or the test set (the notebooks)", choices=("holdout", "test"))
    ae_min_delta: float = opt(1e-6, "pseudo_labels", "autoencoder early stopping: smallest improvement (Keras: 0)",
                              min=0)
    ae_shuffle: bool = opt(True, "pseudo_labels", "reshuffle the autoencoder's batches every epoch (the notebooks: "
                           "data order)")
    ae_drop_last: bool = opt(False, "pseudo_labels", "skip the autoencoder's short last batch (the notebooks)")
    k: int | None = opt(None, "pseudo_labels", "k-means clusters for pseudo labels (default: the batch size)", min=2)
    kmeans_n_init: int = opt(3, "pseudo_labels", "k-means restarts (scikit-learn's default when the notebooks ran: 10)",
                             min=1)
    # evaluation
    linear_epochs: int = opt(100, "linear", "linear classifier epochs", min=1)
    linear_lr: float = opt(1e-3, "linear", "linear classifier learning rate", gt=0)
    linear_epochs_p2: int | None = opt(None, "linear", "notebook protocol: epochs at P2 (default: --linear-epochs)",
                                       min=1)
    linear_epochs_p3: int | None = opt(None, "linear", "notebook protocol: epochs at P3 (default: --linear-epochs)",
                                       min=1)
    linear_batch_size: int = opt(64, "linear", "notebook protocol: linear classifier batch size", min=1)
    linear_protocol: str = opt("features", "linear", "features: ours (Adam on standardised, unaugmented features at "
                               "P1/P2/P3); standard: solo-learn's and lightly's (SGD on the frozen backbone, crop + "
                               "flip every epoch, cosine; P3); both", choices=("features", "standard", "both"))
    standard_epochs: int = opt(100, "linear", "standard linear protocol: epochs", min=1)
    standard_lr: float = opt(0.1, "linear", "standard linear protocol: SGD learning rate per 256 images", gt=0)
    standard_batch_size: int = opt(256, "linear", "standard linear protocol: batch size", min=1)
    standard_label_fraction: float = opt(1.0, "linear", "standard linear protocol: fraction of the training labels "
                                         "(drawn by --label-sampling)", gt=0, max=1)
    knn_k: int = opt(200, "knn", "neighbours of the weighted kNN classifier", min=1)
    knn_temperature: float = opt(0.1, "knn", "temperature of the kNN vote weights", gt=0)
    label_fraction: float = opt(0.1, "finetune", "fraction of the training labels for fine-tuning, in (0, 1]",
                                gt=0, max=1)
    finetune_head_epochs: int = opt(50, "finetune", "fine-tuning: classifier epochs on frozen features", min=0)
    finetune_epochs: int = opt(10, "finetune", "fine-tuning: epochs of the whole network", min=0)
    finetune_lr: float = opt(1e-3, "finetune", "fine-tuning learning rate of the whole network", gt=0)
    finetune_head_lr: float | None = opt(None, "finetune", "fine-tuning: classifier learning rate on frozen features "
                                         "(default: 10 x --finetune-lr)", gt=0)
    finetune_bn: str = opt("frozen", "finetune", "notebook protocol: BatchNorm while all layers train: frozen in "
                           "inference mode (the notebooks' training=False) or training",
                           choices="gsimclr.evaluation.registry:FINETUNE_BN")
    supervised_epochs: int = opt(15, "supervised", "supervised baseline epochs", min=1)
    supervised_lr: float = opt(0.1, "supervised", "supervised baseline learning rate", gt=0)
    supervised_model: str | None = opt(None, "supervised", "supervised baseline backbone (default: --model)",
                                       choices="gsimclr.models.registry:BACKBONES")
    supervised_n_blocks: int | None = opt(None, "supervised", "paper_resnet depth of the supervised baseline (default: "
                                          "--n-blocks; 1 is the notebooks' ResNet20)", min=0, max=MAX_BLOCKS)
    supervised_head: str = opt("linear", "supervised", "notebook protocol: the classifier on the backbone, a Dense "
                               "layer on pooled features or BN-ReLU-pool-Dense (bn_relu: resnet_cifar10.classifier)",
                               choices=("linear", "bn_relu"))
    supervised_bn_eval: str = opt("running", "supervised", "notebook protocol: BatchNorm on test batches, running or "
                                  "batch statistics (the ImageNet notebook's training=True)",
                                  choices="gsimclr.evaluation.registry:BN_EVAL")
    # evaluation protocol and model selection
    eval_protocol: str = opt("gsimclr", "protocol", "which linear, fine-tuning and supervised stages a run uses: "
                             "gsimclr's, or the notebooks' (Keras fit with early stopping)",
                             choices="gsimclr.evaluation.registry:PROTOCOLS")
    select_on: str = opt("holdout", "protocol", "notebook protocol: the split early stopping watches, a holdout "
                         "carved from the training data, or the test set (the notebooks)",
                         choices="gsimclr.evaluation.registry:SELECT_ON")
    holdout_fraction: float = opt(0.1, "protocol", "notebook protocol: the training fraction held out for "
                                  "--select-on holdout", gt=0, lt=1)
    es_patience: int = opt(2, "protocol", "notebook protocol: early-stopping patience in epochs", min=0)
    es_restore: str = opt("best", "protocol", "notebook protocol: restore the best epoch's weights at the end, or only "
                          "when stopping triggers (on_stop: tf.keras 2.3, the notebooks')",
                          choices="gsimclr.evaluation.early_stopping:RESTORES")
    # execution
    seed: int = opt(0, "execution", "random seed", min=0, max=2**32 - 1)
    device: str = opt("auto", "execution", "auto, cpu, cuda, cuda:N or mps", check=_device_check)
    precision: str = opt("auto", "execution", "autocast precision (auto: bf16 on GPUs that have it, fp16 with a "
                         "gradient scaler on those that do not, fp32 on the CPU)", choices="gsimclr.runtime:PRECISIONS")
    compile: str = opt("auto", "execution", "torch.compile mode (auto: on for GPUs, off on the CPU, where "
                       "'on' ran the paper model at 0.71x eager: benchmarks/results/paper-cpu.md)",
                       choices=("auto", "on", "off", "max-autotune", "reduce-overhead"))
    tsne_points: int = opt(2000, "report", "points in the t-SNE maps (0: no maps)", min=0)
    wandb: bool = opt(False, "report", "also log metrics to Weights & Biases (needs wandb; WANDB_MODE=offline logs "
                      "without an account)")
    wandb_project: str = opt("gsimclr", "report", "Weights & Biases project")
    wandb_name: str | None = opt(None, "report", "Weights & Biases run name (default: the run folder and method)")

    def validate(self) -> "Config":
        """Every field against its metadata, then the combinations; the first problem is a UserError."""
        # ranges first, then choices: choices may import a registry's module (and PyTorch), so that a
        # bad number fails at once
        for f in dataclasses.fields(self):
            check_value(f.name, getattr(self, f.name), choices=False)
        for f in dataclasses.fields(self):
            check_value(f.name, getattr(self, f.name), ranges=False)
        if self.warmup_epochs > self.epochs:
            raise UserError(f"--warmup-epochs {self.warmup_epochs:g} is longer than --epochs {self.epochs}")
        if ":" in self.model:  # a family's name itself (timm:NAME), before any data is loaded
            from gsimclr.models.registry import check_backbone

            check_backbone(self.model)
        if self.device not in ("auto", "cpu") or self.precision == "fp16":
            # a device this machine lacks (cuda, cuda:N past its GPUs, mps), and fp16 (a CUDA device's), are
            # refused before any work rather than at the first tensor moved there
            from gsimclr.runtime import resolve_device, resolve_precision

            resolve_precision(resolve_device(self.device), self.precision)
        if self.init is not None and not Path(self.init).expanduser().exists():
            raise UserError(f"--init: no such weights file or folder: {self.init}")
        if self.label_sampling == "uniform_replace" and (self.eval_protocol != "notebook"
                                                         or self.linear_protocol != "features"):
            raise UserError("--label-sampling uniform_replace is the notebooks' fine-tuning draw: it needs "
                            "--eval-protocol notebook and --linear-protocol features")
        if self.finetune_head_epochs == 0 and self.finetune_epochs == 0:
            raise UserError("--finetune-head-epochs and --finetune-epochs are both 0: fine-tuning would train nothing")
        for registry in Registry.instances:  # the checks of the entries this configuration picks
            for name in registry.selected(self):
                run_checks(registry.checks(name), self)
        return self

    @property
    def n_clusters(self) -> int:
        return self.k or self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_checks(checks, cfg: Any) -> None:
    """Entry checks (:data:`gsimclr.options.Check`) on ``cfg``: the first problem is a UserError."""
    for check in checks:
        problem = check(cfg)
        if problem:
            raise UserError(problem)


# --------------------------------------------------------- the fields: core options and entries' options

_HINTS = typing.get_type_hints(Config)
_CORE: list[tuple[str, Any, dataclasses.Field]] = [(f.name, _HINTS[f.name], f) for f in dataclasses.fields(Config)]
FIELDS: dict[str, dataclasses.Field] = {}
TYPES: dict[str, Any] = {}
#: the names of Config's methods and properties (``cfg.validate``), which no entry's option may shadow
_CONFIG_ATTRIBUTES = frozenset(name for name in dir(Config) if name not in {n for n, _, _ in _CORE})

#: the light modules that keep the registries (their entries declare options); importing them here makes
#: every shipped entry's options fields of Config (plug-ins: :mod:`gsimclr.plugins`)
REGISTRY_HOMES = ("gsimclr.methods", "gsimclr.loss", "gsimclr.guidance.samplers", "gsimclr.guidance.loss_guidance",
                  "gsimclr.guidance.sources", "gsimclr.evaluation", "gsimclr.models.registry", "gsimclr.data.sources",
                  "gsimclr.export")


def entry_options() -> dict[str, tuple[Any, str, tuple[str, ...], list[tuple[Registry, str]]]]:
    """Every option a registry entry declares: ``name -> (option, section, commands, [(registry, entry)])``.
    Entries may share an option (the same :class:`gsimclr.options.Option`); two different declarations
    of one name, or one that shadows a core option, are a ValueError."""
    core = {name for name, _, _ in _CORE}
    found: dict[str, Any] = {}
    for registry in Registry.instances:
        for option, section, commands, entry in registry.options():
            if option.name in core:
                raise ValueError(f"{registry.kind} {entry!r} declares option {option.name!r}, a core option")
            if option.name in _CONFIG_ATTRIBUTES:
                raise ValueError(f"{registry.kind} {entry!r} declares option {option.name!r}, the name of "
                                 f"Config.{option.name}; choose another name")
            if option.name in found:
                known, known_section, known_commands, owners = found[option.name]
                if known != option or known_section != section:
                    raise ValueError(f"option {option.name!r} is declared differently by {owners[0][0].kind} "
                                     f"{owners[0][1]!r} and {registry.kind} {entry!r}")
                found[option.name] = (known, section, tuple(dict.fromkeys(known_commands + commands)),
                                      owners + [(registry, entry)])
            else:
                found[option.name] = (option, section, tuple(commands), [(registry, entry)])
    return found


def _rebuild() -> None:
    """Rebuild :class:`Config`'s fields from the core options and every entry's (after an entry declared
    options, e.g. a plug-in's). The class keeps its identity, so every module's ``Config`` and every
    ``cfg.option`` see the new fields; :data:`FIELDS` and :data:`TYPES` are updated in place."""
    extra = entry_options()
    specs = [(name, kind, _copy(f)) for name, kind, f in _CORE]
    for name, (option, section, commands, owners) in extra.items():
        readers = tuple((registry, entry) for registry, entry in owners)
        specs.append((name, option.annotation, option.field(section, commands=commands, readers=readers)))
    built = dataclasses.make_dataclass("Config", specs)
    for attr in ("__init__", "__repr__", "__eq__", "__dataclass_fields__", "__match_args__"):
        setattr(Config, attr, getattr(built, attr))
    Config.__annotations__ = dict(built.__annotations__)
    for name, _, f in specs:
        if f.default is not dataclasses.MISSING:
            setattr(Config, name, f.default)
    FIELDS.clear()
    FIELDS.update({f.name: f for f in dataclasses.fields(Config)})
    TYPES.clear()
    TYPES.update({name: kind for name, kind, _ in specs})


def _copy(f: dataclasses.Field) -> dataclasses.Field:
    return dataclasses.field(default=f.default, default_factory=f.default_factory, metadata=f.metadata)


def entry_fields(cfg: Any, picked_by: Iterable[str]) -> list[str]:
    """The options of the entries ``cfg`` picks through the options ``picked_by`` (``["loss"]``: the
    options ``cfg.loss``'s entry declares), in declaration order."""
    picks = set(picked_by)
    names = [o.name for registry in Registry.instances if registry.option in picks
             for entry in registry.selected(cfg) for o in registry.declarations.get(entry, Declares()).options]
    return list(dict.fromkeys(names))


def option_commands(name: str) -> tuple[str, ...] | None:
    """The subcommands that take an entry's option (None for a core option: its section decides)."""
    return FIELDS[name].metadata.get("commands")


def option_readers(name: str) -> tuple[tuple[Registry, str], ...]:
    """``(registry, entry name)`` of the entries reading an option (empty for a core option)."""
    return FIELDS[name].metadata.get("readers", ())


def option_default(name: str) -> Any:
    """The default of option ``name`` (a KeyError for an unknown name)."""
    field = FIELDS[name]
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def section_fields(*sections: str) -> list[str]:
    """The fields of the given sections, in declaration order."""
    return [name for name, f in FIELDS.items() if f.metadata["section"] in sections]


def choices_of(name: str) -> list[str] | None:
    ref = FIELDS[name].metadata["choices"]
    return None if ref is None else resolve(ref)


def _base_type(name: str) -> tuple[Any, bool]:
    """(type without None, whether None is allowed)."""
    kind = TYPES[name]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0], True
    return kind, False


def type_name(name: str) -> str:
    kind, _ = _base_type(name)
    if typing.get_origin(kind) is list:
        return f"list of {typing.get_args(kind)[0].__name__}"
    return kind.__name__


def parse_value(name: str, raw: Any) -> Any:
    """Convert a command-line or YAML value to the field's type; a bad value is a UserError."""
    if name not in FIELDS:
        raise UserError(f"unknown option {name!r}")
    kind, optional = _base_type(name)
    if raw is None or (optional and isinstance(raw, str) and raw.strip().lower() in ("none", "null", "")):
        if optional:
            return None
        raise UserError(f"{flag(name)} needs a value")
    if kind is str and isinstance(raw, str) and not raw.strip():  # "" is not a data set, model or project
        raise UserError(f"{flag(name)} needs a value, got an empty string")
    try:
        if typing.get_origin(kind) is list:
            item = typing.get_args(kind)[0]
            # "256,,50" is a typo, not 256,50: a dropped width would change the network silently
            items = raw if isinstance(raw, (list, tuple)) else comma_items(raw, flag(name))
            return [_scalar(item, x) for x in items if not isinstance(x, str) or x.strip()]
        return _scalar(kind, raw)
    except (TypeError, ValueError):
        raise UserError(f"{flag(name)}: invalid value {raw!r} (expected {type_name(name)})") from None


def _scalar(kind: type, raw: Any) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError
    if kind is int:
        if isinstance(raw, bool):
            raise ValueError
        if isinstance(raw, float):
            if not raw.is_integer():
                raise ValueError
            return int(raw)
        return int(str(raw).strip())
    if kind is float:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError
        return value
    if isinstance(raw, (dict, list)):
        raise ValueError
    return str(raw)


def check_value(name: str, value: Any, choices: bool = True, ranges: bool = True) -> None:
    """One field's value against its choices, range and check; a UserError naming the flag."""
    meta = FIELDS[name].metadata
    if value is None:
        if not _base_type(name)[1]:
            raise UserError(f"{flag(name)} needs a value")
        return
    if choices and meta["choices"] is not None:
        options = choices_of(name)
        families = [o[:-len("NAME")] for o in options if o.endswith(":NAME")]
        if value not in options and not any(value.startswith(f) and len(value) > len(f) for f in families):
            raise UserError(f"{flag(name)} must be one of {', '.join(options)}, got {value!r}")
    if not ranges:
        return
    numbers = value if isinstance(value, list) else [value]
    for v in numbers:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise UserError(f"{flag(name)} must be a finite number, got {v}")
        for key, ok, word in (("min", lambda b: v >= b, ">="), ("max", lambda b: v <= b, "<="),
                              ("gt", lambda b: v > b, ">"), ("lt", lambda b: v < b, "<")):
            bound = meta[key]
            if bound is not None and not ok(bound):
                shown = bound if isinstance(bound, int) else f"{bound:g}"   # 4294967295, not 4.29497e+09
                raise UserError(f"{flag(name)} must be {word} {shown}, got {v}")
    if meta["check"] is not None:
        problem = resolve_function(meta["check"])(value)
        if problem:
            raise UserError(problem if problem.startswith("--") else f"{flag(name)} {problem}")


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("gsimclr.presets").iterdir() if p.name.endswith(".yaml"))


def preset_description(name: str) -> str:
    text = (resources.files("gsimclr.presets") / f"{name}.yaml").read_text()
    return (yaml.safe_load(text) or {}).get("description", "")


def read_preset(name_or_path: str) -> dict[str, Any]:
    """A preset's option values (a shipped name or a YAML file), parsed and checked field by field."""
    values = _preset_mapping(name_or_path)
    values.pop("description", None)
    values.pop("requires", None)
    unknown = sorted(set(values) - set(FIELDS), key=str)
    if unknown:
        import difflib

        close = difflib.get_close_matches(str(unknown[0]), list(FIELDS), n=1, cutoff=0.75)
        raise UserError(f"preset {name_or_path}: unknown option {unknown[0]!r}"
                        + (f" (did you mean {close[0]!r}?)" if close else ""))
    parsed = {}
    for k, v in values.items():
        try:
            parsed[k] = parse_value(k, v)
            check_value(k, parsed[k])
        except UserError as exc:  # name the file: the user gave no such flag
            raise UserError(f"preset {name_or_path}: {exc}") from None
    return parsed


def preset_requirements(name_or_path: str) -> dict[str, str]:
    """Options a preset leaves to the user, with what to give: its ``requires:`` mapping (e.g. the data of
    a recipe for a data set that cannot be downloaded: ``requires: {data: "an ImageNet subset ..."}``)."""
    requires = _preset_mapping(name_or_path).get("requires") or {}
    if not isinstance(requires, dict) or set(requires) - set(FIELDS):
        raise UserError(f"preset {name_or_path}: 'requires' must map option names to what to give")
    return {str(k): str(v) for k, v in requires.items()}


def _preset_mapping(name_or_path: str) -> dict[str, Any]:
    """The YAML mapping of a shipped preset or a preset file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file() or "/" in name_or_path or path.is_dir():
        if path.is_dir():
            raise UserError(f"preset {name_or_path} is a folder, not a YAML file")
        if not path.is_file():
            raise UserError(f"preset file not found: {name_or_path}")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"preset file {name_or_path} cannot be read: {exc}") from None
    else:
        res = resources.files("gsimclr.presets") / f"{name_or_path}.yaml"
        if not res.is_file():
            raise UserError(f"unknown preset {name_or_path!r}{_did_you_mean(name_or_path)}; choose one of "
                            f"{', '.join(preset_names())} (or give a YAML file)")
        text = res.read_text()
    try:
        values = yaml.load(text, Loader=_PresetLoader)
    except _RepeatedKey as exc:
        raise UserError(f"preset {name_or_path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"preset {name_or_path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"preset {name_or_path} must be a YAML mapping of options (one 'option: value' a line), "
                        f"not a {type(values).__name__}")
    return values


def _did_you_mean(name: str) -> str:
    """`` (did you mean 'paper-cifar10'?)`` for the shipped preset closest to a mistyped ``name``."""
    import difflib

    names = preset_names()
    typed = name.strip().lower().replace("_", "-")
    close = [n for n in names if n == typed] or difflib.get_close_matches(typed, names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _RepeatedKey(ValueError):
    pass


class _PresetLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice (plain YAML keeps the last value without a word)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":   # `<<: *base` then own keys: YAML's overriding
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise _RepeatedKey(f"option {key!r} is given twice (line {key_node.start_mark.line + 1}); keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Values of earlier versions, read as their present meaning (saved runs, old presets and command lines).
ALIASES: dict[str, dict[Any, Any]] = {
    "guidance": {"batches": "none", "both": "mask"},  # guided batches are now --sampler; the loss side --guidance
}


def _upgrade(values: dict[str, Any]) -> dict[str, Any]:
    return {k: ALIASES.get(k, {}).get(v, v) if isinstance(v, str) else v for k, v in values.items()}


def load_config(preset: str | None = None, overrides: dict[str, Any] | None = None,
                base: dict[str, Any] | None = None) -> Config:
    """``base`` (e.g. a checkpoint's config), then the preset, then the overrides (None values are
    ignored), validated as a whole."""
    values: dict[str, Any] = {k: v for k, v in (base or {}).items() if k in FIELDS}
    if preset:
        given = {k for k, v in (overrides or {}).items() if v is not None} | set(values)
        for name, what in preset_requirements(preset).items():
            if name not in given:
                raise UserError(f"this preset needs {flag(name)} ({what})")
        values.update(read_preset(preset))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    cfg = Config(**{k: parse_value(k, v) for k, v in _upgrade(values).items()})
    return cfg.validate()


def config_from_dict(values: dict[str, Any]) -> Config:
    """A Config from a saved run (unknown keys from other versions are ignored)."""
    return Config(**{k: v for k, v in _upgrade(values).items() if k in FIELDS})


for _home in REGISTRY_HOMES:
    importlib.import_module(_home)
_rebuild()
Registry.listeners.append(_rebuild)
