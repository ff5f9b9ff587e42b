"""Weighted k-nearest-neighbour accuracy on frozen features (cosine similarity, votes weighted by
exp(similarity / T), as in Wu et al. 2018 and most SSL libraries' monitors).

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(100, 8); y = (x[:, 0] > 0).long()
    >>> knn_accuracy(x[:80], y[:80], x[80:], y[80:], k=10) > 70
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F



@torch.no_grad()
def knn_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 k: int = 200, temperature: float = 0.1, device: str | torch.device = "cpu",
                 chunk: int = 1024) -> float:
    """Top-1 accuracy (%) of the weighted kNN classifier."""
    device = torch.device(device)
    bank = F.normalize(train_x.float(), dim=1).to(device)
    bank_y = train_y.long().to(device)
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    k = min(k, len(bank))
    correct = 0
    for i in range(0, len(test_x), chunk):
        q = F.normalize(test_x[i:i + chunk].float(), dim=1).to(device)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        votes = torch.zeros(len(q), n_classes, device=device)
        votes.scatter_add_(1, bank_y[idx], (sim / temperature).exp())
        correct += int((votes.argmax(1).cpu() == test_y[i:i + chunk].long()).sum())
    return 100.0 * correct / len(test_x)



def check_knn_k(k: int, n_train: int) -> None:
    """A UserError when ``--knn-k`` exceeds the labelled training images (the vote would silently use fewer)."""
    if k > n_train:
        from gsimclr.errors import UserError

        raise UserError(f"--knn-k {k} is larger than the training set ({n_train} images); give --knn-k {n_train} "
                        "or less")


def check_knn(cfg, train, test) -> None:
    """The registered ``knn`` evaluation's check, before any feature is computed."""
    check_knn_k(cfg.knn_k, len(train))


def run_knn(ctx) -> float:
    """The registered ``knn`` evaluation: weighted kNN on P3 features."""
    check_knn_k(ctx.cfg.knn_k, len(ctx.train))
    return knn_accuracy(*ctx.features_pair("P3"), ctx.cfg.knn_k, ctx.cfg.knn_temperature, ctx.device)
