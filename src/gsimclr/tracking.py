"""Run logging: one metrics.jsonl line per record, and the same scalars as TensorBoard events."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class RunLogger:
    """Append-only metrics for one training stage.

    Example:
        >>> import tempfile
        >>> log = RunLogger(tempfile.mkdtemp(), tensorboard=False)
        >>> log.log({"epoch": 1, "loss": 2.5})
        >>> log.records[0]["loss"]
        2.5
    """

    def __init__(self, out_dir: str | Path, tensorboard: bool = True, resume: bool = False):
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

    def log(self, record: dict[str, Any], step: int | None = None) -> None:
        record = {**record, "time": round(time.time(), 3)}
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            x = step if step is not None else record.get("epoch", len(self.records))
            for key, value in record.items():
                if key not in ("epoch", "time", "step") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, x)
            self.writer.flush()

    def truncate(self, epoch: int) -> None:
        """Forget records after ``epoch`` (used when resuming from an earlier checkpoint)."""
        self.records = [r for r in self.records if r.get("epoch", 0) <= epoch]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
