"""The stages of a run, shared by the CLI subcommands and ``gsimclr run``.

The run folder's layout, lock and stage provenance belong to :mod:`gsimclr.run_folder`; every path
here comes from its :class:`~gsimclr.run_folder.RunFolder`. A stage is reused on ``--resume`` only
when its recorded provenance matches (otherwise the command is refused, naming what differs), and
the run's metadata (run.json, config.yaml) is written only once a command has been accepted.
"""

from __future__ import annotations

import contextlib
import json
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from gsimclr import __version__
from gsimclr.checkpoint import read_meta
from gsimclr.config import Config
from gsimclr.data.dataset import ImageData, align_classes
from gsimclr.data.store import EncodedStore
from gsimclr.data.store_batches import decoded, open_split
from gsimclr.distributed import current_world, wait_for_main
from gsimclr.errors import UserError
from gsimclr.evaluation import EVALUATIONS, check_evaluations, enabled_evaluations
from gsimclr.evaluation.context import EvalContext
from gsimclr.evaluation.fit import resumable
from gsimclr.data.splits import holdout_split
from gsimclr.evaluation.classifier import supervised
from gsimclr.io import write_json, write_text
from gsimclr.models.simclr import SimCLRModel
from gsimclr.plots import context_line, plot_curves, plot_tsne
from gsimclr.guidance.autoencoder import AutoencoderOptions
from gsimclr.guidance.diagnostics import PAIR_KEYS
from gsimclr.guidance.sources import (autoencoder_pseudo_labels, file_pseudo_labels, load_pseudo_labels, parse_source,
                                      save_pseudo_labels)
from gsimclr.methods import METHODS, default_methods, loss_title, title
from gsimclr.report import markdown_table, summary_lines
from gsimclr.run_folder import (TSNE_ENCODER, RunFolder, array_digest, provenance, provenance_key, read_output,
                                 stage_fields)
from gsimclr.runtime import resolve_device
from gsimclr.models.registry import create_backbone
from gsimclr.tracking import read_metrics
from gsimclr.training.pretrain import (backbone_options, build_backbone, check_reclustering,  # noqa: F401
                                       load_encoder, pretrain)  # load_encoder: also importable from here, as before
from gsimclr.transforms.augment import NORMALIZATIONS

SUPERVISED_PROGRESS = "supervised.progress"   # the supervised baseline's training, epoch by epoch (removed when done)
EVAL_PROGRESS = "eval.progress.json"   # each finished evaluation of a stage in flight (removed once eval.json is written)


def load_data(cfg: Config, pretraining: bool = True) -> tuple[ImageData | EncodedStore, ImageData | EncodedStore | None]:
    """The training split and a labelled evaluation split, each in memory or as a memory-mapped JPEG
    store as ``--store`` picks (:func:`gsimclr.data.store_batches.open_split`). Without a test split, a
    stratified 20% of a labelled training set is held out for evaluation (and not used for pretraining).
    ``pretraining``: the command trains with ``--batch-size`` batches, which must fit the training set
    (commands that only read a pretrained model, whose batch size is the run's, skip that check)."""
    train, test = _open_splits(cfg)
    if test is None and train.has_labels:
        keep, held = holdout_split(train.labels, 0.2, cfg.seed)
        if len(held) == 0:
            raise UserError(f"{cfg.data}: no class has two images, so none can be held out for evaluation; "
                            "give --test-data")
        train, test = train.subset(keep), train.subset(held)
    train = _limit(train, cfg.train_limit, cfg.seed)
    test = _limit(test, cfg.test_limit, cfg.seed + 1) if test is not None else None
    if pretraining and cfg.batch_size > len(train):
        raise UserError(f"--batch-size {cfg.batch_size} is larger than the dataset ({len(train)} training images)")
    _warn_untrained_classes(train, test)
    if train.has_labels and test is not None and not test.has_labels:
        warnings.warn(f"the evaluation split of {cfg.test_data or cfg.data} has no labels (images outside class folders, "
                      "or no label column): nothing can be evaluated; give a labelled --test-data", stacklevel=2)
    if train.has_labels and len(train) and len(np.unique(train.labels)) == 1:
        only = int(train.labels[0])
        name = train.classes[only] if train.classes is not None and only < len(train.classes) else str(only)
        warnings.warn(f"every training image has one label ({name}): the classifiers learn nothing, their accuracy is "
                      f"the share of evaluation images labelled {name}", stacklevel=2)
    return train, test


