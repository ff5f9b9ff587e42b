"""The concept diagrams of the documentation, drawn with matplotlib (no network, no data files):

    python docs/figures/make_figures.py        # rewrites docs/figures/*.png

The PNGs are committed; the run pictures (false_negatives.png, t-SNE maps) come from a real run and are
copied by hand from `runs/...` (see docs/concepts/diagnostics.md for the command).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parent
CLASS = {"cat": "#4C72B0", "dog": "#DD8452", "car": "#55A868", "ship": "#C44E52"}
GREY = "0.35"


def box(ax, x, y, w, h, text, color="#E8EEF7", edge="#4C72B0", size=9, weight="normal"):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=color, edgecolor=edge, linewidth=1.2))
    ax.text(x, y, text, ha="center", va="center", fontsize=size, weight=weight)


def arrow(ax, a, b, color=GREY, style="-|>", lw=1.2, ls="-", rad=0.0, text=None, tsize=8, toff=(0, 0.12)):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=12, color=color, linewidth=lw,
                                 linestyle=ls, connectionstyle=f"arc3,rad={rad}"))
    if text:
        ax.text((a[0] + b[0]) / 2 + toff[0], (a[1] + b[1]) / 2 + toff[1], text, ha="center", va="bottom",
                fontsize=tsize, color=color)


def canvas(w, h, xlim, ylim):
    fig, ax = plt.subplots(figsize=(w, h), dpi=130)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def tile(ax, x, y, cls, label=None, s=0.5):
    ax.add_patch(FancyBboxPatch((x - s / 2, y - s / 2), s, s, boxstyle="round,pad=0.01,rounding_size=0.05",
                                facecolor=CLASS[cls], edgecolor="white", linewidth=1))
    ax.text(x, y, label or cls, ha="center", va="center", fontsize=7, color="white", weight="bold")


def save(fig, name):
    fig.savefig(OUT / name, bbox_inches="tight", pad_inches=0.05, facecolor="white")
    plt.close(fig)


def simclr_views():
    """SimCLR: one image, two augmented views, encoder f, head g, NT-Xent on z."""
    fig, ax = canvas(9, 3.4, (0, 13.5), (0, 5))
    tile(ax, 0.8, 2.5, "cat", "$x$", s=0.9)
    ax.text(0.8, 1.7, "image", ha="center", fontsize=8)
    for y, name, t in ((4, "$x_i$", "$t \\sim T$"), (1, "$x_j$", "$t' \\sim T$")):
        tile(ax, 3.0, y, "cat", name, s=0.8)
        arrow(ax, (1.3, 2.5), (2.55, y), text=t, toff=(-0.2, 0.05 if y > 2.5 else -0.35))
        box(ax, 5.2, y, 1.7, 0.8, "encoder f\n(ResNet)")
        arrow(ax, (3.45, y), (4.35, y))
        box(ax, 7.4, y, 1.4, 0.8, "head g\n(MLP)", color="#F3ECE3", edge="#DD8452")
        arrow(ax, (6.05, y), (6.7, y), text="$h$", toff=(0, 0.05))
        box(ax, 9.2, y, 0.8, 0.7, "$z_i$" if y > 2.5 else "$z_j$", color="white")
        arrow(ax, (8.1, y), (8.8, y))
    ax.text(5.2, 2.5, "shared weights", ha="center", va="center", fontsize=8, color=GREY, style="italic")
    arrow(ax, (9.7, 3.8), (9.7, 1.2), color="#55A868", style="<|-|>", lw=2, rad=-0.5)
    ax.text(11.0, 2.5, "NT-Xent:\npull $z_i$, $z_j$\ntogether; push\nthe other 2N - 2\nviews apart", ha="left",
            va="center", fontsize=8)
    ax.set_title("SimCLR: two augmented views of one image are the positive pair", fontsize=10, loc="left")
    save(fig, "simclr_views.png")


def ntxent_batch(guided: bool, name: str, title: str):
    """One anchor against a batch: the positive, true negatives and false negatives (same class)."""
    fig, ax = canvas(8, 3.6, (0, 12), (0, 5.2))
    classes = ["cat", "dog", "car", "ship", "dog", "ship"] if guided else ["cat", "dog", "cat", "car", "cat", "dog"]
    tile(ax, 1.2, 2.6, "cat", "anchor", s=1.0)
    tile(ax, 3.8, 4.3, "cat", "view 2", s=0.8)
    arrow(ax, (1.75, 2.9), (3.35, 4.2), color="#55A868", lw=2, text="positive", toff=(-0.6, 0.1))
    for i, cls in enumerate(classes):
        x, y = 5.0 + 1.1 * i, 1.3
        false = cls == "cat"
        tile(ax, x, y, cls, s=0.8)
        arrow(ax, (1.75, 2.4), (x - 0.2, y + 0.45), color="#C44E52" if false else GREY, lw=1.6 if false else 0.9,
              ls="--" if false else "-")
    ax.text(8.3, 0.35, "negatives in the denominator of NT-Xent", ha="center", fontsize=8, color=GREY)
    n_false = sum(c == "cat" for c in classes)
    ax.text(6.5, 3.2, f"false negatives (same class as the anchor): {n_false}", fontsize=9,
            color="#C44E52" if n_false else "#55A868", weight="bold")
    ax.set_title(title, fontsize=10, loc="left")
    save(fig, name)


def gsimclr_pipeline():
    """G-SimCLR: autoencoder -> latent codes -> k-means pseudo labels -> guided batches -> SimCLR."""
    fig, ax = canvas(10, 3.6, (0, 16), (0, 5.6))
    rng = np.random.default_rng(1)
    names = list(CLASS)
    for i in range(12):
        tile(ax, 0.6 + (i % 3) * 0.6, 1.2 + (i // 3) * 0.9, names[rng.integers(4)], label="", s=0.5)
    ax.text(1.2, 4.9, "unlabelled\nimages", ha="center", fontsize=8)
    box(ax, 4.3, 2.6, 2.0, 1.3, "denoising\nautoencoder\n(latent codes)")
    arrow(ax, (2.2, 2.6), (3.3, 2.6))
    box(ax, 7.3, 2.6, 1.8, 1.3, "k-means\n(k clusters)")
    arrow(ax, (5.3, 2.6), (6.4, 2.6))
    ax.text(7.3, 4.4, "pseudo labels\n1 ... k", ha="center", fontsize=8, weight="bold")
    # guided batches: each batch holds one image per pseudo label
    colors = ["#8172B2", "#937860", "#DA8BC3", "#8C8C8C"]
    for b in range(3):
        for j in range(4):
            ax.add_patch(FancyBboxPatch((9.6 + j * 0.55, 0.8 + b * 1.3), 0.45, 0.45,
                                        boxstyle="round,pad=0.01,rounding_size=0.04", facecolor=colors[(j + b) % 4],
                                        edgecolor="white"))
        ax.text(11.9, 1.02 + b * 1.3, f"batch {3 - b}", fontsize=7, va="center")
    ax.text(10.5, 4.9, "guided batches: no two\nimages share a pseudo label", ha="center", fontsize=8)
    arrow(ax, (8.2, 2.6), (9.45, 2.6))
    box(ax, 14.3, 2.6, 2.2, 1.3, "SimCLR\npretraining\n(NT-Xent)", color="#F3ECE3", edge="#DD8452")
    arrow(ax, (12.6, 2.6), (13.2, 2.6))
    ax.set_title("G-SimCLR: pseudo labels keep images of one (pseudo) category out of each other's batches",
                 fontsize=10, loc="left")
    save(fig, "gsimclr_pipeline.png")


def head_taps():
    """The projection head with the evaluation taps P3 (backbone), P2, P1."""
    fig, ax = canvas(10, 3.2, (0, 16.5), (0, 5.0))
    stages = [(1.2, "image", "white", GREY), (3.4, "backbone\n(ResNet)", "#E8EEF7", "#4C72B0"),
              (5.8, "global\npooling", "#E8EEF7", "#4C72B0"), (8.1, "Dense 256\n+ ReLU", "#F3ECE3", "#DD8452"),
              (10.5, "Dense 128\n+ ReLU", "#F3ECE3", "#DD8452"), (12.9, "Dense 50", "#F3ECE3", "#DD8452"),
              (15.2, "z\n(NT-Xent)", "white", GREY)]
    for i, (x, text, color, edge) in enumerate(stages):
        box(ax, x, 2.0, 1.7, 1.1, text, color=color, edge=edge, size=8)
        if i:
            arrow(ax, (stages[i - 1][0] + 0.85, 2.0), (x - 0.85, 2.0))
    for x, name, what in ((6.95, "P3", "backbone\nonly"), (9.3, "P2", "head minus\nlast 2 layers"),
                          (11.7, "P1", "head minus\nlast layer")):
        ax.plot([x], [2.0], "o", color="#C44E52", markersize=8, zorder=5)
        arrow(ax, (x, 2.0), (x, 3.55), color="#C44E52", lw=1.5)
        ax.text(x, 3.65, f"{name}\n{what}", ha="center", va="bottom", fontsize=7.5, color="#C44E52", weight="bold")
    ax.text(10.5, 0.8, "projection head (the paper's 256-128-50; --head-dims)", ha="center", fontsize=8, color=GREY)
    ax.text(4.6, 0.8, "encoder", ha="center", fontsize=8, color=GREY)
    ax.set_title("Where the linear probes read features: P1, P2, P3", fontsize=10, loc="left")
    save(fig, "head_taps.png")


def main():
    simclr_views()
    ntxent_batch(False, "false_negatives_batch.png",
                 "SimCLR's shuffled batch: images of the anchor's class are pushed away as negatives")
    ntxent_batch(True, "guided_batch.png",
                 "G-SimCLR's guided batch: one image per pseudo label; a false negative is left only\n"
                 "where the pseudo labels split a class (here: two cat clusters)")
    gsimclr_pipeline()
    head_taps()
    print("wrote", ", ".join(sorted(p.name for p in OUT.glob("*.png"))))


if __name__ == "__main__":
    main()
