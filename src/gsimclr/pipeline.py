"""The stages of a run, shared by the CLI subcommands and ``gsimclr run``.

A run folder holds::

    run.json, config.yaml            what produced it (command, versions, device, the full config)
    pseudo_labels/                   autoencoder.safetensors, pseudo_labels.npy/.json, metrics.jsonl, tsne_autoencoder.png
    simclr/, gsimclr/                checkpoint.safetensors, metrics.jsonl, tensorboard/, eval.json, tsne_encoder.png
    supervised.json                  the supervised baseline
    results.json, results.md         the table; loss_curves.png
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from gsimclr import __version__
from gsimclr.checkpoint import load_checkpoint, read_meta
from gsimclr.config import Config, config_from_dict
from gsimclr.data.dataset import ImageData
from gsimclr.data.sources import load_split
from gsimclr.distributed import current_world, wait_for_main
from gsimclr.errors import UserError
from gsimclr.evaluation import EVALUATIONS, enabled_evaluations
from gsimclr.evaluation.context import EvalContext
from gsimclr.evaluation.classifier import label_subset, supervised
from gsimclr.io import write_json, write_text
from gsimclr.models.simclr import SimCLRModel
from gsimclr.plots import plot_curves, plot_tsne
from gsimclr.guidance.autoencoder import AutoencoderOptions
from gsimclr.guidance.diagnostics import PAIR_KEYS
from gsimclr.guidance.sources import (autoencoder_pseudo_labels, file_pseudo_labels, load_pseudo_labels, parse_source,
                                      save_pseudo_labels)
from gsimclr.methods import METHODS, title
from gsimclr.report import markdown_table, summary_lines
from gsimclr.runtime import resolve_device
from gsimclr.training.pretrain import CHECKPOINT, build_backbone, build_model, pretrain

def load_data(cfg: Config) -> tuple[ImageData, ImageData | None]:
    """The training split and a labelled evaluation split. Without a test split, a stratified 20% of
    a labelled training set is held out for evaluation (and not used for pretraining)."""
    size = cfg.cache_size or cfg.image_size
    train = load_split(cfg.data, "train", image_size=size, on_corrupt=cfg.on_corrupt)
    if cfg.test_data:
        test = load_split(cfg.test_data, "test", image_size=size, on_corrupt=cfg.on_corrupt)
        if test is None:
            test = load_split(cfg.test_data, "train", image_size=size, on_corrupt=cfg.on_corrupt)
    else:
        test = load_split(cfg.data, "test", image_size=size, on_corrupt=cfg.on_corrupt)
    if test is None and train.has_labels:
        held = label_subset(train.labels, 0.2, cfg.seed)
        keep = np.setdiff1d(np.arange(len(train)), held)
        train, test = train.subset(keep), train.subset(held)
    train = _limit(train, cfg.train_limit, cfg.seed)
    test = _limit(test, cfg.test_limit, cfg.seed + 1) if test is not None else None
    if cfg.batch_size > len(train):
        raise UserError(f"--batch-size {cfg.batch_size} is larger than the dataset ({len(train)} training images)")
    return train, test


def _limit(data: ImageData, n: int, seed: int) -> ImageData:
    """A random subset of ``n`` images (sorted, so the data's order is kept); all of them for 0."""
    if not n or n >= len(data):
        return data
    return data.subset(np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False)))