def _warn_untrained_classes(train, test) -> None:
    """Warn when evaluation images belong to a class that no training image has (a test/ class folder
    missing from train/, or one emptied by --train-limit): no classifier can get them right. A class name
    the training set lacks altogether is warned about by :func:`align_classes` already."""
    if test is None or test.labels is None or not train.has_labels or not len(test):
        return
    named = len(train.classes) if train.classes is not None else None
    trained = set(np.unique(train.labels).tolist())
    missing = [int(c) for c in np.unique(test.labels) if c >= 0 and c not in trained and (named is None or c < named)]
    if missing:
        names = [str(test.classes[c]) if test.classes is not None and c < len(test.classes) else str(c) for c in missing]
        images = int(np.isin(test.labels, missing).sum())
        warnings.warn(f"{images} of the {len(test)} evaluation images belong to {len(missing)} class(es) without training "
                      f"images: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}", stacklevel=3)


def _budget(cfg: Config) -> int | None:
    """--memory-budget-gb in bytes (None: the default, half of this machine's memory)."""
    return None if cfg.memory_budget_gb is None else int(cfg.memory_budget_gb * 1e9)


def _open_splits(cfg: Config):
    size = cfg.cache_size or cfg.image_size
    budget = _budget(cfg)

    def split_of(spec: str, split: str):
        return open_split(spec, split, size, cfg.store, cfg.on_corrupt, budget, resize=cfg.resize)

    train = split_of(cfg.data, "train")
    if train is None:
        raise UserError(f"{cfg.data} has no training split (train-* parquet files or a train/ folder)")
    if cfg.test_data:
        test = split_of(cfg.test_data, "test")
        if test is None:
            test = split_of(cfg.test_data, "train")
    else:
        test = split_of(cfg.data, "test")
    return train, align_classes(train, test)


def _limit(data: ImageData, n: int, seed: int) -> ImageData:
    """A random subset of ``n`` images (sorted, so the data's order is kept); all of them for 0."""
    if not n or n >= len(data):
        return data
    return data.subset(np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False)))


def write_run_info(run_dir: Path | RunFolder, cfg: Config, argv: list[str] | None = None) -> None:
    """run.json and config.yaml: call only once the command has been accepted (its checks passed)."""
    from gsimclr.plugins import loaded_modules
    from gsimclr.provenance import device_name, git_commit

    folder = _folder(run_dir)
    info = {"command": " ".join(["gsimclr"] + (argv if argv is not None else sys.argv[1:])),
            "gsimclr_version": __version__, "git_commit": git_commit(), "torch": torch.__version__,
            "python": platform.python_version(), "host": platform.node(), "device": device_name(str(resolve_device(cfg.device))),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "plugins": loaded_modules()}
    write_json(folder.run_info, info)
    write_text(folder.config, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _folder(run_dir: Path | RunFolder) -> RunFolder:
    return run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)


# ------------------------------------------------------------------------------ stage provenance


def pseudo_provenance(cfg: Config, train: ImageData) -> dict[str, Any]:
    return provenance("pseudo_labels", cfg, {"train": train}, {"k": cfg.n_clusters})


def pretrain_provenance(cfg: Config, train: ImageData, method: str, pseudo: np.ndarray | None) -> dict[str, Any]:
    guided = METHODS.get(method).guided
    inputs: dict[str, Any] = {"method": method}
    if guided:
        inputs["pseudo_labels"] = None if pseudo is None else array_digest(np.asarray(pseudo, np.int64))
    # a guided method also depends on the guidance options and, for encoder pseudo labels made during
    # pretraining, on how they are made
    extra = tuple(stage_fields("guidance")) + ("pseudo_labels", "recluster_every", "recluster_warmup", "k") if guided else ()
    extra += tuple(o.name for o in METHODS.declarations[method].options) if method in METHODS.declarations else ()
    # the --loss entry's own options (--tau-plus, --beta; none for NT-Xent, as before) join through the
    # "loss" field that picks it (run_folder.provenance, entry_fields)
    return provenance("pretrain", cfg, {"train": train}, inputs, extra_fields=extra)


def eval_provenance(cfg: Config, train: ImageData, test: ImageData | None, checkpoint: Path) -> dict[str, Any]:
    checksum = read_meta(checkpoint).get("checksum") if checkpoint.exists() else None
    return provenance("evaluation", cfg, {"train": train, "test": test}, {"checkpoint": checksum})


def supervised_provenance(cfg: Config, train: ImageData, test: ImageData | None) -> dict[str, Any]:
    return provenance("supervised", cfg, {"train": train, "test": test})


def guided_checkpoints(run_dir: Path | RunFolder) -> list[Path]:
    """The checkpoints in a run folder that were trained with its pseudo labels."""
    folder = _folder(run_dir)
    return [folder.checkpoint(m) for m in METHODS.names() if METHODS[m].guided and folder.checkpoint(m).exists()]


