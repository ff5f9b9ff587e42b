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

import json
from pathlib import Path
from typing import Any

import numpy as np

NAMES = {"simclr": "SimCLR", "gsimclr": "G-SimCLR"}

# The paper's Table 1 and 2 (top-1 %, single runs): linear P1/P2/P3, fine-tuning on 10% labels, supervised.
PAPER = {
    "cifar10": {"simclr": {"P1": 37.69, "P2": 39.4, "P3": 39.92, "finetune": 42.21},
                "gsimclr": {"P1": 38.15, "P2": 41.01, "P3": 40.5, "finetune": 43.1}, "supervised": 73.62},
    "imagenet5": {"simclr": {"P1": 52.8, "P2": 48.4, "P3": 52.4, "finetune": 49.2},
                  "gsimclr": {"P1": 56.4, "P2": 56.8, "P3": 60.0, "finetune": 56.0}, "supervised": 67.6},
}


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
    lines += pair_rows(methods, cols)
    return "\n".join(lines)


def pair_rows(methods: dict[str, Any], cols: list[str]) -> list[str]:
    """Rows of false-negative diagnostics (means over the pretraining epochs), when the run logged them:
    same-class pairs per batch with their references, those left as negatives by the loss, and
    same-pseudo-label pairs."""
    rows = []
    first = next((methods[m] for m in cols if "class_pairs_per_batch" in methods[m]), None)
    if first is not None:
        rows.append((f"Same-class pairs / batch (random {first['class_pairs_random']:.1f}, "
                     f"floor {first['class_pairs_floor']:.1f})", "class_pairs_per_batch"))
        rows.append(("Same-class pairs left as negatives / batch", "class_pairs_in_loss"))
    if any("pseudo_pairs_per_batch" in methods[m] for m in cols):
        rows.append(("Same-pseudo-label pairs / batch", "pseudo_pairs_per_batch"))
    return [f"| {name} | " + " | ".join("" if methods[m].get(key) is None else f"{methods[m][key]:.1f}" for m in cols)
            + " |" for name, key in rows]


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


def _metric(result: dict[str, Any], method: str, key: str) -> float | None:
    r = result.get("methods", {}).get(method, {})
    return r.get("linear", {}).get(key) if key in ("P1", "P2", "P3") else r.get(key)


def _mean_std(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def summarize(run_dirs: list[str | Path], paper: str | None = None) -> str:
    """Mean ± standard deviation over runs (e.g. seeds) of their results.json, beside the paper's numbers."""
    results = []
    for d in run_dirs:
        path = Path(d) / "results.json"
        if path.exists():
            results.append(json.loads(path.read_text()))
    if not results:
        raise FileNotFoundError("no results.json in the given run folders")
    ref = PAPER.get(paper or "", {})
    keys = [("P1", "Linear P1"), ("P2", "Linear P2"), ("P3", "Linear P3"), ("knn", "kNN"),
            ("finetune", "Fine-tune")]
    header = f"| top-1 % (n={len(results)} runs) | SimCLR | G-SimCLR |"
    if ref:
        header += " SimCLR (paper) | G-SimCLR (paper) |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for key, name in keys:
        row = [_mean_std([v for r in results if (v := _metric(r, m, key)) is not None]) for m in ("simclr", "gsimclr")]
        if ref:
            row += [str(ref[m].get(key, "")) for m in ("simclr", "gsimclr")]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    sup = [r["supervised"] for r in results if r.get("supervised") is not None]
    row = [_mean_std(sup), ""] + ([str(ref["supervised"]), ""] if ref else [])
    lines.append("| Fully supervised | " + " | ".join(row) + " |")
    return "\n".join(lines)
