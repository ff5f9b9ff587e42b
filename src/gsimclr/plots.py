"""Pictures a run leaves behind: loss curves and t-SNE maps of features (as the paper's notebooks showed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gsimclr.io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(curves: dict[str, tuple[list[float], list[float]]], path: str | Path, ylabel: str = "loss",
                title: str = "", xlabel: str = "epoch", references: dict[str, float] | None = None) -> None:
    """One line per name: (x values, y values); ``references``: dashed horizontal lines, by name."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for name, (x, y) in curves.items():
        ax.plot(x, y, marker="o", markersize=3, label=name)
    for (name, value), style in zip((references or {}).items(), ("--", ":", "-.", (0, (5, 5)))):
        ax.axhline(value, color="grey", linestyle=style, linewidth=1, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_tsne(features: np.ndarray, labels: np.ndarray | None, path: str | Path, title: str = "",
              max_points: int = 2000, seed: int = 0) -> None:
    """A 2-d t-SNE map of ``features`` coloured by ``labels`` (a random subset of ``max_points``; no map
    for ``max_points`` 0, ``--tsne-points 0``)."""
    if max_points <= 0:
        return
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(features), min(max_points, len(features)), replace=False)
    xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, max(5, len(idx) // 4))).fit_transform(
        features[idx].astype(np.float32))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    colours = None if labels is None else labels[idx]
    ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=4, cmap="tab10" if labels is not None and labels.max() < 10 else "tab20")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