def reusable_pseudo_labels(cfg: Config, train: ImageData, run_dir: Path | RunFolder) -> bool:
    """Whether the run folder holds pseudo labels made from this data and these options; a UserError
    naming the differences when it holds others."""
    folder = _folder(run_dir)
    return folder.reusable("pseudo_labels", pseudo_provenance(cfg, train), [folder.pseudo_labels, folder.pseudo_meta])


def stage_pseudo_labels(cfg: Config, train: ImageData, run_dir: Path | RunFolder, resume: bool = False,
                        test: ImageData | None = None) -> dict[str, Any]:
    """The pseudo labels of ``--pseudo-labels`` computed before pretraining (autoencoder, file:PATH) in
    the run folder's pseudo_labels/; ``encoder`` ones are made during pretraining (UserError here).
    ``--ae-select test`` has the autoencoder's early stopping watch ``test``."""
    source, path = parse_source(cfg.pseudo_labels)
    if source == "encoder":
        raise UserError("--pseudo-labels encoder: the labels are computed during G-SimCLR pretraining")
    folder = _folder(run_dir)
    out = folder.pseudo_dir
    if resume and reusable_pseudo_labels(cfg, train, folder):
        return {"labels": load_pseudo_labels(folder.pseudo_labels, len(train)), **read_output(
            folder.pseudo_meta, ("k",), "restore it, or start a new run with another --out (pseudo labels made anew "
            "would not be those the guided checkpoints were trained with)")}
    if cfg.n_clusters > len(train):
        raise UserError(f"--k {cfg.n_clusters} is larger than the dataset ({len(train)} images)")
    if source == "autoencoder" and cfg.ae_select == "test" and test is None:
        raise UserError("--ae-select test needs a test split; this data has none")
    folder.record("pseudo_labels", pseudo_provenance(cfg, train))
    if source == "file":
        result = file_pseudo_labels(path, len(train), cfg.n_clusters, cfg.seed, train.labels if train.has_labels else None,
                                    resolve_device(cfg.device), n_init=cfg.kmeans_n_init)
        save_pseudo_labels(out, result)
    else:
        train = decoded(train, cfg.image_size, "the autoencoder's pseudo labels", _budget(cfg))
        val = None
        if test is not None and cfg.ae_select == "test":
            val = decoded(test, cfg.image_size, "the autoencoder's pseudo labels", _budget(cfg))
        result = autoencoder_pseudo_labels(train, cfg.n_clusters, AutoencoderOptions.from_config(cfg), out, val)
    if result.features is not None and cfg.tsne_points:  # 0: no maps
        colour = train.labels if train.has_labels else result.labels
        plot_tsne(result.features, colour, out / f"tsne_{source}.png", f"{source} features (training images)",
                  cfg.tsne_points, cfg.seed, class_names=train.classes if train.has_labels else None,
                  context=context_line(folder.root, cfg.data, f"{source} pseudo labels, k={cfg.n_clusters}"),
                  label_kind="class" if train.has_labels else "pseudo label")
    return {"labels": result.labels, **result.metrics}


def pseudo_labels_before_pretraining(cfg: Config) -> bool:
    """Whether ``--pseudo-labels`` are made before pretraining (not ``encoder``, made during it)."""
    return parse_source(cfg.pseudo_labels)[0] != "encoder"


def shared_pseudo_labels(cfg: Config, train: ImageData, run_dir: Path | RunFolder, resume: bool = False,
                         test: ImageData | None = None) -> dict[str, Any]:
    """:func:`stage_pseudo_labels` for a command that may run in several processes: rank 0 computes
    (or reuses) them while the others wait, then the others read its files."""
    world = current_world()
    if not world.distributed:
        return stage_pseudo_labels(cfg, train, run_dir, resume, test)
    result = stage_pseudo_labels(cfg, train, run_dir, resume, test) if world.is_main else None
    wait_for_main()
    if world.is_main:
        return result
    if not _folder(run_dir).pseudo_labels.exists():
        raise UserError(f"rank {world.rank} cannot see rank 0's pseudo labels in {run_dir}; "
                        "the run folder must be on a file system shared by every node")
    return stage_pseudo_labels(cfg, train, run_dir, resume=True)


