"""Run logging: one metrics.jsonl line per record, and the same scalars as TensorBoard events and,
when asked for and installed, Weights & Biases (:class:`WandbOptions`; ``WANDB_MODE=offline`` keeps
the run in ``OUT/wandb/`` for a later ``wandb sync``)."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from gsimclr.errors import UserError
from gsimclr.io import append_text, ensure_folder, write_text


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file ([] when there is none). A torn last line (a write cut short
    by a killed run) is dropped with a warning; a damaged line before it is a one-line error naming
    the file and line.

    Example:
        >>> import tempfile, os, warnings
        >>> path = os.path.join(tempfile.mkdtemp(), "metrics.jsonl")
        >>> _ = open(path, "w").write('{"epoch": 1}\\n{"epo')
        >>> with warnings.catch_warnings(record=True):
        ...     read_metrics(path)
        [{'epoch': 1}]
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            if all(not rest.strip() for rest in lines[number:]):
                warnings.warn(f"{path}: dropped a torn last line {number} (an interrupted write)", stacklevel=2)
                break
            raise UserError(f"{path} line {number} is damaged (not a JSON record); "
                            "remove that line or start a new run") from None
        records.append(record)
    return records


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
        self.dir = ensure_folder(out_dir)
        self.path = self.dir / "metrics.jsonl"
        self.records: list[dict[str, Any]] = []
        if resume and self.path.exists():
            self.records = read_metrics(self.path)
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
        append_text(self.path, json.dumps(record) + "\n")
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
        """Forget records after ``epoch`` (used when resuming from a checkpoint at ``epoch``). The log must
        hold every epoch up to it (each epoch is logged before its checkpoint is written): a deleted or
        cut metrics.jsonl is a one-line error, not a log silently restarted in the middle."""
        have = {r.get("epoch") for r in self.records}
        missing = [e for e in range(1, epoch + 1) if e not in have]
        if missing:
            what = "is missing" if not self.path.exists() else f"lacks epoch {missing[0]}" + (
                f" to {missing[-1]}" if len(missing) > 1 else "")
            raise UserError(f"--resume: {self.path} {what}, but the checkpoint is at epoch {epoch}; restore the "
                            "file, or start a new run with another --out")
        self.records = [r for r in self.records if r.get("epoch", 0) <= epoch]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None
