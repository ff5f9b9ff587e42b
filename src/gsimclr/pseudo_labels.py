"""Pseudo labels for G-SimCLR: a denoising autoencoder, then k-means on its pooled latent codes.

Example:
    >>> import numpy as np
    >>> labels = kmeans_labels(np.random.default_rng(0).normal(size=(100, 8)), k=4, seed=0)
    >>> labels.shape, len(set(labels.tolist()))
    ((100,), 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from tqdm.auto import tqdm

from gsimclr.checkpoint import save_checkpoint
from gsimclr.config import Config
from gsimclr.data.dataset import ImageData
from gsimclr.io import save_npy, write_json
from gsimclr.models.autoencoder import DenoisingAutoencoder
from gsimclr.runtime import autocast, backward_step, grad_scaler, resolve_device
from gsimclr.tracking import RunLogger
from gsimclr.transforms.augment import eval_transform

UNIT = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@dataclass
class PseudoLabels:
    labels: np.ndarray
    features: np.ndarray
    metrics: dict


def _batches(n: int, size: int, rng: np.random.Generator | None = None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, size):
        yield order[i:i + size]


def _inputs(images: torch.Tensor, idx, size: int, device: torch.device) -> torch.Tensor:
    return eval_transform(images[idx].to(device, non_blocking=True), size, **UNIT)


def train_autoencoder(cfg: Config, data: ImageData, out_dir: Path | None = None) -> DenoisingAutoencoder:
    """Train the denoising autoencoder (MSE, Adam) with early stopping on a 10% held-out split."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    ae = DenoisingAutoencoder(cfg.ae_model).to(device)
    size = _ae_size(cfg, ae)
    images = torch.from_numpy(data.images)
    order = rng.permutation(len(data))
    n_val = max(1, len(data) // 10)
    val_idx, train_idx = order[:n_val], order[n_val:]
    opt = torch.optim.Adam(ae.parameters(), lr=cfg.ae_lr)
    log = RunLogger(out_dir, tensorboard=True) if out_dir else None
    best, best_state, bad = float("inf"), None, 0
    scaler = grad_scaler(device, cfg.precision)  # enabled for fp16 only
    for epoch in tqdm(range(1, cfg.ae_epochs + 1), desc="autoencoder", unit="epoch", leave=False, disable=None):
        ae.train()
        total = torch.zeros((), device=device)
        for b in _batches(len(train_idx), cfg.ae_batch_size, rng):
            x = _inputs(images, train_idx[b], size, device)
            noisy = x + cfg.ae_noise * torch.randn_like(x)
            with autocast(device, cfg.precision):
                loss = F.mse_loss(ae(noisy).float(), x)
            opt.zero_grad(set_to_none=True)
            backward_step(loss, opt, scaler)
            total += loss.detach() * len(b)
        val = _reconstruction_loss(ae, images, val_idx, size, cfg, device)
        train_loss = float(total) / len(train_idx)
        if log:
            log.log({"epoch": epoch, "ae_train_loss": train_loss, "ae_val_loss": val})
        if val < best - 1e-6:
            best, bad = val, 0
            best_state = {k: v.detach().clone() for k, v in ae.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.ae_patience:
                break
    if best_state is not None:
        ae.load_state_dict(best_state)
    if log:
        log.close()
    return ae


def _ae_size(cfg: Config, ae: DenoisingAutoencoder) -> int:
    """The autoencoder's input size: the model's input size rounded down to a multiple of its downsampling."""
    return max(ae.downsampling, cfg.image_size // ae.downsampling * ae.downsampling)


@torch.no_grad()
def _reconstruction_loss(ae, images, idx, size, cfg, device) -> float:
    ae.eval()
    total = 0.0
    for b in _batches(len(idx), cfg.ae_batch_size):
        x = _inputs(images, idx[b], size, device)
        with autocast(device, cfg.precision):
            total += float(F.mse_loss(ae(x).float(), x, reduction="sum")) / x[0].numel()
    return total / len(idx)


@torch.no_grad()
def encode(ae: DenoisingAutoencoder, data: ImageData, cfg: Config) -> np.ndarray:
    device = next(ae.parameters()).device
    ae.eval()
    images = torch.from_numpy(data.images)
    size = _ae_size(cfg, ae)
    out = []
    for b in _batches(len(data), cfg.ae_batch_size):
        with autocast(device, cfg.precision):
            out.append(ae.encode(_inputs(images, b, size, device)).float().cpu())
    return torch.cat(out).numpy()


def kmeans_labels(features: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    if k > len(features):
        raise ValueError(f"k={k} clusters need at least {k} images, got {len(features)}")
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(features.astype(np.float32)).astype(np.int64)


def cluster_scores(pseudo: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """NMI and ARI of pseudo labels against true labels."""
    return {"nmi": float(normalized_mutual_info_score(truth, pseudo)),
            "ari": float(adjusted_rand_score(truth, pseudo))}


def make_pseudo_labels(cfg: Config, data: ImageData, out_dir: Path) -> PseudoLabels:
    """Autoencoder, features, k-means; saves the autoencoder, the labels and their scores in ``out_dir``."""
    out_dir = Path(out_dir)
    ae = train_autoencoder(cfg, data, out_dir)
    save_checkpoint(out_dir / "autoencoder.safetensors", ae, meta={"ae_model": cfg.ae_model, "fingerprint": data.fingerprint})
    feats = encode(ae, data, cfg)
    labels = kmeans_labels(feats, cfg.n_clusters, cfg.seed)
    metrics = {"k": cfg.n_clusters, "images": len(data), "cluster_sizes_min": int(np.bincount(labels).min()),
               "cluster_sizes_max": int(np.bincount(labels).max()), "fingerprint": data.fingerprint}
    if data.has_labels:
        metrics.update(cluster_scores(labels, data.labels))
    save_npy(out_dir / "pseudo_labels.npy", labels)
    write_json(out_dir / "pseudo_labels.json", metrics)
    return PseudoLabels(labels, feats, metrics)


def load_pseudo_labels(path: str | Path, n: int) -> np.ndarray:
    """Read saved pseudo labels (a .npy file or a run folder containing pseudo_labels/pseudo_labels.npy)."""
    from gsimclr.errors import UserError

    path = Path(path)
    for candidate in (path, path / "pseudo_labels.npy", path / "pseudo_labels" / "pseudo_labels.npy"):
        if candidate.is_file():
            try:
                labels = np.load(candidate)
            except (OSError, ValueError) as exc:
                raise UserError(f"cannot read pseudo labels {candidate}: {exc}") from None
            if labels.ndim != 1 or len(labels) != n:
                raise UserError(f"pseudo labels {candidate} hold {labels.shape} labels for {n} images")
            return labels.astype(np.int64)
    raise UserError(f"no pseudo labels found at {path}")