def held_pseudo_labels(cfg: Config, train: ImageData, run_dir: Path | RunFolder, methods: tuple[str, ...],
                       resume: bool) -> np.ndarray | None:
    """The pseudo labels made before pretraining (autoencoder, file:PATH) that the run folder holds for
    ``methods`` from this data and these options, or None. With ``resume``, a guided method's checkpoint
    trained with pseudo labels the folder no longer holds is a UserError (the one check of both
    ``gsimclr run --resume`` and ``gsimclr pretrain --resume``).

    Unguided ``methods`` only show pseudo labels (the same-pseudo-label diagnostics of their batches):
    for them any pseudo labels the folder holds of this same training data are used, whatever options
    made them, and none is an error."""
    folder = _folder(run_dir)
    if not pseudo_labels_before_pretraining(cfg):
        return None
    if not any(METHODS[m].guided for m in methods):
        recorded = folder.recorded("pseudo_labels")
        same_data = recorded is not None and recorded.get("data") == pseudo_provenance(cfg, train)["data"]
        return load_pseudo_labels(folder.pseudo_labels, len(train)) if same_data and folder.pseudo_labels.exists() \
            else None
    if reusable_pseudo_labels(cfg, train, folder):
        return load_pseudo_labels(folder.pseudo_labels, len(train))
    for method in methods if resume else ():
        ckpt = folder.checkpoint(method)
        if METHODS[method].guided and ckpt.exists():
            raise UserError(f"--resume: {ckpt} was trained with pseudo labels that {folder.root} no longer "
                            "holds; choose another --out")
    return None


def check_inputs(cfg: Config, train: ImageData, test: ImageData | None, methods: tuple[str, ...] = (),
                 pseudo_labels: bool = False, evaluate: bool = False) -> None:
    """Every check of the inputs that needs the data or a file's contents, before anything is written
    and before any stage trains: the pseudo labels' k against the images (``pseudo_labels``, or guided
    ``methods`` with labels made before pretraining), encoder re-clustering, ``--knn-k`` (``evaluate``),
    and ``--init``'s weights against the backbone (``methods``)."""
    guided = any(METHODS[m].guided for m in methods)
    if (pseudo_labels or guided) and pseudo_labels_before_pretraining(cfg):
        if cfg.n_clusters > len(train):
            what = f"--k {cfg.k}" if cfg.k else f"--k (default: --batch-size {cfg.batch_size})"
            raise UserError(f"{what} is larger than the dataset ({len(train)} images): give --k {len(train)} or less")
        if parse_source(cfg.pseudo_labels)[0] == "autoencoder" and cfg.ae_select == "test" and test is None:
            raise UserError("--ae-select test needs a test split; this data has none")
    if guided and not pseudo_labels_before_pretraining(cfg):
        check_reclustering(cfg, len(train))  # before SimCLR's pretraining, not after it
    if evaluate and train.has_labels and test is not None and test.has_labels:
        check_evaluations(cfg, train, test, enabled_evaluations(cfg))  # before hours of pretraining, not after
    if methods:
        check_input_size(cfg)
    if evaluate and train.has_labels and test is not None and test.has_labels and (
            cfg.supervised_model is not None or cfg.supervised_n_blocks is not None):
        check_input_size(cfg, cfg.supervised_model, cfg.supervised_n_blocks)
    if methods and cfg.init is not None:
        from gsimclr.models.weights import match_state_dict, read_state_dict

        match_state_dict(build_backbone(cfg), read_state_dict(cfg.init))  # before any stage trains


def check_input_size(cfg: Config, model: str | None = None, n_blocks: int | None = None,
                     built_for: Config | None = None) -> None:
    """A UserError, before any work, when the backbone (``model``, default --model; ``built_for``: the
    configuration a checkpoint's network was built with) cannot take --image-size images."""
    from gsimclr.models.registry import input_size_problem

    name = model or (built_for or cfg).model
    options = backbone_options(built_for or cfg)
    if n_blocks is not None:
        options["n_blocks"] = n_blocks
    problem = input_size_problem(name, cfg.image_size, **options)
    if not problem:
        return
    if "match" in problem and built_for is not None:  # a fixed-size network (a ViT's position embeddings)
        raise UserError(f"--image-size {cfg.image_size} does not fit --model {name}, built for "
                        f"{built_for.image_size} px images ({problem}); give --image-size {built_for.image_size}")
    patches = " or a smaller --patch-size" if built_for is None and "vit" in name else ""
    raise UserError(f"--image-size {cfg.image_size} is too small for --model {name} ({problem}); give a larger "
                    f"--image-size{patches}")


def check_method(cfg: Config, method: str, n_images: int) -> None:
    """The method's own option checks (its recipe's) on ``n_images`` training images: a UserError
    before any work."""
    METHODS.get(method).parts().validate(cfg, n_images)  # the options as given, so that errors name them


def check_pretrain(cfg: Config, train: ImageData, run_dir: Path | RunFolder, method: str,
                   pseudo: np.ndarray | None, resume: bool) -> dict[str, Any]:
    """The stage's provenance, once it is known that the stage may run: without ``resume`` its
    checkpoint must not exist; with it, an existing checkpoint must have been made from the same inputs."""
    check_method(cfg, method, len(train))
    folder = _folder(run_dir)
    ckpt = folder.checkpoint(method)
    if ckpt.exists() and not resume:
        raise UserError(f"{ckpt} exists; pass --resume to continue that run or choose another --out")
    expected = pretrain_provenance(cfg, train, method, pseudo)
    if resume:
        folder.reusable(method, expected, [ckpt])
    return expected


