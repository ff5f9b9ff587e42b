"""The paper's pseudo-label features: a denoising autoencoder trained on the images, whose pooled
latent codes are clustered (see :mod:`gsimclr.guidance.sources`).

Example:
    >>> import numpy as np
    >>> from gsimclr.data.dataset import ImageData
    >>> data = ImageData(np.random.default_rng(0).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8))
    >>> ae = train_autoencoder(data, AutoencoderOptions(epochs=1, batch_size=16, image_size=16))
    >>> encode(ae, data, AutoencoderOptions(image_size=16)).shape
    (40, 128)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gsimclr.data.dataset import ImageData
from gsimclr.models.autoencoder import DenoisingAutoencoder
from gsimclr.runtime import autocast, backward_step, grad_scaler, resolve_device
from gsimclr.tracking import RunLogger
from gsimclr.transforms.augment import eval_transform

UNIT = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@dataclass
class AutoencoderOptions:
    """How the autoencoder is trained: MSE on images with Gaussian noise added, Adam, early stopping
    on a 10% held-out split after ``patience`` epochs without improvement."""

    model: str = "shallow"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    noise: float = 0.01
    patience: int = 3
    image_size: int = 32
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0

    @classmethod
    def from_config(cls, cfg) -> "AutoencoderOptions":
        """The options of a run's :class:`gsimclr.config.Config` (its ``ae_*`` fields)."""
        return cls(model=cfg.ae_model, epochs=cfg.ae_epochs, batch_size=cfg.ae_batch_size, lr=cfg.ae_lr,
                   noise=cfg.ae_noise, patience=cfg.ae_patience, image_size=cfg.image_size, device=cfg.device,
                   precision=cfg.precision, seed=cfg.seed)


def _batches(n: int, size: int, rng: np.random.Generator | None = None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n, size):
        yield order[i:i + size]


def _inputs(images: torch.Tensor, idx, size: int, device: torch.device) -> torch.Tensor:
    return eval_transform(images[idx].to(device, non_blocking=True), size, **UNIT)


def input_size(image_size: int, ae: DenoisingAutoencoder) -> int:
    """The autoencoder's input size: the model's input size rounded down to a multiple of its downsampling."""
    return max(ae.downsampling, image_size // ae.downsampling * ae.downsampling)


def train_autoencoder(data: ImageData, opts: AutoencoderOptions, out_dir: Path | None = None) -> DenoisingAutoencoder:
    """Train the denoising autoencoder; logs its losses to ``out_dir``/metrics.jsonl when given."""
    device = resolve_device(opts.device)
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    ae = DenoisingAutoencoder(opts.model).to(device)
    size = input_size(opts.image_size, ae)
    images = torch.from_numpy(data.images)
    order = rng.permutation(len(data))
    n_val = max(1, len(data) // 10)
    val_idx, train_idx = order[:n_val], order[n_val:]
    optimizer = torch.optim.Adam(ae.parameters(), lr=opts.lr)
    log = RunLogger(out_dir, tensorboard=True) if out_dir else None
    best, best_state, bad = float("inf"), None, 0
    scaler = grad_scaler(device, opts.precision)  # enabled for fp16 only
    for epoch in tqdm(range(1, opts.epochs + 1), desc="autoencoder", unit="epoch", leave=False, disable=None):
        ae.train()
        total = torch.zeros((), device=device)
        for b in _batches(len(train_idx), opts.batch_size, rng):
            x = _inputs(images, train_idx[b], size, device)
            noisy = x + opts.noise * torch.randn_like(x)
            with autocast(device, opts.precision):
                loss = F.mse_loss(ae(noisy).float(), x)
            optimizer.zero_grad(set_to_none=True)
            backward_step(loss, optimizer, scaler)
            total += loss.detach() * len(b)
        val = _reconstruction_loss(ae, images, val_idx, size, opts, device)
        if log:
            log.log({"epoch": epoch, "ae_train_loss": float(total) / len(train_idx), "ae_val_loss": val})
        if val < best - 1e-6:
            best, bad = val, 0
            best_state = {k: v.detach().clone() for k, v in ae.state_dict().items()}
        else:
            bad += 1
            if bad >= opts.patience:
                break
    if best_state is not None:
        ae.load_state_dict(best_state)
    if log:
        log.close()
    return ae


@torch.no_grad()
def _reconstruction_loss(ae, images, idx, size, opts: AutoencoderOptions, device) -> float:
    ae.eval()
    total = 0.0
    for b in _batches(len(idx), opts.batch_size):
        x = _inputs(images, idx[b], size, device)
        with autocast(device, opts.precision):
            total += float(F.mse_loss(ae(x).float(), x, reduction="sum")) / x[0].numel()
    return total / len(idx)


@torch.no_grad()
def encode(ae: DenoisingAutoencoder, data: ImageData, opts: AutoencoderOptions) -> np.ndarray:
    """The pooled latent code of every image (N, channels), float32."""
    device = next(ae.parameters()).device
    ae.eval()
    images = torch.from_numpy(data.images)
    size = input_size(opts.image_size, ae)
    out = []
    for b in _batches(len(data), opts.batch_size):
        with autocast(device, opts.precision):
            out.append(ae.encode(_inputs(images, b, size, device)).float().cpu())
    return torch.cat(out).numpy()
