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

from gsimclr.data.dataset import Labelled
from gsimclr.models.autoencoder import DenoisingAutoencoder
from gsimclr.runtime import (autocast, backward_step, grad_scaler, random_state, resolve_device,
                             set_random_state)
from gsimclr.tracking import RunLogger
from gsimclr.transforms.augment import eval_transform

UNIT = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
PROGRESS = "autoencoder_progress.safetensors"     # after every epoch, while it trains (removed when done)
PROGRESS_BEST = "autoencoder_progress_best.safetensors"


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
    decoder: str = "conv_first"      # the decoder's stage order (the notebooks: upsample first)
    shuffle: bool = True             # False: the data's order every epoch (the notebooks' unshuffled batches)
    drop_last: bool = False          # skip a short last batch (the notebooks' drop_remainder)
    min_delta: float = 1e-6          # early stopping: smallest improvement (Keras: 0)
    defaults: str = "torch"          # framework defaults of the network and Adam (keras: Adam eps 1e-7)
    kmeans_n_init: int = 3

    @classmethod
    def from_config(cls, cfg) -> "AutoencoderOptions":
        """The options of a run's :class:`gsimclr.config.Config` (its ``ae_*`` fields)."""
        return cls(model=cfg.ae_model, epochs=cfg.ae_epochs, batch_size=cfg.ae_batch_size, lr=cfg.ae_lr,
                   noise=cfg.ae_noise, patience=cfg.ae_patience, image_size=cfg.image_size, device=cfg.device,
                   precision=cfg.precision, seed=cfg.seed, decoder=cfg.ae_decoder, shuffle=cfg.ae_shuffle,
                   drop_last=cfg.ae_drop_last, min_delta=cfg.ae_min_delta, defaults=cfg.defaults,
                   kmeans_n_init=cfg.kmeans_n_init)


def _batches(n: int, size: int, rng: np.random.Generator | None = None, drop_last: bool = False):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for i in range(0, n - size + 1 if drop_last and n >= size else n, size):
        yield order[i:i + size]


def _inputs(data: Labelled, idx, size: int, device: torch.device) -> torch.Tensor:
    """The autoencoder's inputs: images ``idx`` of ``data`` (in memory or a store, read at their own size)
    resized to ``size`` on the device, raw [0, 1] pixels."""
    images = eval_transform(data.read(idx, data.image_size).to(device, non_blocking=True), size, **UNIT)
    return images.contiguous(memory_format=torch.channels_last)