def stage_pretrain(cfg: Config, train: ImageData, run_dir: Path | RunFolder, method: str, pseudo: np.ndarray | None,
                   resume: bool = False, stop_after: int | None = None, max_minutes: float | None = None,
                   monitor: tuple[ImageData, ImageData] | None = None) -> SimCLRModel:
    folder = _folder(run_dir)
    expected = check_pretrain(cfg, train, folder, method, pseudo, resume)
    world = current_world()
    if world.is_main and not folder.checkpoint(method).exists():
        folder.record(method, expected)
    t0 = time.perf_counter()
    # an unguided method only reports the pseudo labels' pairs in its batches (diagnostics)
    model = pretrain(cfg, train, folder.stage_dir(method), pseudo, resume=resume, method=method,
                     stop_after=stop_after, max_minutes=max_minutes, monitor=monitor)
    if world.is_main:  # in a multi-process run only rank 0 writes
        _write_timing(folder.timing(method), time.perf_counter() - t0)
    return model


def _write_timing(timing_path: Path, seconds: float) -> None:
    previous = read_output(timing_path, ("pretrain_s",))["pretrain_s"] if timing_path.exists() else 0.0
    write_json(timing_path, {"pretrain_s": previous + seconds})


def evaluate_encoder(cfg: Config, model: SimCLRModel, train: ImageData, test: ImageData,
                     which: tuple[str, ...] | None = None, out: Path | None = None,
                     device: torch.device | None = None, progress: tuple[Path, str] | None = None) -> dict[str, Any]:
    """The registered evaluations (:data:`gsimclr.evaluation.EVALUATIONS`; all of them, or those named in
    ``which``) on one shared context, so features are extracted once; a t-SNE map of the test features
    when ``out`` is given. ``progress`` (a file and the key of what is evaluated): each finished evaluation's
    result is kept there, and one already there under the same key is reused, so a stage cut between two
    evaluations continues with the next (each evaluation seeds its own draws, so the numbers are those of
    an uncut stage)."""
    if not (train.has_labels and test is not None and test.has_labels):
        raise UserError("evaluation needs labels: the data has no labelled training and test splits")
    names = enabled_evaluations(cfg) if which is None else list(which)
    check_evaluations(cfg, train, test, names)  # before any features are computed
    device = device or resolve_device(cfg.device)
    ctx = EvalContext(cfg, model.to(device), train, test, device, out)
    done: dict[str, Any] = {}
    if progress is not None and progress[0].is_file():
        with contextlib.suppress(OSError, ValueError):
            kept = json.loads(progress[0].read_text())
            done = kept["done"] if kept.get("key") == progress[1] else {}
    result: dict[str, Any] = {}
    for name in names:
        if name in done:
            result[name] = done[name]
        elif progress is None:
            result[name] = EVALUATIONS.get(name)(ctx)
        else:   # its training keeps its progress after every epoch too (a 35-epoch fine-tune on one core)
            with resumable(progress[0].parent / f"{name}.progress", progress[1]):
                result[name] = EVALUATIONS.get(name)(ctx)
        if progress is not None and name not in done:
            done[name] = result[name]
            write_json(progress[0], {"key": progress[1], "done": done})
    if out is not None and cfg.tsne_points:
        plot_tsne(ctx.features("test")["P3"].numpy(), test.labels, out / TSNE_ENCODER,
                  "encoder features (P3, test images)", cfg.tsne_points, cfg.seed, class_names=test.classes,
                  context=context_line(out.parent, cfg.data, title(out.name)))
    return result


def stage_supervised(cfg: Config, train: ImageData, test: ImageData) -> dict[str, Any]:
    """The supervised baseline of ``--eval-protocol``: ``{"top1": %, "epochs": ...}`` (the notebooks'
    protocol adds the epoch early stopping chose)."""
    if not (train.has_labels and test is not None and test.has_labels):
        raise UserError("the supervised baseline needs labelled training and test splits")
    # an encoded store is read batch by batch through the one image interface (gsimclr.evaluation.images)
    device = resolve_device(cfg.device)
    if cfg.eval_protocol == "notebook":
        from gsimclr.evaluation.notebook import run_supervised_notebook

        return {"epochs": cfg.supervised_epochs, "protocol": "notebook",
                **run_supervised_notebook(cfg, train, test, device)}
    torch.manual_seed(cfg.seed)
    if cfg.supervised_model is None and cfg.supervised_n_blocks is None:
        backbone = build_backbone(cfg)  # from scratch: --init is for pretraining
    else:
        n_blocks = cfg.n_blocks if cfg.supervised_n_blocks is None else cfg.supervised_n_blocks
        backbone = create_backbone(cfg.supervised_model or cfg.model, **{**backbone_options(cfg), "n_blocks": n_blocks})
    mean, std = NORMALIZATIONS[cfg.normalize]
    top1 = supervised(backbone, train, test, cfg.image_size, cfg.supervised_epochs, cfg.supervised_lr,
                      device, cfg.batch_size, cfg.seed, cfg.precision, mean=mean, std=std)
    return {"top1": top1, "epochs": cfg.supervised_epochs}


