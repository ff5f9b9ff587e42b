"""Run logging: one metrics.jsonl line per record, and the same scalars as TensorBoard events and,
when asked for and installed, Weights & Biases (:class:`WandbOptions`; ``WANDB_MODE=offline`` keeps
the run in ``OUT/wandb/`` for a later ``wandb sync``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from gsimclr.errors import UserError


@dataclass
class WandbOptions:
    """What a Weights & Biases run is filed under; ``mode`` None leaves it to wandb (``WANDB_MODE``)."""

    project: str = "gsimclr"
    name: str | None = None
    group: str | None = None
    mode: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


def start_wandb(options: WandbOptions, out_dir: Path, resume: bool = False):
    """A wandb run writing under ``out_dir``; a one-line UserError when wandb is missing or cannot start."""
    try:
        import wandb
    except ImportError:
        raise UserError("--wandb needs wandb: pip install 'gsimclr[wandb]'") from None
    kwargs: dict[str, Any] = dict(project=options.project, name=options.name, group=options.group,
                                  dir=str(out_dir), config=options.config)
    if options.mode:
        kwargs["mode"] = options.mode
    if resume:
        kwargs["resume"] = "allow"
    try:
        return wandb.init(**kwargs)
    except Exception as exc:  # no login, no network in online mode, a bad project name...
        raise UserError(f"--wandb: cannot start a Weights & Biases run: {' '.join(str(exc).split())[:200]} "
                        "(WANDB_MODE=offline logs without an account)") from None


class RunLogger:
    """Append-only metrics for one training stage.

    Example:
        >>> import tempfile
        >>> log = RunLogger(tempfile.mkdtemp(), tensorboard=False)
        >>> log.log({"epoch": 1, "loss": 2.5})
        >>> log.records[0]["loss"]
        2.5
    """

    def __init__(self, out_dir: str | Path, tensorboard: bool = True, resume: bool = False,
                 wandb: WandbOptions | None = None):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self.records: list[dict[str, Any]] = []
        if resume and self.path.exists():
            self.records = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        elif self.path.exists():
            self.path.unlink()
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.dir / "tensorboard"))
        self.wandb = start_wandb(wandb, self.dir, resume) if wandb is not None else None

    def log(self, record: dict[str, Any], step: int | None = None) -> None:
        record = {**record, "time": round(time.time(), 3)}
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        x = step if step is not None else record.get("epoch", len(self.records))
        scalars = {k: v for k, v in record.items()
                   if k not in ("epoch", "time", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, x)
            self.writer.flush()
        if self.wandb is not None:
            self.wandb.log({**scalars, "epoch": record.get("epoch", x)})

    def truncate(self, epoch: int) -> None:
        """Forget records after ``epoch`` (used when resuming from an earlier checkpoint)."""
        self.records = [r for r in self.records if r.get("epoch", 0) <= epoch]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None