def input_size(image_size: int, ae: DenoisingAutoencoder) -> int:
    """The autoencoder's input size: the model's input size rounded down to a multiple of its downsampling."""
    return max(ae.downsampling, image_size // ae.downsampling * ae.downsampling)


def train_autoencoder(data: Labelled, opts: AutoencoderOptions, out_dir: Path | None = None,
                      val_data: Labelled | None = None) -> DenoisingAutoencoder:
    """Train the denoising autoencoder with early stopping (patience ``opts.patience``, the best epoch's
    weights restored) on a 10% split held out of ``data``, or on ``val_data`` (the notebooks pass the
    test set) when given, training on all of ``data`` then; logs its losses to ``out_dir``/metrics.jsonl."""
    from gsimclr.models.registry import apply_defaults

    device = resolve_device(opts.device)
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    # channels_last: 1.44x faster per step on this 2-core CPU (shallow autoencoder, batch 64, 32 px, one thread:
    # 1.12 s against 1.62 s), as for the SimCLR model; the same computation up to float rounding (loss 2e-7 apart)
    ae = apply_defaults(DenoisingAutoencoder(opts.model, opts.decoder), opts.defaults).to(device,
                                                                                            memory_format=torch.channels_last)
    size = input_size(opts.image_size, ae)
    if val_data is None:
        order = rng.permutation(len(data))
        n_val = max(1, len(data) // 10)
        val_idx, train_idx = order[:n_val], order[n_val:] if opts.shuffle else np.sort(order[n_val:])
        val_set = data
    else:
        train_idx, val_set = np.arange(len(data)), val_data
        val_idx = np.arange(len(val_data))
    optimizer = torch.optim.Adam(ae.parameters(), lr=opts.lr, eps=1e-7 if opts.defaults == "keras" else 1e-8)
    best, best_state, bad = float("inf"), None, 0
    scaler = grad_scaler(device, opts.precision)  # enabled for fp16 only
    key = _progress_key(opts, data, val_data)
    progress = _load_progress(out_dir, key, ae, optimizer, device) if out_dir else None
    start = 1
    if progress is not None:   # a run cut during this stage continues after its last whole epoch
        start, best, bad, best_state = progress["epoch"] + 1, progress["best"], progress["bad"], progress["best_state"]
        rng.bit_generator.state = progress["numpy"]
        set_random_state(progress["torch"])
    log = RunLogger(out_dir, tensorboard=True, resume=progress is not None) if out_dir else None
    if log and progress is not None:
        log.truncate(start - 1)
    stopped = progress is not None and progress.get("stopped", False)
    for epoch in tqdm(range(start, opts.epochs + 1), desc="autoencoder", unit="epoch", leave=False, disable=None,
                      initial=start - 1, total=opts.epochs):
        if stopped:
            break
        ae.train()
        total, seen = torch.zeros((), device=device), 0
        for b in _batches(len(train_idx), opts.batch_size, rng if opts.shuffle else None, opts.drop_last):
            x = _inputs(data, train_idx[b], size, device)
            noisy = x + opts.noise * torch.randn_like(x)
            with autocast(device, opts.precision):
                loss = F.mse_loss(ae(noisy).float(), x)
            optimizer.zero_grad(set_to_none=True)
            backward_step(loss, optimizer, scaler)
            total += loss.detach() * len(b)
            seen += len(b)
        val = _reconstruction_loss(ae, val_set, val_idx, size, opts, device)
        if log:
            log.log({"epoch": epoch, "ae_train_loss": float(total) / max(seen, 1), "ae_val_loss": val})
        improved = val < best - opts.min_delta
        if improved:
            best, bad = val, 0
            best_state = {k: v.detach().clone() for k, v in ae.state_dict().items()}
        else:
            bad += 1
        stopped = bad >= opts.patience
        if out_dir:
            _save_progress(out_dir, key, ae, optimizer, epoch, best, bad, best_state if improved else None, rng, stopped)
        if stopped:
            break
    if best_state is not None:
        ae.load_state_dict(best_state)
    if log:
        log.close()
    if out_dir:
        for name in (PROGRESS, PROGRESS_BEST):
            (Path(out_dir) / name).unlink(missing_ok=True)
    return ae


def _progress_key(opts: AutoencoderOptions, data: Labelled, val_data: Labelled | None) -> str:
    """What a progress file must have been made from to be continued: the options and both data sets."""
    import dataclasses
    import hashlib
    import json

    from gsimclr.data.identity import content_id

    # the data by content, so a run whose files were moved or mounted anew continues (gsimclr.data.identity)
    what = {"options": {k: v for k, v in dataclasses.asdict(opts).items() if k not in ("device",)},
            "data": content_id(data), "n": len(data),
            "val": None if val_data is None else (content_id(val_data), len(val_data))}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _save_progress(out_dir, key: str, ae, optimizer, epoch: int, best: float, bad: int, best_state, rng,
                   stopped: bool) -> None:
    """The autoencoder after ``epoch`` (weights, optimizer, both random streams, early-stopping state), so a
    kill during this stage loses at most one epoch; the best weights only when they changed."""
    from safetensors.torch import save_file

    from gsimclr.checkpoint import save_checkpoint
    from gsimclr.io import atomic_path

    out_dir = Path(out_dir)
    if best_state is not None:
        with atomic_path(out_dir / PROGRESS_BEST) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in best_state.items()}, str(tmp),
                      metadata={"key": key, "epoch": str(epoch)})
    save_checkpoint(out_dir / PROGRESS, ae, optimizer,
                    {"key": key, "epoch": epoch, "best": best, "bad": bad, "stopped": stopped,
                     "numpy": rng.bit_generator.state, "torch": random_state()})


def _load_progress(out_dir, key: str, ae, optimizer, device) -> dict | None:
    """The progress file's state when it was made from ``key``'s inputs (loaded into ``ae`` and
    ``optimizer``); None when there is none, or it was made from other inputs (started over, said once)."""
    import sys

    from safetensors import safe_open
    from safetensors.torch import load_file

    from gsimclr.checkpoint import load_checkpoint, read_meta

    path = Path(out_dir) / PROGRESS
    if not path.is_file():
        return None
    meta = read_meta(path)
    if meta.get("key") != key:
        print(f"note: {path} was made from other options or data; the autoencoder starts over", file=sys.stderr)
        return None
    meta = load_checkpoint(path, ae, optimizer)
    best_state = None
    best_path = Path(out_dir) / PROGRESS_BEST
    if best_path.is_file():
        with safe_open(str(best_path), "pt") as f:
            same = (f.metadata() or {}).get("key") == key
        if same:
            best_state = {k: v.to(device) for k, v in load_file(str(best_path)).items()}
    return {**meta, "best_state": best_state}


@torch.no_grad()
def _reconstruction_loss(ae, data: Labelled, idx, size, opts: AutoencoderOptions, device) -> float:
    ae.eval()
    total = 0.0
    for _, batch in data.batches(idx, data.image_size, device, opts.batch_size):
        x = eval_transform(batch, size, **UNIT)
        with autocast(device, opts.precision):
            total += float(F.mse_loss(ae(x).float(), x, reduction="sum")) / x[0].numel()
    return total / len(idx)


@torch.no_grad()
def encode(ae: DenoisingAutoencoder, data: Labelled, opts: AutoencoderOptions) -> np.ndarray:
    """The pooled latent code of every image (N, channels), float32."""
    device = next(ae.parameters()).device
    ae.eval()
    size = input_size(opts.image_size, ae)
    out = []
    for _, batch in data.batches(None, data.image_size, device, opts.batch_size):
        with autocast(device, opts.precision):
            out.append(ae.encode(eval_transform(batch, size, **UNIT)).float().cpu())
    return torch.cat(out).numpy()