def write_run_info(run_dir: Path, cfg: Config, argv: list[str] | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {"command": " ".join(["gsimclr"] + (argv if argv is not None else sys.argv[1:])),
            "gsimclr_version": __version__, "git_commit": _git_commit(), "torch": torch.__version__,
            "python": platform.python_version(), "host": platform.node(), "device": _device_name(cfg),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(run_dir / "run.json", info)
    write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _device_name(cfg: Config) -> str:
    device = resolve_device(cfg.device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})"


def stage_pseudo_labels(cfg: Config, train: ImageData, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """The pseudo labels of ``--pseudo-labels`` computed before pretraining (autoencoder, file:PATH) in
    ``run_dir/pseudo_labels``; ``encoder`` ones are made during pretraining (UserError here)."""
    source, path = parse_source(cfg.pseudo_labels)
    if source == "encoder":
        raise UserError("--pseudo-labels encoder: the labels are computed during G-SimCLR pretraining")
    out = run_dir / "pseudo_labels"
    if resume and (out / "pseudo_labels.npy").exists() and (out / "pseudo_labels.json").exists():
        return {"labels": load_pseudo_labels(out, len(train)), **json.loads((out / "pseudo_labels.json").read_text())}
    if cfg.n_clusters > len(train):
        raise UserError(f"--k {cfg.n_clusters} is larger than the dataset ({len(train)} images)")
    if source == "file":
        result = file_pseudo_labels(path, len(train), cfg.n_clusters, cfg.seed, train.labels if train.has_labels else None,
                                    resolve_device(cfg.device))
        save_pseudo_labels(out, result)
    else:
        result = autoencoder_pseudo_labels(train, cfg.n_clusters, AutoencoderOptions.from_config(cfg), out)
    if result.features is not None and cfg.tsne_points:
        colour = train.labels if train.has_labels else result.labels
        plot_tsne(result.features, colour, out / f"tsne_{source}.png", f"{source} features", cfg.tsne_points, cfg.seed)
    return {"labels": result.labels, **result.metrics}


def pseudo_labels_before_pretraining(cfg: Config) -> bool:
    """Whether ``--pseudo-labels`` are made before pretraining (not ``encoder``, made during it)."""
    return parse_source(cfg.pseudo_labels)[0] != "encoder"


def shared_pseudo_labels(cfg: Config, train: ImageData, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """:func:`stage_pseudo_labels` for a command that may run in several processes: rank 0 computes
    (or reuses) them while the others wait, then the others read its files."""
    world = current_world()
    if not world.distributed:
        return stage_pseudo_labels(cfg, train, run_dir, resume)
    result = stage_pseudo_labels(cfg, train, run_dir, resume) if world.is_main else None
    wait_for_main()
    if world.is_main:
        return result
    if not (run_dir / "pseudo_labels" / "pseudo_labels.npy").exists():
        raise UserError(f"rank {world.rank} cannot see rank 0's pseudo labels in {run_dir}; "
                        "the run folder must be on a file system shared by every node")
    return stage_pseudo_labels(cfg, train, run_dir, resume=True)


def stage_pretrain(cfg: Config, train: ImageData, run_dir: Path, method: str, pseudo: np.ndarray | None,
                   resume: bool = False, stop_after: int | None = None, max_minutes: float | None = None,
                   monitor: tuple[ImageData, ImageData] | None = None) -> SimCLRModel:
    out = run_dir / method
    ckpt = out / CHECKPOINT
    if ckpt.exists() and not resume:
        raise UserError(f"{ckpt} exists; pass --resume to continue that run or choose another --out")
    t0 = time.perf_counter()
    # an unguided method only reports the pseudo labels' pairs in its batches (diagnostics)
    model = pretrain(cfg, train, out, pseudo, resume=resume, method=method,
                     stop_after=stop_after, max_minutes=max_minutes, monitor=monitor)
    if current_world().is_main:  # in a multi-process run only rank 0 writes
        _write_timing(out, time.perf_counter() - t0)
    return model


def _write_timing(out: Path, seconds: float) -> None:
    timing_path = out / "timing.json"
    previous = json.loads(timing_path.read_text())["pretrain_s"] if timing_path.exists() else 0.0
    write_json(timing_path, {"pretrain_s": previous + seconds})


def load_encoder(path: str | Path, cfg: Config | None = None) -> tuple[SimCLRModel, Config, dict]:
    """A pretrained model from a checkpoint (or a stage folder holding one), with the config it was trained with."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    meta = read_meta(path) if path.is_file() else None
    if meta is None:
        raise UserError(f"checkpoint not found: {path}")
    saved = config_from_dict(meta.get("config", {}))
    model = build_model(saved)
    load_checkpoint(path, model)
    return model, saved, meta


def evaluate_encoder(cfg: Config, model: SimCLRModel, train: ImageData, test: ImageData,
                     which: tuple[str, ...] | None = None, out: Path | None = None,
                     device: torch.device | None = None) -> dict[str, Any]:
    """The registered evaluations (:data:`gsimclr.evaluation.EVALUATIONS`; all of them, or those named in
    ``which``) on one shared context, so features are extracted once; a t-SNE map of the test features
    when ``out`` is given."""
    if not (train.has_labels and test is not None and test.has_labels):
        raise UserError("evaluation needs labels: the data has no labelled training and test splits")
    device = device or resolve_device(cfg.device)
    ctx = EvalContext(cfg, model.to(device), train, test, device, out)
    names = enabled_evaluations(cfg) if which is None else list(which)
    result: dict[str, Any] = {name: EVALUATIONS.get(name)(ctx) for name in names}
    if out is not None and cfg.tsne_points:
        plot_tsne(ctx.features("test")["P3"].numpy(), test.labels, out / "tsne_encoder.png",
                  "encoder features (P3, test)", cfg.tsne_points, cfg.seed)
    return result


def stage_supervised(cfg: Config, train: ImageData, test: ImageData) -> float:
    if not (train.has_labels and test is not None and test.has_labels):
        raise UserError("the supervised baseline needs labelled training and test splits")
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg)  # from scratch: --init is for pretraining
    return supervised(backbone, train, test, cfg.image_size, cfg.supervised_epochs, cfg.supervised_lr,
                      resolve_device(cfg.device), cfg.batch_size, cfg.seed, cfg.precision)


def stage_results(run_dir: Path, method: str) -> dict[str, Any]:
    """Training summary of a pretraining stage: epochs, time, throughput, final loss, the false-negative
    diagnostics' means over the epochs that have them, and the last re-clustering's scores."""
    out = run_dir / method
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    timing = json.loads((out / "timing.json").read_text()) if (out / "timing.json").exists() else {}
    summary = {"epochs": len(records), "pretrain_s": timing.get("pretrain_s", sum(r["epoch_s"] for r in records))}
    if records:
        summary["final_loss"] = records[-1]["loss"]
        summary["images_per_s"] = float(np.median([r["images_per_s"] for r in records]))
    for key in PAIR_KEYS:
        values = [r[key] for r in records if key in r]
        if values:
            summary[key] = float(np.mean(values))
    if (out / "pseudo_labels.json").exists():  # encoder pseudo labels: the latest clustering
        summary["pseudo_labels"] = json.loads((out / "pseudo_labels.json").read_text())
    return summary


def plot_run_curves(run_dir: Path) -> None:
    """loss_curves.png (loss per epoch) and, when monitored, knn_curves.png (kNN accuracy against training time)."""
    losses, knn = {}, {}
    for method in METHODS:
        path = run_dir / method / "metrics.jsonl"
        if path.exists():
            recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            name = title(method)
            losses[name] = ([r["epoch"] for r in recs], [r["loss"] for r in recs])
            monitored = [r for r in recs if "knn" in r]
            if monitored:
                knn[name] = ([r["train_s"] for r in monitored], [r["knn"] for r in monitored])
    if losses:
        plot_curves(losses, run_dir / "loss_curves.png", "NT-Xent loss", "pretraining loss")
    plot_false_negatives(run_dir)
    if knn:
        plot_curves(knn, run_dir / "knn_curves.png", "kNN top-1 %", "kNN accuracy during pretraining",
                    xlabel="training time (s)")


def plot_false_negatives(run_dir: Path) -> None:
    """false_negatives.png: same-class pairs per batch by epoch for every method (and, under loss-side
    guidance, those left as negatives), beside the random-shuffling expectation and the floor."""
    curves, references = {}, {}
    for method in METHODS:
        path = run_dir / method / "metrics.jsonl"
        if not path.exists():
            continue
        recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        recs = [r for r in recs if "class_pairs_per_batch" in r]
        if not recs:
            continue
        epochs = [r["epoch"] for r in recs]
        curves[f"{title(method)}: in batches"] = (epochs, [r["class_pairs_per_batch"] for r in recs])
        if any(r["class_pairs_in_loss"] != r["class_pairs_per_batch"] for r in recs):
            curves[f"{title(method)}: negatives in the loss"] = (epochs, [r["class_pairs_in_loss"] for r in recs])
        references.setdefault("random shuffling", recs[0]["class_pairs_random"])
        references.setdefault("floor (spread by class)", recs[0]["class_pairs_floor"])
    if curves:
        plot_curves(curves, run_dir / "false_negatives.png", "same-class pairs per batch",
                    "false negatives in the batches", references=references)


def trained_epochs(run_dir: Path, method: str) -> int:
    ckpt = run_dir / method / CHECKPOINT
    return int(read_meta(ckpt).get("epoch", 0)) if ckpt.exists() else 0


def run_all(cfg: Config, run_dir: Path, resume: bool = False, methods: tuple[str, ...] | None = None,
            log=print, stop_after: int | None = None, max_minutes: float | None = None) -> dict[str, Any]:
    """Pseudo labels, SimCLR and G-SimCLR pretraining, every evaluation, the supervised baseline and the table.

    ``stop_after`` (epochs) or ``max_minutes`` (pretraining time per method) end this call early and return
    ``{"incomplete": True}`` while a method is unfinished; ``--resume`` continues from there.

    In a multi-process run (torchrun) every process pretrains; rank 0 alone computes the pseudo labels,
    evaluates, writes and logs, while the others wait (:func:`gsimclr.distributed.wait_for_main`),
    and they return before the supervised baseline with the results they know of."""
    world = current_world()
    if not world.is_main:
        log = _quiet
    methods = tuple(METHODS.names()) if methods is None else tuple(methods)
    for name in methods:
        METHODS.get(name)  # an unknown name is a one-line error before any work
    train, test = load_data(cfg)
    log(f"data: {len(train)} training images ({train.name}), {0 if test is None else len(test)} test images, "
        f"{train.image_size}px" + (f"; skipped {train.skipped} unreadable files" if train.skipped else ""))
    results: dict[str, Any] = {"data": cfg.data, "knn_k": cfg.knn_k, "label_fraction": cfg.label_fraction,
                               "linear_protocol": cfg.linear_protocol, "methods": {}}
    pseudo = None
    if any(METHODS[m].guided for m in methods) and pseudo_labels_before_pretraining(cfg):
        t0 = time.perf_counter()
        pl = shared_pseudo_labels(cfg, train, run_dir, resume)
        pseudo = pl.pop("labels")
        results["pseudo_labels"] = {**pl, "seconds": round(time.perf_counter() - t0, 2)}
        scores = f", NMI {pl['nmi']:.3f}, ARI {pl['ari']:.3f}" if "nmi" in pl else ""
        log(f"pseudo labels ({cfg.pseudo_labels}): k={pl['k']}{scores}")
    evaluable = train.has_labels and test is not None and test.has_labels
    for method in methods:
        out = run_dir / method
        eval_path = out / "eval.json"
        done = resume and eval_path.exists()
        if done:
            results["methods"][method] = json.loads(eval_path.read_text())
            continue
        model = stage_pretrain(cfg, train, run_dir, method, pseudo, resume, stop_after, max_minutes,
                               (train, test) if evaluable else None)
        wait_for_main()  # rank 0 has written the checkpoint
        if trained_epochs(run_dir, method) < cfg.epochs:
            log(f"{method}: stopped at epoch {trained_epochs(run_dir, method)}/{cfg.epochs}; continue with --resume")
            return {"incomplete": True}
        if not world.is_main:
            wait_for_main()  # while rank 0 evaluates this method
            continue
        summary = stage_results(run_dir, method)
        log(f"{method}: pretrained {summary['epochs']} epochs in {summary['pretrain_s']:.1f} s")
        if "pseudo_labels" in summary and "pseudo_labels" not in results:  # encoder pseudo labels
            results["pseudo_labels"] = summary["pseudo_labels"]
        if evaluable:
            summary.update(evaluate_encoder(cfg, model, train, test, out=out))
        write_json(eval_path, summary)
        results["methods"][method] = summary
        wait_for_main()
    if not world.is_main:
        return results
    if evaluable:
        sup_path = run_dir / "supervised.json"
        if resume and sup_path.exists():
            results["supervised"] = json.loads(sup_path.read_text())["top1"]
        else:
            results["supervised"] = stage_supervised(cfg, train, test)
            write_json(sup_path, {"top1": results["supervised"], "epochs": cfg.supervised_epochs})
    plot_run_curves(run_dir)
    write_json(run_dir / "results.json", results)
    table = markdown_table(results) if evaluable else "(no labelled evaluation split: nothing to tabulate)"
    write_text(run_dir / "results.md", table + "\n\n" + "\n".join(summary_lines(results)) + "\n")
    return results


def _quiet(*args, **kwargs) -> None:
    """The log of the processes other than rank 0."""