def stage_results(run_dir: Path | RunFolder, method: str) -> dict[str, Any]:
    """Training summary of a pretraining stage: epochs, time, throughput, final loss, the false-negative
    diagnostics' means over the epochs that have them, and the last re-clustering's scores."""
    folder = _folder(run_dir)
    out = folder.stage_dir(method)
    records = read_metrics(folder.metrics(method))
    timing = read_output(folder.timing(method)) if folder.timing(method).exists() else {}
    summary = {"epochs": len(records), "pretrain_s": timing.get("pretrain_s", sum(r["epoch_s"] for r in records))}
    if records:
        summary["final_loss"] = records[-1]["loss"]
        summary["images_per_s"] = float(np.median([r["images_per_s"] for r in records]))
    for key in PAIR_KEYS:
        values = [r[key] for r in records if key in r]
        if values:
            summary[key] = float(np.mean(values))
    if (out / "pseudo_labels.json").exists():  # encoder pseudo labels: the latest clustering
        summary["pseudo_labels"] = read_output(out / "pseudo_labels.json")
    return summary


def plot_run_curves(run_dir: Path | RunFolder) -> None:
    """loss_curves.png (loss per epoch) and, when monitored, knn_curves.png (kNN accuracy against training time)."""
    folder = _folder(run_dir)
    losses, knn, loss_titles = {}, {}, set()
    saved = yaml.safe_load(folder.config.read_text()) if folder.config.is_file() else None
    loss = (saved or {}).get("loss", "ntxent")
    for method in METHODS:
        path = folder.metrics(method)
        if path.exists():
            recs = read_metrics(path)
            name = title(method)
            loss_titles.add(loss_title(method, loss))
            losses[name] = ([r["epoch"] for r in recs], [r["loss"] for r in recs])
            monitored = [r for r in recs if "knn" in r]
            if monitored:
                knn[name] = ([r["train_s"] for r in monitored], [r["knn"] for r in monitored])
    context = _run_context(folder, losses)
    if losses:
        plot_curves(losses, folder.loss_curves, loss_titles.pop() if len(loss_titles) == 1 else "loss",
                    "pretraining loss", context=context)
    plot_false_negatives(folder)
    if knn:
        plot_curves(knn, folder.knn_curves, "kNN top-1 %", "kNN accuracy during pretraining",
                    xlabel="training time (s)", context=context)


def _run_context(folder: RunFolder, methods: Any = ()) -> str:
    """The run/data/method line of a run folder's pictures (data from its config.yaml, when written)."""
    data = None
    if folder.config.exists():
        data = (yaml.safe_load(folder.config.read_text()) or {}).get("data")
    return context_line(folder.root, data, " vs ".join(methods))


def plot_false_negatives(run_dir: Path | RunFolder) -> None:
    """false_negatives.png: same-class pairs per batch by epoch for every method (and, under loss-side
    guidance, those left as negatives), beside the random-shuffling expectation and the floor."""
    folder = _folder(run_dir)
    curves, references = {}, {}
    for method in METHODS:
        path = folder.metrics(method)
        if not path.exists():
            continue
        recs = [r for r in read_metrics(path) if "class_pairs_per_batch" in r]
        if not recs:
            continue
        epochs = [r["epoch"] for r in recs]
        curves[f"{title(method)}: in batches"] = (epochs, [r["class_pairs_per_batch"] for r in recs])
        if any(r["class_pairs_in_loss"] != r["class_pairs_per_batch"] for r in recs):
            curves[f"{title(method)}: negatives in the loss"] = (epochs, [r["class_pairs_in_loss"] for r in recs])
        references.setdefault("random shuffling", recs[0]["class_pairs_random"])
        references.setdefault("floor (spread by class)", recs[0]["class_pairs_floor"])
    if curves:
        methods = [title(m) for m in METHODS if folder.metrics(m).exists()]
        plot_curves(curves, folder.root / "false_negatives.png", "same-class pairs per batch",
                    "false negatives in the batches", references=references, context=_run_context(folder, methods))


