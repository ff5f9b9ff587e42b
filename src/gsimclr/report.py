"""The results table, laid out as the paper's: linear evaluation at P1/P2/P3, kNN, fine-tuning on a
fraction of the labels, and the fully supervised baseline.

Example:
    >>> print(markdown_table({"label_fraction": 0.1, "knn_k": 200, "supervised": 70.0,
    ...     "methods": {"simclr": {"linear": {"P1": 1.0, "P2": 2.0, "P3": 3.0}, "knn": 4.0, "finetune": 5.0}}}))
    | top-1 % | SimCLR |
    |---|---|
    | Linear P1 | 1.00 |
    | Linear P2 | 2.00 |
    | Linear P3 | 3.00 |
    | kNN (k=200) | 4.00 |
    | Fine-tune (10% labels) | 5.00 |
    | Fully supervised (all labels) | 70.00 |
"""

from __future__ import annotations

from typing import Any

NAMES = {"simclr": "SimCLR", "gsimclr": "G-SimCLR"}


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.2f}"


def markdown_table(results: dict[str, Any]) -> str:
    methods = results.get("methods", {})
    cols = [m for m in ("simclr", "gsimclr") if m in methods]
    lines = ["| top-1 % | " + " | ".join(NAMES[m] for m in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    rows = [(f"Linear {p}", lambda r, p=p: r.get("linear", {}).get(p)) for p in ("P1", "P2", "P3")]
    rows += [(f"kNN (k={results.get('knn_k', 200)})", lambda r: r.get("knn")),
             (f"Fine-tune ({results.get('label_fraction', 0.1) * 100:g}% labels)", lambda r: r.get("finetune"))]
    for name, get in rows:
        lines.append(f"| {name} | " + " | ".join(_fmt(get(methods[m])) for m in cols) + " |")
    if results.get("supervised") is not None:
        lines.append("| Fully supervised (all labels) | " + " | ".join([_fmt(results["supervised"])] + [""] * (len(cols) - 1)) + " |")
    return "\n".join(lines)


def summary_lines(results: dict[str, Any]) -> list[str]:
    out = []
    pl = results.get("pseudo_labels") or {}
    if "nmi" in pl:
        out.append(f"Pseudo labels: k={pl['k']}, NMI {pl['nmi']:.3f}, ARI {pl['ari']:.3f} against the true labels.")
    for m, r in results.get("methods", {}).items():
        if "pretrain_s" in r:
            out.append(f"{NAMES[m]} pretraining: {r['epochs']} epochs in {r['pretrain_s']:.1f} s "
                       f"({r.get('images_per_s', 0):.0f} images/s, final loss {r.get('final_loss', float('nan')):.3f}).")
    return out
