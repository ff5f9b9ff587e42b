"""Linear evaluation: a softmax classifier trained on frozen, standardised features.

Trained with Adam on the device in mini-batches over precomputed features, so a probe costs
seconds even for 50,000 x 2,048 features (scikit-learn's LogisticRegression runs on the CPU only).

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(200, 5); y = (x[:, 0] > 0).long()
    >>> linear_probe(x[:150], y[:150], x[150:], y[150:], epochs=50, lr=0.05) > 90
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gsimclr.evaluation.fit import FitOptions, chunks, fit, score, seeded
from gsimclr.evaluation.images import TensorBatches


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 epochs: int = 100, lr: float = 1e-3, batch_size: int = 256, weight_decay: float = 1e-6,
                 device: str | torch.device = "cpu", seed: int = 0, precision: str = "auto") -> float:
    """Top-1 accuracy (%) on the test features of a linear classifier trained on the train features."""
    device = torch.device(device)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xs = ((train_x - mean) / std).to(device)
    xt = ((test_x - mean) / std).to(device)
    ys, yt = train_y.long().to(device), test_y.long().to(device)
    n_classes = int(max(ys.max(), yt.max())) + 1
    with seeded(seed):
        clf = torch.nn.Linear(xs.shape[1], n_classes).to(device)
    options = FitOptions(epochs, lr, batch_size, weight_decay=weight_decay, seed=seed, precision=precision)
    fit(clf, TensorBatches(xs, ys), lambda batch: F.cross_entropy(clf(batch[0]), batch[1]), options)
    return score(clf.eval(), chunks(xt, yt), precision)[1]


def run_linear(ctx) -> dict[str, float]:
    """The registered ``linear`` evaluation: a probe at each of P1, P2, P3."""
    cfg = ctx.cfg
    return {p: linear_probe(*ctx.features_pair(p), cfg.linear_epochs, cfg.linear_lr, device=ctx.device, seed=cfg.seed,
                            precision=cfg.precision)
            for p in ("P1", "P2", "P3")}