def trained_epochs(run_dir: Path | RunFolder, method: str) -> int:
    ckpt = _folder(run_dir).checkpoint(method)
    return int(read_meta(ckpt).get("epoch", 0)) if ckpt.exists() else 0


def check_resume(cfg: Config, folder: RunFolder, train: ImageData, test: ImageData | None,
                 methods: tuple[str, ...]) -> None:
    """Before a resumed run writes anything: every stage already in the folder must have been made
    from the same inputs as this run's (a UserError naming the first stage and what differs)."""
    pseudo = held_pseudo_labels(cfg, train, folder, methods, resume=True)
    for method in methods:
        ckpt = folder.checkpoint(method)
        if ckpt.exists():
            folder.check(method, pretrain_provenance(cfg, train, method, pseudo))
        folder.reusable(f"{method}/eval", eval_provenance(cfg, train, test, ckpt), [folder.eval(method)])
    folder.reusable("supervised", supervised_provenance(cfg, train, test), [folder.supervised])


def run_all(cfg: Config, run_dir: Path | RunFolder, resume: bool = False, methods: tuple[str, ...] | None = None,
            log=print, stop_after: int | None = None, max_minutes: float | None = None,
            argv: list[str] | None = None) -> dict[str, Any]:
    """Pseudo labels, SimCLR and G-SimCLR pretraining, every evaluation, the supervised baseline and the table.

    :func:`gsimclr.stage_jobs.run_all_in_jobs` runs the same stages in worker processes at once (``--jobs``).

    ``stop_after`` (epochs) or ``max_minutes`` (pretraining time per method) end this call early and return
    ``{"incomplete": True}`` while a method is unfinished; ``--resume`` continues from there, reusing
    only the stages whose provenance matches this call's (:func:`check_resume`, before anything is
    written). The run's metadata (run.json, config.yaml; ``argv`` is the command recorded) is written
    once the data is loaded and those checks pass.

    In a multi-process run (torchrun) every process pretrains; rank 0 alone computes the pseudo labels,
    evaluates, writes and logs, while the others wait (:func:`gsimclr.distributed.wait_for_main`),
    and they return before the supervised baseline with the results they know of."""
    log = log if current_world().is_main else _quiet
    methods = tuple(default_methods()) if methods is None else tuple(methods)
    run = _open_run(cfg, _folder(run_dir), methods, resume, argv, log)
    results = results_header(cfg)
    pseudo = _pseudo_labels_before(run, methods, results, log)
    for method in methods:
        if not _run_method(run, method, pseudo, results, log, stop_after, max_minutes):
            return {"incomplete": True}
    if not current_world().is_main:
        return results
    if run.evaluable:
        results["supervised"] = _supervised_baseline(run)
    _write_results(run.folder, results, run.evaluable)
    return results


def results_header(cfg: Config) -> dict[str, Any]:
    """results.json before any stage: the settings its table names, and no method yet."""
    return {"data": cfg.data, "knn_k": cfg.knn_k, "label_fraction": cfg.label_fraction,
            "linear_protocol": cfg.linear_protocol, "loss": cfg.loss, "methods": {}}


@dataclass(frozen=True)
class _Run:
    """What every stage of :func:`run_all` reads: the options, the run folder, the data, whether it resumes."""

    cfg: Config
    folder: RunFolder
    train: ImageData | EncodedStore
    test: ImageData | EncodedStore | None
    resume: bool

    @property
    def evaluable(self) -> bool:
        return self.train.has_labels and self.test is not None and self.test.has_labels


def _open_run(cfg: Config, folder: RunFolder, methods: tuple[str, ...], resume: bool, argv: list[str] | None,
              log) -> _Run:
    """The run's data once every check passed (the methods' names first, ``--resume``'s provenance before
    anything is written); then rank 0 writes the run's metadata."""
    for name in methods:
        METHODS.get(name)  # an unknown name is a one-line error before any work
    train, test = load_data(cfg)
    check_inputs(cfg, train, test, methods, evaluate=True)
    for method in methods:
        check_method(cfg, method, len(train))  # before the first method's pretraining, not after it
    if resume:
        check_resume(cfg, folder, train, test, methods)
    if current_world().is_main:
        write_run_info(folder, cfg, argv)
    log(f"data: {len(train)} training images ({train.name}), {0 if test is None else len(test)} test images, "
        f"{train.image_size}px" + (f"; skipped {train.skipped} unreadable files" if train.skipped else ""))
    return _Run(cfg, folder, train, test, resume)


