"""The results table, laid out as the paper's: linear evaluation at P1/P2/P3, kNN, fine-tuning on a
fraction of the labels, and the fully supervised baseline.

Example:
    >>> print(markdown_table({"label_fraction": 0.1, "knn_k": 200, "supervised": 70.0,
    ...     "methods": {"simclr": {"linear": {"P1": 1.0, "P2": 2.0, "P3": 3.0}, "knn": 4.0, "finetune": 5.0}}}))
    | top-1 % | SimCLR |
    |---|---|
    | Linear P1 (ours) | 1.00 |
    | Linear P2 (ours) | 2.00 |
    | Linear P3 (ours) | 3.00 |
    | kNN (k=200) | 4.00 |
    | Fine-tune (10% labels) | 5.00 |
    | Fully supervised (all labels) | 70.00 |
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gsimclr.evaluation import table_rows
from gsimclr.methods import METHODS, title
from gsimclr.run_folder import RunFolder

# The paper's Table 1 and 2 (top-1 %, single runs): linear P1/P2/P3, fine-tuning on 10% labels, supervised.
PAPER = {
    "cifar10": {"simclr": {"P1": 37.69, "P2": 39.4, "P3": 39.92, "finetune": 42.21},
                "gsimclr": {"P1": 38.15, "P2": 41.01, "P3": 40.5, "finetune": 43.1}, "supervised": 73.62},
    "imagenet5": {"simclr": {"P1": 52.8, "P2": 48.4, "P3": 52.4, "finetune": 49.2},
                  "gsimclr": {"P1": 56.4, "P2": 56.8, "P3": 60.0, "finetune": 56.0}, "supervised": 67.6},
}


NOT_AVAILABLE = "n/a"
"""What a table shows for a value that is not a number (a diverged run's NaN)."""


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if np.isfinite(value) else NOT_AVAILABLE


def _columns(methods: dict[str, Any]) -> list[str]:
    """The methods present, in registry order (then any others, e.g. from an older run)."""
    return [m for m in METHODS if m in methods] + [m for m in methods if m not in METHODS]


def column_title(method: str, results: dict[str, Any]) -> str:
    """A method's column title: its title, and the run's ``--loss`` beside it when that is not NT-Xent and
    the method trains with it (MoCo has a loss of its own)."""
    loss = results.get("loss", "ntxent")
    uses_loss = method in METHODS and METHODS[method].loss_title is None
    return f"{title(method)} ({loss})" if uses_loss and loss != "ntxent" else title(method)


def markdown_table(results: dict[str, Any]) -> str:
    """One row per evaluation row (:data:`gsimclr.evaluation.EVALUATIONS`) that some method has a value
    for (a run evaluates with one protocol), one column per method (:func:`column_title`)."""
    methods = results.get("methods", {})
    cols = _columns(methods)
    lines = ["| top-1 % | " + " | ".join(column_title(m, results) for m in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    per_method = {m: table_rows(results, methods[m]) for m in cols}
    for i, (_, name, _) in enumerate(table_rows(results, {})):
        values = [per_method[m][i][2] for m in cols]
        if cols and all(v is None for v in values):
            continue
        lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in values) + " |")
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
        source = f" ({pl['source']}" + (f", after epoch {pl['epoch']})" if "epoch" in pl else ")") if "source" in pl else ""
        out.append(f"Pseudo labels{source}: k={pl['k']}, NMI {pl['nmi']:.3f}, ARI {pl['ari']:.3f} against the true labels.")
    for m, r in results.get("methods", {}).items():
        if "pretrain_s" in r:
            loss = r.get("final_loss")
            loss = f"{loss:.3f}" if loss is not None and np.isfinite(loss) else NOT_AVAILABLE
            out.append(f"{title(m)} pretraining: {r['epochs']} epochs in {r['pretrain_s']:.1f} s "
                       f"({r.get('images_per_s', 0):.0f} images/s, final loss {loss}).")
    return out


def _mean_std(values: list[float]) -> str:
    """Mean ± sample standard deviation of the finite values; runs without a number (NaN: a diverged
    run) are counted aside, and a cell with none is "n/a", never "nan ± nan".

    Example:
        >>> _mean_std([1.0, 3.0]), _mean_std([float("nan")]), _mean_std([2.0, float("nan")])
        ('2.00 ± 1.41', 'n/a', '2.00 (1 run n/a)')
    """
    if not values:
        return ""
    finite = [v for v in values if np.isfinite(v)]
    aside = len(values) - len(finite)
    note = f" ({aside} run{'s' if aside > 1 else ''} {NOT_AVAILABLE})" if aside else ""
    if not finite:
        return NOT_AVAILABLE
    if len(finite) == 1:
        return f"{finite[0]:.2f}{note}"
    return f"{np.mean(finite):.2f} ± {np.std(finite, ddof=1):.2f}{note}"


def summarize(run_dirs: list[str | Path], paper: str | None = None) -> str:
    """Mean ± standard deviation over runs (e.g. seeds) of their results.json, beside the paper's numbers."""
    from gsimclr.errors import UserError

    if not run_dirs:
        raise UserError("summarize: give one or more run folders")
    results, configs = [], []
    for d in run_dirs:
        folder = RunFolder(d)
        if not folder.root.is_dir():
            raise UserError(f"summarize: {d} is not a folder")
        if not folder.results_json.is_file():
            what = ("the run is incomplete: finish it with gsimclr run --resume --out " + str(d)
                    if folder.run_info.is_file() else "not a gsimclr run folder")
            raise UserError(f"summarize: {d} has no results.json ({what})")
        try:
            result = json.loads(folder.results_json.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UserError(f"summarize: cannot read {folder.results_json}: {exc}") from None
        if not isinstance(result, dict) or not isinstance(result.get("methods", {}), dict):
            raise UserError(f"summarize: {folder.results_json} is not a gsimclr results file")
        try:   # a hand-edited file: a number where a table is, text where a number is
            summarize_results([result], paper)
        except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
            raise UserError(f"summarize: {folder.results_json} is damaged ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:150]}); restore it, or write it anew with gsimclr run "
                            f"--resume --out {d}") from None
        results.append(result)
        configs.append(_run_config(folder))
    _check_comparable(run_dirs, results, configs)
    return summarize_results(results, paper)


# Options that may differ between runs that are summarized together (repetitions of one experiment).
REPEAT_FIELDS = ("seed", "device", "precision", "compile", "wandb", "wandb_project", "wandb_name", "tsne_points",
                 "checkpoint_every", "monitor_every", "memory_budget_gb", "store")


def _run_config(folder: RunFolder) -> dict[str, Any] | None:
    import yaml

    try:
        config = yaml.safe_load(folder.config.read_text()) if folder.config.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def _check_comparable(run_dirs: list, results: list[dict[str, Any]], configs: list[dict[str, Any] | None]) -> None:
    """Mean and standard deviation only make sense over repetitions of one experiment: a UserError naming
    the first difference between the first run and another (in what the table shows or in config.yaml,
    seeds and where it ran aside)."""
    from gsimclr.errors import UserError

    for i in range(1, len(results)):
        for key in ("data", "knn_k", "label_fraction", "linear_protocol"):
            if results[i].get(key) != results[0].get(key):
                raise UserError(f"summarize: {run_dirs[0]} and {run_dirs[i]} are different experiments ({key}: "
                                f"{results[0].get(key)} vs {results[i].get(key)}); summarize repetitions of one")
        if configs[0] is None or configs[i] is None:
            continue
        for key in sorted(set(configs[0]) | set(configs[i])):
            if key not in REPEAT_FIELDS and configs[0].get(key) != configs[i].get(key):
                raise UserError(f"summarize: {run_dirs[0]} and {run_dirs[i]} are different experiments (--"
                                f"{key.replace('_', '-')}: {configs[0].get(key)} vs {configs[i].get(key)}); "
                                "summarize repetitions of one (only the seed may differ)")


def summarize_results(results: list[dict[str, Any]], paper: str | None = None) -> str:
    """:func:`summarize` of results already read (each a run's results.json)."""
    ref = PAPER.get(paper or "", {})
    cols = _columns({m: None for r in results for m in r.get("methods", {})})
    paper_cols = [m for m in cols if m in ref]
    header = f"| top-1 % (n={len(results)} runs) | " + " | ".join(title(m) for m in cols) + " |"
    header += "".join(f" {title(m)} (paper) |" for m in paper_cols)
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    rows = [{m: table_rows(r, r.get("methods", {}).get(m, {})) for m in cols} for r in results]
    for i, (key, name, _) in enumerate(table_rows(results[0], {})):
        row = [_mean_std([v for r in rows if (v := r[m][i][2]) is not None]) for m in cols]
        if not any(row):  # no run evaluated it (e.g. another protocol's row)
            continue
        row += [str(ref[m].get(key, "")) for m in paper_cols]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    sup = [r["supervised"] for r in results if r.get("supervised") is not None]
    row = [_mean_std(sup)] + [""] * (len(cols) - 1) + ([str(ref["supervised"])] + [""] * (len(paper_cols) - 1) if paper_cols else [])
    lines.append("| Fully supervised | " + " | ".join(row) + " |")
    return "\n".join(lines)
