"""Pictures a run leaves behind: loss, kNN and false-negative curves and t-SNE maps of features.

Every picture says what it shows at a glance: its title, then a line naming the run, the data and
the method (:func:`context_line`); colours keyed to names (methods, or class names on a t-SNE map);
legends outside the axes, so that they never cover the data.

Example:
    >>> context_line(run="runs/demo", data="digits", method="G-SimCLR")
    'run demo · data digits · G-SimCLR'
    >>> context_line(data="digits")
    'data digits'
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from gsimclr.io import atomic_path

# Beyond this many classes a legend cannot be read: the map gets a colour bar of class indices instead.
MAX_LEGEND_CLASSES = 20
# Saved pictures are at print resolution: a 5.5-inch wide plot is 1650 pixels wide, sharp on paper, in a
# slide and on a high-density screen.
PRINT_DPI = 300


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def context_line(run: str | Path | None = None, data: str | None = None, method: str | None = None) -> str:
    """``run NAME · data SPEC · METHOD``: which run, data and method a picture shows (parts left out when
    unknown). ``run`` may be a run folder's path: its last component names it."""
    parts = []
    if run:
        parts.append(f"run {Path(str(run)).name or str(run)}")
    if data:
        parts.append(f"data {data}")
    if method:
        parts.append(str(method))
    return " · ".join(parts)


def _titles(ax, title: str, context: str) -> None:
    """A bold title and, below it, the run/data/method line in grey."""
    if context:
        ax.set_title(context, fontsize=8, color="0.35", loc="left")
        ax.figure.suptitle(title, fontsize=10, fontweight="bold", x=0.02, ha="left")
    else:
        ax.set_title(title, fontsize=10, fontweight="bold", loc="left")


def _save(fig, path: str | Path) -> None:
    """Save at :data:`PRINT_DPI` with the legend and titles outside the axes kept in the picture."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=PRINT_DPI, bbox_inches="tight", pad_inches=0.1)
    _pyplot().close(fig)


def curves_figure(curves: dict[str, tuple[list[float], list[float]]], ylabel: str = "loss", title: str = "",
                  xlabel: str = "epoch", references: dict[str, float] | None = None, context: str = ""):
    """The figure :func:`plot_curves` saves (for tests and notebooks): one line per name, dashed reference
    lines, the legend below the axes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=100)
    for name, (x, y) in curves.items():
        ax.plot(x, y, marker="o", markersize=3, label=name)
    for (name, value), style in zip((references or {}).items(), ("--", ":", "-.", (0, (5, 5)))):
        ax.axhline(value, color="grey", linestyle=style, linewidth=1, label=name)
    xs = [v for x, _ in curves.values() for v in x]
    if xs and all(float(v).is_integer() for v in xs):  # epochs: whole ticks, never 1.25
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    _titles(ax, title, context)
    n = len(curves) + len(references or {})
    if n:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2 if n > 1 else 1, fontsize=8, frameon=False)
    return fig


def plot_curves(curves: dict[str, tuple[list[float], list[float]]], path: str | Path, ylabel: str = "loss",
                title: str = "", xlabel: str = "epoch", references: dict[str, float] | None = None,
                context: str = "") -> None:
    """One line per name: (x values, y values); ``references``: dashed horizontal lines, by name;
    ``context``: the run/data/method line under the title (:func:`context_line`). The legend sits
    below the axes, never on the curves."""
    _save(curves_figure(curves, ylabel, title, xlabel, references, context), path)


def tsne_figure(xy: np.ndarray, labels: np.ndarray | None, title: str = "", class_names: Sequence[str] | None = None,
                context: str = "", label_kind: str = "class"):
    """The figure :func:`plot_tsne` saves, from 2-d points ``xy``: one colour per label, keyed in a legend
    beside the map (or a colour bar beyond :data:`MAX_LEGEND_CLASSES` labels)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=4, color="tab:blue")
    else:
        labels = np.asarray(labels)
        present = np.unique(labels)
        if len(present) <= MAX_LEGEND_CLASSES:
            cmap = plt.get_cmap("tab10" if len(present) <= 10 else "tab20")
            for i, label in enumerate(present):
                name = class_names[label] if class_names is not None and 0 <= label < len(class_names) \
                    else f"{label_kind} {label}"
                at = labels == label
                ax.scatter(xy[at, 0], xy[at, 1], s=4, color=cmap(i), label=str(name))
            ax.legend(title=label_kind, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title_fontsize=8,
                      markerscale=3, frameon=False)
        else:
            points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, s=4, cmap="viridis")
            fig.colorbar(points, ax=ax, label=f"{label_kind} index ({len(present)} shown)", fraction=0.05)
    ax.set_xticks([])
    ax.set_yticks([])
    _titles(ax, title, context)
    return fig


def plot_tsne(features: np.ndarray, labels: np.ndarray | None, path: str | Path, title: str = "",
              max_points: int = 2000, seed: int = 0, class_names: Sequence[str] | None = None,
              context: str = "", label_kind: str = "class") -> None:
    """A 2-d t-SNE map of ``features`` coloured by ``labels`` (a random subset of ``max_points``; no map
    for ``max_points`` 0, ``--tsne-points 0``).

    Each colour is keyed to its class in a legend beside the map (``class_names[label]``, else
    ``"<label_kind> <label>"``); with more than :data:`MAX_LEGEND_CLASSES` labels (e.g. k-means pseudo
    labels) a colour bar of the label index takes the legend's place."""
    if max_points <= 0:
        return
    from sklearn.manifold import TSNE

    if len(features) < 2:  # t-SNE needs two points (a 1-image test set)
        warnings.warn(f"no t-SNE map {Path(path).name}: it needs 2 points or more, got {len(features)}", stacklevel=2)
        return
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(features), min(max_points, len(features)), replace=False)
    perplexity = min(30, max(5, len(idx) // 4), len(idx) - 1)  # below the number of points (5 test images failed)
    xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(
        features[idx].astype(np.float32))
    _save(tsne_figure(xy, None if labels is None else np.asarray(labels)[idx], title, class_names, context,
                      label_kind), path)
