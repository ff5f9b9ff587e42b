"""Where G-SimCLR's pseudo labels come from (``--pseudo-labels``):

- ``autoencoder``: the paper's: k-means on a denoising autoencoder's pooled latent codes, computed
  once before pretraining.
- ``encoder``: k-means on the contrastive encoder's own (L2-normalised) features, refreshed during
  pretraining every ``--recluster-every`` epochs once ``--recluster-warmup`` epochs are done (IFND,
  Chen et al. 2021); until the first refresh the run trains as SimCLR. See :mod:`gsimclr.guidance.recluster`.
- ``file:PATH``: labels or embeddings from anywhere: a .npy of N integer labels, a .npy of (N, D)
  embeddings, or a .parquet with an ``embedding`` column (``gsimclr embed`` writes both); embeddings
  are clustered into k clusters. A run folder (or its ``pseudo_labels/`` folder) holding
  ``pseudo_labels.npy`` works too.

Example:
    >>> parse_source("file:feats.npy"), parse_source("encoder")
    (('file', 'feats.npy'), ('encoder', None))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from gsimclr.errors import UserError
from gsimclr.guidance.diagnostics import cluster_scores
from gsimclr.io import save_npy, write_json
from gsimclr.registry import Registry

if TYPE_CHECKING:  # torch is imported where it is used, so that checking the option stays light
    import torch

    from gsimclr.data.dataset import ImageData
    from gsimclr.guidance.autoencoder import AutoencoderOptions

#: the sources ``--pseudo-labels`` accepts (``file`` is written ``file:PATH``)
SOURCES: Registry = Registry("pseudo-label source", option="pseudo_labels", pick=lambda spec: spec.partition(":")[0],
                             section="pseudo_labels", commands=("run", "pretrain", "pseudo-label"))
SOURCES.register("autoencoder", "k-means on a denoising autoencoder's features (the paper)")
SOURCES.register("encoder", "k-means on the contrastive encoder's features, refreshed during training")
SOURCES.register("file", "file:PATH, labels (.npy) or embeddings (.npy, .parquet) to cluster")


@dataclass
class PseudoLabels:
    labels: np.ndarray
    features: np.ndarray | None = None
    metrics: dict = field(default_factory=dict)


def source_problem(spec: str) -> str | None:
    """What is wrong with a ``--pseudo-labels`` value (None: nothing); the option's check."""
    name, _, path = spec.partition(":")
    if name not in SOURCES or (name == "file") != bool(path):
        return f"--pseudo-labels must be autoencoder, encoder or file:PATH, got {spec!r}"
    return None


def parse_source(spec: str) -> tuple[str, str | None]:
    """``(name, path)`` of a ``--pseudo-labels`` value; UserError for an unknown one."""
    problem = source_problem(spec)
    if problem:
        raise UserError(problem)
    name, _, path = spec.partition(":")
    return name, path or None


def describe(labels: np.ndarray, truth: np.ndarray | None = None, **extra) -> dict:
    """k, cluster sizes and, with true labels, NMI and ARI."""
    sizes = np.bincount(np.unique(labels, return_inverse=True)[1].reshape(-1))
    metrics = {"k": int(len(sizes)), "images": int(len(labels)), "cluster_sizes_min": int(sizes.min()),
               "cluster_sizes_median": float(np.median(sizes)), "cluster_sizes_max": int(sizes.max()), **extra}
    if truth is not None:
        metrics.update(cluster_scores(labels, truth))
    return metrics


def check_k(k: int, n: int) -> None:
    """UserError when ``k`` clusters cannot be made of ``n`` images (checked before any training)."""
    if k > n:
        raise UserError(f"--k {k} is larger than the dataset ({n} images)")


def cluster_features(features: np.ndarray, k: int, seed: int = 0, normalize: bool = False,
                     device: str | torch.device | None = None, n_init: int = 3, what: str = "the features") -> np.ndarray:
    """k-means labels of ``features`` (optionally L2-normalised first: cosine geometry); UserError when
    they fall into a single cluster (identical features: with --guidance mask every negative would
    leave the loss, a silent zero loss). ``what`` names them in that message."""
    from gsimclr.guidance.kmeans import kmeans

    features = np.asarray(features, dtype=np.float32)
    check_k(k, len(features))
    if normalize:
        features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    labels = kmeans(features, k, seed, device=device, n_init=n_init)
    if len(np.unique(labels)) < 2:
        raise UserError(f"{what} fell into a single cluster: pseudo labels need at least 2")
    return labels


def autoencoder_pseudo_labels(data: ImageData, k: int, opts: AutoencoderOptions,
                              out_dir: Path | None = None, val_data: ImageData | None = None) -> PseudoLabels:
    """The paper's pseudo labels; with ``out_dir``, writes autoencoder.safetensors, pseudo_labels.npy
    and pseudo_labels.json (the labels' description) there. ``val_data``: the split the autoencoder's
    early stopping watches (default: 10% held out of ``data``)."""
    from gsimclr.checkpoint import save_checkpoint
    from gsimclr.guidance.autoencoder import encode, train_autoencoder

    check_k(k, len(data))
    ae = train_autoencoder(data, opts, out_dir, val_data)
    features = encode(ae, data, opts)
    labels = cluster_features(features, k, opts.seed, device=next(ae.parameters()).device, n_init=opts.kmeans_n_init)
    result = PseudoLabels(labels, features, describe(labels, data.labels if data.has_labels else None,
                                                     source="autoencoder", fingerprint=data.fingerprint))
    if out_dir is not None:
        save_checkpoint(Path(out_dir) / "autoencoder.safetensors", ae,
                        meta={"ae_model": opts.model, "ae_decoder": opts.decoder, "fingerprint": data.fingerprint})
        save_pseudo_labels(out_dir, result)
    return result


