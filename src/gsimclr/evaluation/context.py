"""What every evaluation gets: the config, the model, labelled train and test data, the device, and
features at P1/P2/P3 extracted once per split and shared by every evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class EvalContext:
    cfg: Any
    model: Any
    train: Any
    test: Any
    device: torch.device
    out: Path | None = None
    _features: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def features(self, split: str) -> dict[str, torch.Tensor]:
        """{"P1", "P2", "P3"} features of ``split`` ("train" or "test"), extracted on first use."""
        if split not in self._features:
            from gsimclr.evaluation.features import extract_features

            data = self.train if split == "train" else self.test
            self._features[split] = extract_features(self.model, data, self.cfg.image_size, self.device,
                                                     precision=self.cfg.precision)
        return self._features[split]

    def features_pair(self, point: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(train features, train labels, test features, test labels) at ``point``."""
        return (self.features("train")[point], torch.from_numpy(self.train.labels),
                self.features("test")[point], torch.from_numpy(self.test.labels))
