"""Run configuration: one flat dataclass, presets as YAML files shipped in ``gsimclr/presets``.

Every field can be set by a preset and overridden on the command line as ``--field-name VALUE``
(lists as comma-separated values). Invalid values raise :class:`gsimclr.errors.UserError`.

Example:
    >>> cfg = load_config("digits-quick", {"epochs": 2})
    >>> cfg.epochs, cfg.data
    (2, 'digits')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gsimclr.errors import UserError

CHOICES: dict[str, tuple[str, ...]] = {
    "augment": ("simclr", "paper"),
    "optimizer": ("sgd", "lars", "adam"),
    "schedule": ("cosine", "cosine_restarts", "constant"),
    "guidance": ("batches", "mask", "both"),
    "ae_model": ("shallow", "deep"),
    "precision": ("auto", "bf16", "fp32"),
    "compile": ("auto", "on", "off", "max-autotune", "reduce-overhead"),
    "on_corrupt": ("skip", "error"),
    "sampler_tail": ("relax", "drop"),
}


@dataclass
class Config:
    # data
    data: str = "digits"
    test_data: str | None = None          # default: the source's own test split
    image_size: int = 32                  # the model's input size
    cache_size: int | None = None         # stored resolution (default: image_size)
    on_corrupt: str = "skip"
    train_limit: int = 0                  # use a random subset of this many training images (0: all)
    test_limit: int = 0                   # likewise for the evaluation split
    # model
    model: str = "paper_resnet"
    n_blocks: int = 3
    head_dims: list[int] = field(default_factory=lambda: [256, 128, 50])
    head_batch_norm: bool = False
    # augmentation
    augment: str = "simclr"
    jitter_strength: float = 0.5
    crop_scale_min: float = 0.08
    # contrastive pretraining
    epochs: int = 15
    batch_size: int = 64
    temperature: float = 0.1
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-6
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    restart_epochs: float = 1.0           # first period of cosine_restarts (doubles each restart)
    guidance: str = "batches"             # G-SimCLR: guided batches, false-negative masking, or both
    sampler_tail: str = "relax"
    checkpoint_every: int = 0             # epochs; 0 = only at the end
    monitor_every: int = 0                # epochs between kNN accuracy checks during pretraining (0: none)
    sync_batch_norm: bool = True          # multi-GPU runs: SyncBatchNorm across processes
    # denoising autoencoder + k-means pseudo labels
    ae_model: str = "shallow"
    ae_epochs: int = 20
    ae_batch_size: int = 128
    ae_lr: float = 1e-3
    ae_noise: float = 0.01
    ae_patience: int = 3
    k: int | None = None                  # clusters; default: the batch size, as in the paper
    # evaluation
    linear_epochs: int = 100
    linear_lr: float = 1e-3
    knn_k: int = 200
    knn_temperature: float = 0.1
    label_fraction: float = 0.1
    finetune_head_epochs: int = 50
    finetune_epochs: int = 10
    finetune_lr: float = 1e-3
    supervised_epochs: int = 15
    supervised_lr: float = 0.1
    # execution
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: str = "auto"
    tsne_points: int = 2000

    def validate(self) -> "Config":
        for name, options in CHOICES.items():
            if getattr(self, name) not in options:
                raise UserError(f"--{_flag(name)} must be one of {', '.join(options)}, got {getattr(self, name)!r}")
        if not 0 < self.label_fraction <= 1:
            raise UserError(f"--label-fraction must be in (0, 1], got {self.label_fraction}")
        for name in ("epochs", "ae_epochs", "linear_epochs", "finetune_epochs", "supervised_epochs", "finetune_head_epochs"):
            if getattr(self, name) < 0:
                raise UserError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        for name in ("train_limit", "test_limit", "monitor_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise UserError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "ae_batch_size", "image_size", "knn_k"):
            if getattr(self, name) < 1:
                raise UserError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.k is not None and self.k < 2:
            raise UserError(f"--k must be >= 2, got {self.k}")
        if self.temperature <= 0:
            raise UserError(f"--temperature must be > 0, got {self.temperature}")
        if not self.head_dims:
            raise UserError("--head-dims needs at least one width")
        if not 0 < self.crop_scale_min <= 1:
            raise UserError(f"--crop-scale-min must be in (0, 1], got {self.crop_scale_min}")
        from gsimclr.models import BACKBONES

        if self.model not in BACKBONES:
            raise UserError(f"--model must be one of {', '.join(sorted(BACKBONES))}, got {self.model!r}")
        return self

    @property
    def n_clusters(self) -> int:
        return self.k or self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _flag(name: str) -> str:
    return name.replace("_", "-")


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def parse_value(name: str, raw: Any) -> Any:
    """Convert a command-line or YAML value to the field's type; a bad value is a UserError."""
    if name not in FIELDS:
        raise UserError(f"unknown option {name!r}")
    kind = str(FIELDS[name].type)
    if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null") and "None" in kind):
        return None
    try:
        if kind.startswith("list"):
            items = raw if isinstance(raw, list) else [x for x in str(raw).split(",") if x.strip()]
            return [int(x) for x in items]
        if kind.startswith("bool"):
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind.startswith("int"):
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise UserError(f"--{_flag(name)}: invalid value {raw!r} (expected {kind.split(' |')[0]})") from None


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("gsimclr.presets").iterdir() if p.name.endswith(".yaml"))


def preset_description(name: str) -> str:
    text = (resources.files("gsimclr.presets") / f"{name}.yaml").read_text()
    return (yaml.safe_load(text) or {}).get("description", "")


def read_preset(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"preset file not found: {name_or_path}")
        text = path.read_text()
    else:
        res = resources.files("gsimclr.presets") / f"{name_or_path}.yaml"
        if not res.is_file():
            raise UserError(f"unknown preset {name_or_path!r}; choose one of {', '.join(preset_names())}")
        text = res.read_text()
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"preset {name_or_path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise UserError(f"preset {name_or_path} must be a mapping of options")
    values.pop("description", None)
    return values


def load_config(preset: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the preset, then the overrides (None values are ignored)."""
    values: dict[str, Any] = {}
    if preset:
        values.update(read_preset(preset))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    cfg = Config(**{k: parse_value(k, v) for k, v in values.items()})
    return cfg.validate()


def config_from_dict(values: dict[str, Any]) -> Config:
    """A Config from a saved run (unknown keys from other versions are ignored)."""
    return Config(**{k: v for k, v in values.items() if k in FIELDS})