def encoder_pseudo_labels(model, data: ImageData, k: int, image_size: int, device: torch.device,
                          precision: str = "auto", seed: int = 0, point: str = "P3", normalize: str = "imagenet",
                          n_init: int = 3) -> PseudoLabels:
    """k-means (``n_init`` starts) on the encoder's L2-normalised features at ``point`` (P3: the
    backbone's pooled output), its inputs normalised as in training (``normalize``, a
    :data:`gsimclr.transforms.augment.NORMALIZATIONS` name: the features clustered are those of the
    inputs the encoder is trained on)."""
    from gsimclr.evaluation.features import extract_features
    from gsimclr.transforms.augment import NORMALIZATIONS

    mean, std = NORMALIZATIONS[normalize]
    was_training = model.training
    features = extract_features(model, data, image_size, device, precision=precision, mean=mean, std=std)[point].numpy()
    model.train(was_training)
    labels = cluster_features(features, k, seed, normalize=True, device=device, n_init=n_init,
                              what="the encoder's features (collapsed? lower --lr or raise --recluster-warmup)")
    return PseudoLabels(labels, features, describe(labels, data.labels if data.has_labels else None,
                                                   source="encoder"))


def _read_parquet_embeddings(path: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if "embedding" not in table.column_names:
        raise UserError(f"{path} has no 'embedding' column (columns: {', '.join(table.column_names)})")
    column = table.column("embedding").combine_chunks()
    try:
        return np.stack(column.to_numpy(zero_copy_only=False)).astype(np.float32)
    except ValueError as exc:
        raise UserError(f"{path}: the 'embedding' column is not a list of numbers per row ({exc})") from None


def locate_file(path: str | Path) -> Path:
    """The file a ``file:PATH`` source reads (a run folder or pseudo_labels folder gives its
    ``pseudo_labels.npy``); UserError when there is none. Reads nothing, so the command line checks it
    before any work. ``~`` is the home folder, as in ``--data`` and ``--init``."""
    path = Path(path).expanduser()
    if path.is_dir():
        for candidate in (path / "pseudo_labels.npy", path / "pseudo_labels" / "pseudo_labels.npy"):
            if candidate.is_file():
                return candidate
        raise UserError(f"no pseudo_labels.npy in {path}")
    if not path.is_file():
        raise UserError(f"pseudo labels not found: {path}")
    return path


def read_labels_or_embeddings(path: str | Path) -> np.ndarray:
    """The array a ``file:`` source names (see the module docstring); UserError when unreadable."""
    path = locate_file(path)
    try:
        if path.suffix == ".parquet":
            return _read_parquet_embeddings(path)
        if path.suffix == ".npy":
            with open(path, "rb") as f:
                if f.read(6) != b"\x93NUMPY":       # else numpy suggests unpickling it
                    raise UserError(f"cannot read {path}: not a .npy file (numpy.save writes them)")
            return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    raise UserError(f"pseudo labels must be a .npy or .parquet file, got {path.name}")


def file_pseudo_labels(path: str | Path, n: int, k: int | None = None, seed: int = 0,
                       truth: np.ndarray | None = None, device: str | torch.device | None = None,
                       n_init: int = 3) -> PseudoLabels:
    """Labels read from ``path``, or its embeddings clustered into ``k`` clusters (``n_init`` k-means starts)."""
    array = read_labels_or_embeddings(path)
    if array.ndim == 0:
        raise UserError(f"{path}: expected N labels or an (N, D) array of embeddings, got a single value")
    if len(array) != n:
        raise UserError(f"{path} holds {len(array)} rows for {n} images")
    if array.ndim == 2 and array.shape[1] == 1 and np.issubdtype(array.dtype, np.integer):
        array = array[:, 0]                              # a column of integer labels
    if array.ndim == 1:
        if not np.issubdtype(array.dtype, np.integer):
            raise UserError(f"{path}: a one-dimensional array must hold integer labels, got {array.dtype}")
        labels, features = array.astype(np.int64), None
        if len(np.unique(labels)) < 2:
            raise UserError(f"{path}: every image has the same label; pseudo labels need at least 2 clusters")
    elif array.ndim == 2 and np.issubdtype(array.dtype, np.number):
        if k is None:
            raise UserError(f"{path} holds embeddings: k is needed to cluster them")
        if array.shape[1] < 2:
            raise UserError(f"{path}: one-dimensional embeddings keep only their sign once L2-normalised; "
                            "give integer labels or embeddings of 2 or more dimensions")
        features = array.astype(np.float32)
        if not np.isfinite(features).all():
            raise UserError(f"{path}: the embeddings hold NaN or infinite values")
        labels = cluster_features(features, k, seed, normalize=True, device=device, n_init=n_init)
    else:
        raise UserError(f"{path}: expected N labels or an (N, D) array of embeddings, got shape {array.shape}")
    return PseudoLabels(labels, features, describe(labels, truth, source=f"file:{path}"))


def save_pseudo_labels(out_dir: str | Path, result: PseudoLabels) -> None:
    save_npy(Path(out_dir) / "pseudo_labels.npy", result.labels)
    write_json(Path(out_dir) / "pseudo_labels.json", result.metrics)


def load_pseudo_labels(path: str | Path, n: int) -> np.ndarray:
    """Saved pseudo labels (a .npy file or a run folder holding pseudo_labels/pseudo_labels.npy)."""
    array = read_labels_or_embeddings(path)
    if array.ndim != 1 or len(array) != n:
        raise UserError(f"pseudo labels {path} hold {array.shape} labels for {n} images")
    return array.astype(np.int64)