def _pseudo_labels_before(run: _Run, methods: tuple[str, ...], results: dict[str, Any], log) -> np.ndarray | None:
    """The pseudo labels made before pretraining (autoencoder, file:PATH) when a guided method uses them
    (rank 0 makes them, :func:`shared_pseudo_labels`), described in ``results``; None otherwise."""
    cfg = run.cfg
    if not (any(METHODS[m].guided for m in methods) and pseudo_labels_before_pretraining(cfg)):
        return None
    t0 = time.perf_counter()
    pl = shared_pseudo_labels(cfg, run.train, run.folder, run.resume, run.test)
    pseudo = pl.pop("labels")
    results["pseudo_labels"] = {**pl, "seconds": round(time.perf_counter() - t0, 2)}
    scores = f", NMI {pl['nmi']:.3f}, ARI {pl['ari']:.3f}" if "nmi" in pl else ""
    log(f"pseudo labels ({cfg.pseudo_labels}): k={pl['k']}{scores}")
    return pseudo


def _run_method(run: _Run, method: str, pseudo: np.ndarray | None, results: dict[str, Any], log,
                stop_after: int | None, max_minutes: float | None) -> bool:
    """One method: its evaluation reused on ``--resume`` when its provenance matches, else pretrained (by
    every process) and evaluated (by rank 0, while the others wait). False when pretraining stopped
    early (``stop_after``, ``max_minutes``)."""
    cfg, folder = run.cfg, run.folder
    if run.resume and folder.reusable(f"{method}/eval", eval_provenance(cfg, run.train, run.test,
                                                                        folder.checkpoint(method)), [folder.eval(method)]):
        results["methods"][method] = read_output(folder.eval(method))
        return True
    model = stage_pretrain(cfg, run.train, folder, method, pseudo, run.resume, stop_after, max_minutes,
                           (run.train, run.test) if run.evaluable else None)
    wait_for_main()  # rank 0 has written the checkpoint
    if trained_epochs(folder, method) < cfg.epochs:
        log(f"{method}: stopped at epoch {trained_epochs(folder, method)}/{cfg.epochs}; continue with --resume")
        return False
    if current_world().is_main:
        results["methods"][method] = _evaluate_method(run, method, model, results, log)
    wait_for_main()  # the other processes, while rank 0 evaluates this method
    return True


def _evaluate_method(run: _Run, method: str, model: SimCLRModel, results: dict[str, Any], log) -> dict[str, Any]:
    """Rank 0's part of a pretrained method: its training summary and every evaluation, written to its
    eval.json with their provenance; encoder pseudo labels' description joins ``results``. Each finished
    evaluation is kept in the stage's :data:`EVAL_PROGRESS` until eval.json is written, so a stage cut
    between two evaluations continues with the next."""
    cfg, folder = run.cfg, run.folder
    summary = stage_results(folder, method)
    log(f"{method}: pretrained {summary['epochs']} epochs in {summary['pretrain_s']:.1f} s")
    if "pseudo_labels" in summary and "pseudo_labels" not in results:  # encoder pseudo labels
        results["pseudo_labels"] = summary["pseudo_labels"]
    expected = eval_provenance(cfg, run.train, run.test, folder.checkpoint(method))
    kept = folder.stage_dir(method) / EVAL_PROGRESS
    if run.evaluable:
        key = provenance_key(expected)
        summary.update(evaluate_encoder(cfg, model, run.train, run.test, out=folder.stage_dir(method),
                                        progress=(kept, key)))
    folder.record(f"{method}/eval", expected)
    write_json(folder.eval(method), summary)
    kept.unlink(missing_ok=True)
    return summary


def _supervised_baseline(run: _Run) -> float:
    """The supervised baseline's top-1 (%), reused on ``--resume`` when its provenance matches."""
    expected = supervised_provenance(run.cfg, run.train, run.test)
    if run.resume and run.folder.reusable("supervised", expected, [run.folder.supervised]):
        return read_output(run.folder.supervised, ("top1",))["top1"]
    # its training keeps its progress after every epoch (hours on one CPU core): a kill loses one epoch
    with resumable(run.folder.root / SUPERVISED_PROGRESS, provenance_key(expected)):
        sup = stage_supervised(run.cfg, run.train, run.test)
    run.folder.record("supervised", expected)
    write_json(run.folder.supervised, sup)
    return sup["top1"]


def _write_results(folder: RunFolder, results: dict[str, Any], evaluable: bool) -> None:
    """The run's curves, results.json and results.md (the table and the summary lines)."""
    plot_run_curves(folder)
    write_json(folder.results_json, results)
    table = markdown_table(results) if evaluable else "(no labelled evaluation split: nothing to tabulate)"
    write_text(folder.results_md, table + "\n\n" + "\n".join(summary_lines(results)) + "\n")


def _quiet(*args, **kwargs) -> None:
    """The log of the processes other than rank 0."""
