"""Moved to :mod:`gsimclr.guidance` (sources, autoencoder, kmeans); this name keeps old imports working."""

from __future__ import annotations

from pathlib import Path

from gsimclr.data.dataset import ImageData
from gsimclr.guidance.autoencoder import AutoencoderOptions
from gsimclr.guidance.diagnostics import cluster_scores
from gsimclr.guidance.kmeans import kmeans as kmeans_labels
from gsimclr.guidance.sources import PseudoLabels, autoencoder_pseudo_labels, load_pseudo_labels


def autoencoder_options(cfg) -> AutoencoderOptions:
    return AutoencoderOptions(model=cfg.ae_model, epochs=cfg.ae_epochs, batch_size=cfg.ae_batch_size, lr=cfg.ae_lr,
                              noise=cfg.ae_noise, patience=cfg.ae_patience, image_size=cfg.image_size,
                              device=cfg.device, precision=cfg.precision, seed=cfg.seed)


def make_pseudo_labels(cfg, data: ImageData, out_dir: Path) -> PseudoLabels:
    """Autoencoder, features, k-means; saves the autoencoder, the labels and their scores in ``out_dir``."""
    return autoencoder_pseudo_labels(data, cfg.n_clusters, autoencoder_options(cfg), Path(out_dir))


__all__ = ["PseudoLabels", "cluster_scores", "kmeans_labels", "load_pseudo_labels", "make_pseudo_labels"]
