"""Contrastive pretraining with no framework in the way: :class:`Pretrainer` runs the epochs of any
registered method (:data:`gsimclr.methods.METHODS`) from the parts it is given, and
:func:`build_pretrainer` builds those parts from a config (the method's own from its recipe,
:class:`gsimclr.methods.base.Recipe`).

The dataset lives on the device as one uint8 tensor (pinned host memory when it does not fit);
every step indexes a batch, augments it on the device (the method's number of random views,
per-sample parameters) and runs the method's loss (:meth:`Pretrainer.step`). Nothing in the step
waits for the host: the epoch's loss is summed on the device and read once per epoch.

Example:
    >>> from gsimclr.config import load_config
    >>> from gsimclr.data.sources import load_split
    >>> cfg = load_config("digits-quick", {"epochs": 1, "device": "cpu"})  # doctest: +SKIP
    >>> model = pretrain(cfg, load_split("digits"), "runs/example/simclr")  # doctest: +SKIP
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from gsimclr.checkpoint import load_checkpoint, read_meta, save_checkpoint
from gsimclr.config import Config, config_from_dict
from gsimclr.data.dataset import ImageData
from gsimclr.data.identity import content_id
from gsimclr.data.decode import BatchDecoder, default_backend
from gsimclr.data.store import EncodedStore
from gsimclr.data.store_batches import store_views
from gsimclr.distributed import (World, all_sum, barrier, convert_sync_batch_norm, current_world, from_main,
                                 same_on_all_ranks, world_device)
from gsimclr.errors import UserError
from gsimclr.guidance.samplers import batch_sampler
from gsimclr.guidance.sources import parse_source
from gsimclr.io import save_npy
from gsimclr.methods import METHODS, Method
from gsimclr.methods.views import activation_values, check_views_memory
from gsimclr.models.simclr import SimCLRModel, backbone_options
from gsimclr.run_folder import CHECKPOINT, CHECKPOINT_PSEUDO_LABELS  # the stage folder's checkpoint name (re-exported here)
from gsimclr.runtime import (autocast, backward_step, grad_scaler, maybe_compile, resolve_device, restore_scaler,
                             random_state, scaler_state, seed_epoch, seed_everything, set_random_state)
from gsimclr.tracking import RunLogger, WandbOptions
from gsimclr.training.optim import build_optimizer, lr_multiplier
from gsimclr.training.reclustering import EncoderReclustering, check_reclustering
from gsimclr.transforms.augment import NORMALIZATIONS, build_augment

__all__ = ["CHECKPOINT", "Pretrainer", "TrainSettings", "ViewSource", "backbone_options", "build_model",
           "build_pretrainer", "check_reclustering", "load_encoder", "pretrain"]


def build_backbone(cfg: Config):
    from gsimclr.models.registry import create_backbone

    return create_backbone(cfg.model, **backbone_options(cfg))


def build_model(cfg: Config, method: str = "simclr") -> SimCLRModel:
    """The network of ``method`` (its recipe's :meth:`~gsimclr.methods.base.Recipe.build_model`) for a
    config as its checkpoint records it (defaults that depend on the data resolved)."""
    return METHODS.get(method).parts().build_model(cfg)


def load_encoder(path: str | Path, cfg: Config | None = None) -> tuple[SimCLRModel, Config, dict]:
    """A pretrained model from a checkpoint (or a stage folder holding one), with the config it was trained
    with: the network its method builds (:func:`build_model`) and the weights :meth:`Pretrainer.save` wrote."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    meta = read_meta(path)  # a one-line error when missing, a folder, unreadable or edited
    if not isinstance(meta.get("config"), dict):  # another gsimclr file: the autoencoder's weights
        what = "the pseudo-label autoencoder's weights" if "ae_model" in meta else "not a pretraining checkpoint"
        raise UserError(f"{path} is {what}, not a pretrained encoder (it holds no method and configuration); "
                        f"give a stage's {CHECKPOINT} (e.g. RUN/simclr/{CHECKPOINT})")
    saved = config_from_dict(meta["config"])
    model = build_model(saved, meta.get("method", "simclr"))
    load_checkpoint(path, model)
    return model, saved, meta


def wandb_options(cfg: Config, out_dir: Path, method: str) -> WandbOptions | None:
    """The Weights & Biases run of one pretraining stage when ``--wandb`` is on: named after the run
    folder and method unless ``--wandb-name`` says otherwise, grouped by run folder."""
    if not cfg.wandb:
        return None
    run = Path(out_dir).resolve().parent.name
    name = f"{cfg.wandb_name}-{method}" if cfg.wandb_name else f"{run}-{method}"
    return WandbOptions(project=cfg.wandb_project, name=name, group=cfg.wandb_name or run, config=cfg.to_dict())


def build_pretrain_augment(cfg: Config):
    """The run's view recipe, built beside its code (:func:`gsimclr.transforms.recipe.build_augment`)."""
    return build_augment(cfg)


def make_views_fn(cfg: Config, device: torch.device, n_views: int = 2):
    """``views(batch)``: ``n_views`` augmented views (V, N, 3, S, S) of a uint8 batch (N, H, W, 3). On a
    GPU it is compiled (about 1,200 small operations per batch fused into a few kernels); its randomness
    comes from the global stream that :func:`gsimclr.runtime.seed_epoch` seeds every epoch."""
    augment = build_pretrain_augment(cfg)
    return maybe_compile(lambda batch: augment.views(batch, n_views), device, cfg.compile)


def make_store_views_fn(cfg: Config, device: torch.device, n_views: int = 2):
    """``(decoder, views)`` for data in an encoded store: the decoder runs the recipe's crop stage on a
    batch's JPEG bytes (uint8 crops (V, N, S, S, 3), random resized crops drawn on each image's own
    aspect ratio, or one centred square per image for a recipe without crops); ``views(crops)`` runs the
    rest of the recipe batched on the device and gives (``n_views``, N, 3, S, S)."""
    augment = build_pretrain_augment(cfg)
    decoder = BatchDecoder.for_recipe(augment, views=n_views, backend=default_backend(device))
    return decoder, maybe_compile(lambda crops: augment.views_from_crops(crops, n_views), device, cfg.compile)


def place_images(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """The whole dataset as uint8: on the GPU when it takes under a quarter of the free memory,
    otherwise left where it is (a memory-mapped decoded cache is not copied; each batch is pinned
    and copied asynchronously, see :func:`host_batch`)."""
    tensor = torch.from_numpy(images)
    if device.type != "cuda":
        return tensor
    free, _ = torch.cuda.mem_get_info(device)
    if tensor.numel() < free // 4:
        return tensor.to(device)
    return tensor


def host_batch(images: torch.Tensor, index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``images[index]`` on ``device``. From host memory to a GPU the batch (not the data set) is pinned,
    from PyTorch's caching pinned-memory pool, so the copy is asynchronous without a second copy of the
    whole set (not yet measured on a GPU)."""
    batch = images[index]
    if device.type == "cuda" and batch.device.type == "cpu":
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)


def make_sampler(cfg: Config, n: int, pseudo_labels: np.ndarray | None, world: World):
    """The configured sampler (``--sampler``) over the pseudo labels; plain shuffling without them
    (SimCLR, or G-SimCLR with encoder pseudo labels before the first clustering), as tf.data's buffer
    shuffle with ``--shuffle-buffer`` and the first epoch's order every epoch with ``--reshuffle false``;
    ``--drop-last`` skips short last batches."""
    try:
        sampler = batch_sampler(cfg, n, pseudo_labels, world.rank, world.size)
    except ValueError as exc:
        raise UserError(f"--batch-size: {exc}") from None
    return check_batches(sampler)


def check_batches(sampler):
    """``sampler`` once its epoch's batches are known to exist: some labels allow none (greedy with
    ``--sampler-tail drop``), which is a UserError rather than an epoch of zero steps."""
    try:
        len(sampler)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return sampler


def monitor_knn(cfg: Config, model: SimCLRModel, train: ImageData, test: ImageData, device: torch.device) -> float:
    """Weighted kNN top-1 (%) on backbone features: the community's quick monitor."""
    from gsimclr.evaluation.features import extract_features
    from gsimclr.evaluation.knn import knn_accuracy

    mean, std = NORMALIZATIONS[cfg.normalize]
    ftrain = extract_features(model, train, cfg.image_size, device, precision=cfg.precision, mean=mean, std=std)["P3"]
    ftest = extract_features(model, test, cfg.image_size, device, precision=cfg.precision, mean=mean, std=std)["P3"]
    return knn_accuracy(ftrain, torch.from_numpy(train.labels), ftest, torch.from_numpy(test.labels),
                        cfg.knn_k, cfg.knn_temperature, device)


@dataclass(frozen=True)
class TrainSettings:
    """What the training loop reads of the configuration, read once by :func:`build_pretrainer`."""

    epochs: int
    lr: float
    seed: int
    precision: str = "auto"
    checkpoint_every: int = 0
    monitor_every: int = 0
    guidance: str = "none"           # the loss-side guidance, for the diagnostics
    sync_batch_norm: bool = True
    checkpoint_minutes: float = 0.0  # also checkpoint within an epoch this often (0: at epoch ends only)
    loss: str = "ntxent"             # --loss, for the divergence message

    @classmethod
    def from_config(cls, cfg: Config) -> "TrainSettings":
        return cls(cfg.epochs, cfg.lr, cfg.seed, cfg.precision, cfg.checkpoint_every, cfg.monitor_every,
                   cfg.guidance, cfg.sync_batch_norm, cfg.checkpoint_minutes, cfg.loss)


@dataclass
class ViewSource:
    """Where a step's batch comes from and how it becomes the method's views: ``images`` in memory
    (a uint8 tensor, indexed per batch), or an encoded ``store`` whose ``decoder`` makes the crops;
    ``make(batch)`` gives the views (V, N, 3, S, S)."""

    make: Callable[[torch.Tensor], torch.Tensor]
    images: torch.Tensor | None = None
    store: EncodedStore | None = None
    decoder: BatchDecoder | None = None

    @classmethod
    def from_config(cls, cfg: Config, data: ImageData | EncodedStore, device: torch.device,
                    n_views: int) -> "ViewSource":
        if isinstance(data, EncodedStore):
            decoder, make = make_store_views_fn(cfg, device, n_views)
            return cls(make, store=data, decoder=decoder)
        return cls(make_views_fn(cfg, device, n_views), images=place_images(data.images, device))


class KnnMonitor:
    """The weighted kNN top-1 (%) of the backbone's features on labelled train and test data, the
    community's quick monitor during pretraining (``--monitor-every``)."""

    def __init__(self, cfg: Config, train: ImageData, test: ImageData, device: torch.device):
        self.cfg, self.train, self.test, self.device = cfg, train, test, device

    def __call__(self, model) -> dict:
        return {"knn": monitor_knn(self.cfg, model, self.train, self.test, self.device),
                "knn_k": min(self.cfg.knn_k, len(self.train))}  # the vote a smaller monitor set allows


class Pretrainer:
    """One pretraining run from built parts (:func:`build_pretrainer` builds them from a config; the
    trainer never reads it): the method's ``model``, ``optimizer``, ``views`` (a :class:`ViewSource`),
    the batch sampler (``sampler_for(labels)`` makes one for pseudo labels, or None), the method's
    ``criterion`` and its step's ``loss_fn(model, views, labels, index)``, the learning-rate ``schedule``
    (a multiplier of ``settings.lr`` at a step of ``steps_per_epoch`` per epoch), the ``logger`` (rank 0's;
    None on the others), ``chance_loss(batch_sizes)`` (the method's loss of collapsed embeddings, for the
    collapse warning) and ``monitor(model)`` (the kNN monitor's record entries).

    In three parts: set-up (resume, distributed wrapping, pseudo labels), one epoch (:meth:`train_epoch`
    -> its metrics record, one :meth:`step` per batch) and the stopping policy (:meth:`should_stop`);
    :meth:`run` strings them together and :meth:`finish` writes the final checkpoint. Extensions hook
    in at these seams: ``self.sampler`` (which batches), ``self.loss_labels`` (the per-image labels the
    loss sees), ``epoch_hooks`` (functions ``hook(trainer, epoch, record)`` called after every epoch).

    Guidance: a guided method batches by its pseudo labels and hands them to the loss (``--guidance``);
    :meth:`set_pseudo_labels` swaps them, which ``reclustering`` (an
    :class:`~gsimclr.training.reclustering.EncoderReclustering`) does during training. Every epoch's
    record carries the method's false-negative diagnostics (its recipe's ``pair_stats``: same-class
    pairs among the loss's negatives) for the batches it trained on. An unguided method reports the
    same-pseudo-label pairs of its batches when given pseudo labels.

    The schedule counts the steps each epoch really has: step i of an epoch of L steps is at
    ``epoch + i / L`` epochs of the schedule, so an epoch whose sampler changed (re-clustering to the
    paper's sampler or greedy ``--sampler-tail drop``, which have fewer batches) still spans one epoch."""

    def __init__(self, *, method: Method, model: torch.nn.Module, optimizer: torch.optim.Optimizer, views: ViewSource,
                 sampler, sampler_for: Callable[[np.ndarray | None], Any], criterion, loss_fn,
                 schedule: Callable[[float], float], steps_per_epoch: int, settings: TrainSettings,
                 data: ImageData | EncodedStore, out_dir: str | Path, device: torch.device, logger: RunLogger | None,
                 checkpoint_meta: dict, scaler=None, pseudo_labels: np.ndarray | None = None, resume: bool = False,
                 reclustering: EncoderReclustering | None = None, monitor: Callable | None = None,
                 chance_loss: Callable[[list[int]], float | None] | None = None, init_report: dict | None = None):
        self.method, self.recipe = method, method.parts()
        self.model, self.optimizer, self.scaler = model, optimizer, scaler
        self.views, self.sampler, self.sampler_for = views, sampler, sampler_for
        self.criterion, self.loss_fn = criterion, loss_fn
        self.schedule, self.steps_per_epoch, self.settings = schedule, steps_per_epoch, settings
        self.data, self.out_dir, self.device = data, Path(out_dir), device
        self.log, self.checkpoint_meta, self.monitor = logger, checkpoint_meta, monitor
        self.reclustering, self.init_report, self.chance_loss = reclustering, init_report, chance_loss
        self.world = world = current_world()
        self.pseudo_labels = pseudo_labels if method.guided and reclustering is None else None
        self.diagnostic_labels = pseudo_labels         # shown, never used, by an unguided method
        self.classes = data.labels if data.has_labels else None
        self.epoch_hooks: list = [reclustering.after_epoch] if reclustering is not None else []
        self.ckpt = self.out_dir / CHECKPOINT
        self.partial: dict | None = None    # a checkpoint taken within an epoch: where that epoch continues
        self.deadline: float | None = None  # perf_counter() at which run() stops, within an epoch if need be
        self.start_epoch = self._resume() if resume else 0
        if not same_on_all_ranks(self.start_epoch, device):
            raise UserError(f"--resume: the processes found different checkpoints in {self.out_dir}; "
                            "the run folder must be on a file system shared by every node")
        self.train_model, self.restore_batch_norm = self.model, None
        if world.distributed:
            # Checkpoints hold `model`, never the DDP wrapper, so their keys have no "module." prefix and
            # they resume with any number of processes. SyncBatchNorm needs GPUs (torch raises on CPU tensors).
            if settings.sync_batch_norm and device.type == "cuda":
                self.restore_batch_norm = convert_sync_batch_norm(self.model)
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.loss_labels = None
        self.set_pseudo_labels(self.pseudo_labels)
        if reclustering is not None:
            reclustering.restore(self)
        if self.log and resume:
            self.log.truncate(self.start_epoch)
        self.train_time = self.log.records[-1].get("train_s", 0.0) if self.log and self.log.records else 0.0
        self.done = self.start_epoch
        self._at_chance = 0

    def set_pseudo_labels(self, labels: np.ndarray | None) -> None:
        """Use ``labels`` from the next batch on: in the sampler (built anew when it had none) and the loss."""
        if labels is None:
            return
        if not self.method.guided:
            self.diagnostic_labels = labels
            return
        labels = np.asarray(labels, dtype=np.int64)
        if hasattr(self.sampler, "set_labels"):
            self.sampler.set_labels(labels)
            check_batches(self.sampler)
        else:
            self.sampler = self.sampler_for(labels)
        self.pseudo_labels = labels
        if self.settings.guidance != "none":
            self.loss_labels = torch.from_numpy(labels).to(self.device)
        self.recipe.relabel(self.model, self.loss_labels)

    def recluster(self, epochs_done: int) -> dict:
        """Cluster the encoder's features into new pseudo labels now (see ``reclustering``)."""
        return self.reclustering.cluster(self, epochs_done)

    def _resume(self) -> int:
        if not self.ckpt.exists():
            return 0
        meta = read_meta(self.ckpt)
        # the data by content (gsimclr.data.identity); a checkpoint of 0.2.0 or older names it by its files
        same = meta["data"] == content_id(self.data) if "data" in meta else \
            meta.get("fingerprint") in (None, self.data.fingerprint)
        if not same:
            raise UserError(f"--resume: {self.ckpt} was trained on other data "
                            f"({meta.get('data', meta.get('fingerprint'))})")
        if meta.get("method", self.method.name) != self.method.name:
            raise UserError(f"--resume: {self.ckpt} was trained with {meta['method']}, not {self.method.name}")
        meta = load_checkpoint(self.ckpt, self.model, self.optimizer)
        restore_scaler(self.scaler, meta.get("grad_scaler"))
        self.partial = meta.get("partial")
        if self.partial is not None and current_world().distributed:
            raise UserError(f"--resume: {self.ckpt} was saved within an epoch by one process; resume it with one "
                            "process, or from an epoch-end checkpoint")
        return int(meta["epoch"])

    def save(self, epoch: int, partial: dict | None = None) -> None:
        """The checkpoint after ``epoch`` whole epochs; ``partial``: taken within the next epoch (its steps
        done, loss sum, images, seconds and the random stream's state), which :meth:`train_epoch` continues."""
        if self.reclustering is not None and self.pseudo_labels is not None:   # written first: resuming reads both
            save_npy(self.out_dir / CHECKPOINT_PSEUDO_LABELS, self.pseudo_labels)
        meta = {"epoch": epoch, **self.checkpoint_meta, "grad_scaler": scaler_state(self.scaler)}
        if partial is not None:
            meta["partial"] = partial
        save_checkpoint(self.ckpt, self.model, self.optimizer, meta)

    def _partial_state(self, epoch: int, steps_done: int, total: torch.Tensor, seen: int, elapsed: float) -> dict:
        return {"epoch": epoch, "steps": steps_done, "loss_sum": float(total), "seen": seen,
                "seconds": elapsed, "rng": random_state()}

    def _mid_epoch_checkpoints(self) -> bool:
        """Within-epoch checkpoints need a step order and a random stream that one process can replay: one
        process, and a method whose diagnostics need no state taken at the epoch's start (SimCLR's)."""
        return not self.world.distributed and self.recipe.epoch_state(self.model) is None

    def step(self, batch: torch.Tensor, labels: torch.Tensor | None = None,
             index: torch.Tensor | None = None) -> torch.Tensor:
        """One optimisation step on one batch as the sampler's iteration yields it (uint8 images
        (N, H, W, 3) on the device, or a store's decoded crops (V, N, S, S, 3)): the method's views,
        its loss (``labels``: the batch's pseudo labels for loss-side guidance; ``index``: its image
        indices, which a queue keeps), backward and the optimizer's update at the current learning
        rate. Returns the loss as a device tensor (no host synchronisation)."""
        return self.step_on_views(self.views.make(batch), labels, index)

    def step_on_views(self, views: torch.Tensor, labels: torch.Tensor | None = None,
                      index: torch.Tensor | None = None) -> torch.Tensor:
        """The model part of :meth:`step` on views already made (V, N, 3, S, S): loss, backward and the
        optimizer's update (the benchmarks time the two parts apart)."""
        with autocast(self.device, self.settings.precision):
            loss = self.loss_fn(self.train_model, views, labels, index)
        if not (isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.requires_grad):
            raise UserError(_not_a_loss(self.method, self.criterion, loss))
        self.optimizer.zero_grad(set_to_none=True)
        backward_step(loss, self.optimizer, self.scaler)
        return loss.detach()

    def schedule_position(self, epoch: int, i: int, steps: int) -> float:
        """Where step ``i`` of an epoch of ``steps`` steps falls on the schedule (in steps of
        ``steps_per_epoch`` per epoch): ``epoch * S + i`` when the epoch has S steps, else scaled."""
        per_epoch = self.steps_per_epoch
        return epoch * per_epoch + (i if steps == per_epoch else i * per_epoch / steps)

    def train_epoch(self, epoch: int) -> dict:
        """Train one epoch (0-based) and return its metrics record (also logged on rank 0)."""
        settings, device, world = self.settings, self.device, self.world
        self.train_model.train()
        self.sampler.set_epoch(epoch)
        seed_epoch(settings.seed, epoch, world.rank)
        steps = len(self.sampler)
        state = self.recipe.epoch_state(self.model) if world.is_main else None
        total = torch.zeros((), device=device)
        seen, t0, before, skip = 0, time.perf_counter(), 0.0, 0
        partial, self.partial = self.partial, None
        if partial is not None:   # continue an epoch from a checkpoint taken within it
            if int(partial["epoch"]) != epoch:
                raise UserError(f"--resume: {self.ckpt} holds a position within epoch {int(partial['epoch']) + 1}, "
                                f"not {epoch + 1}; retrain that stage")
            skip, seen, before = int(partial["steps"]), int(partial["seen"]), float(partial["seconds"])
            total = torch.tensor(float(partial["loss_sum"]), dtype=total.dtype, device=device)
        every_s = settings.checkpoint_minutes * 60 if self.log and self._mid_epoch_checkpoints() else 0.0
        last_save = t0
        bar = tqdm(self.batches(epoch, skip), desc=f"{self.method.name} epoch {epoch + 1}/{settings.epochs}",
                   unit="batch", leave=False, disable=None if world.is_main else True, initial=skip, total=steps)
        if partial is not None:
            set_random_state(partial["rng"])   # the stream as it was after the last step the checkpoint holds
        for i, (idx, batch) in enumerate(bar, start=skip):
            lr = settings.lr * self.schedule(self.schedule_position(epoch, i, steps))
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            # the indices go to the device only for a step that reads them (no copy per step for plain SimCLR)
            index = (torch.from_numpy(np.asarray(idx)).to(device, non_blocking=True)
                     if self.loss_labels is not None or self.recipe.uses_index else None)
            labels = self.loss_labels[index] if self.loss_labels is not None else None
            total += self.step(batch, labels, index) * len(idx)
            seen += len(idx)
            now = time.perf_counter()
            out_of_time = self.deadline is not None and now >= self.deadline and i + 1 < steps
            if (every_s and now - last_save >= every_s and i + 1 < steps) or (out_of_time and every_s):
                self.save(epoch, self._partial_state(epoch, i + 1, total, seen, before + now - t0))
                last_save = now
            if out_of_time and self._mid_epoch_checkpoints():
                self.stopped_within_epoch = True
                return None
        # the epoch's one host synchronisation; over every process, so all of them log and check the same mean
        loss_sum, seen = all_sum([float(total), seen], device) if world.distributed else (float(total), seen)
        mean_loss = loss_sum / max(seen, 1)
        elapsed = before + time.perf_counter() - t0
        self.train_time += elapsed
        record = {"epoch": epoch + 1, "loss": mean_loss, "lr": self.optimizer.param_groups[0]["lr"],
                  "images_per_s": seen / elapsed, "epoch_s": elapsed, "train_s": self.train_time}
        record.update(self.sampler.epoch_record())
        batches = self.sampler.epoch_batches()
        if world.is_main:
            shown = self.pseudo_labels if self.method.guided else self.diagnostic_labels
            record.update(self.recipe.pair_stats(batches, state, shown, self.classes,
                                                 settings.guidance if self.loss_labels is not None else "none"))
        if self.monitor is not None and settings.monitor_every and (epoch + 1) % settings.monitor_every == 0:
            record.update(self.monitor(self.model))
        for hook in self.epoch_hooks:
            hook(self, epoch, record)
        self._check_loss(epoch, mean_loss, [len(b) for b in batches])
        return record

    def _saved_position(self) -> tuple[int, int | None]:
        meta = read_meta(self.ckpt)
        return int(meta.get("epoch", -1)), (meta.get("partial") or {}).get("steps")

    def batches(self, epoch: int, skip: int = 0):
        """``(indices, batch)`` for each of the sampler's batches: a uint8 batch (N, H, W, 3) indexed from the
        in-memory images, or from a store, crops (V, N, S, S, 3) decoded in a background thread while the
        previous step runs; either way on the device. The first ``skip`` batches (done before a checkpoint
        taken within the epoch) are drawn from the sampler but not returned."""
        device, views = self.device, self.views
        if views.store is None:
            for i, idx in enumerate(self.sampler):
                if i < skip:
                    continue
                index = torch.from_numpy(idx).to(views.images.device, non_blocking=True)
                yield idx, host_batch(views.images, index, device)
            return
        prefetch = store_views(views.store, views.decoder, self.sampler, self.settings.seed, epoch, self.world.rank,
                               pin=device.type == "cuda")
        for i, (idx, crops) in enumerate(prefetch):
            if i >= skip:
                yield idx, crops.to(device, non_blocking=True)

    def _check_loss(self, epoch: int, mean_loss: float, batch_sizes: list[int]) -> None:
        if not np.isfinite(mean_loss):
            raise UserError(f"pretraining diverged at epoch {epoch + 1} (loss {mean_loss}); lower --lr (now "
                            f"{self.settings.lr:g}), or raise --temperature if it is tiny{self._plugin_suspects()}")
        # collapsed embeddings give exactly the chance loss; an untrained network only hovers near it
        chance = self.chance_loss(batch_sizes) if self.chance_loss is not None else None
        at_chance = chance is not None and abs(mean_loss - chance) < 1e-3
        self._at_chance = self._at_chance + 1 if at_chance else 0
        if self._at_chance == 2 and self.world.is_main:
            warnings.warn(f"{self.method.name} epoch {epoch + 1}: the loss ({mean_loss:.3f}) is at its chance level, "
                          "the embeddings have collapsed; lower --lr", stacklevel=1)

    def _plugin_suspects(self) -> str:
        """The plug-ins that compute this run's loss (its method, its --loss), for the divergence message: a
        plug-in's loss that is not finite from the first step is no learning rate's fault."""
        from gsimclr.loss import LOSSES

        loss = self.settings.loss
        suspects = [f"--method {self.method.name} ({METHODS.origins.get(self.method.name)})",
                    f"--loss {loss} ({LOSSES.origins.get(loss)})"]
        suspects = [s for s in suspects if "(plug-in " in s]
        return f"; or check that {' and '.join(suspects)} gives a finite loss" if suspects else ""

    def should_stop(self, epoch_s: float, started: float, stop_after: int | None, max_minutes: float | None) -> bool:
        """Stop this call early (with a checkpoint) after ``stop_after`` epochs of this call, or when one
        more epoch would end past ``max_minutes`` (decided on rank 0's clock for every rank)."""
        stopping = bool(stop_after) and self.done - self.start_epoch >= stop_after
        if max_minutes:
            over = time.perf_counter() - started + epoch_s > max_minutes * 60
            stopping = stopping or bool(from_main(over))
        return stopping and self.done < self.settings.epochs

    def run(self, stop_after: int | None = None, max_minutes: float | None = None) -> torch.nn.Module:
        started = time.perf_counter()
        self.stopped_within_epoch = False
        if max_minutes and self.settings.checkpoint_minutes:   # with within-epoch checkpoints, stop on time mid-epoch
            self.deadline = started + max_minutes * 60
        for epoch in range(self.start_epoch, self.settings.epochs):
            record = self.train_epoch(epoch)
            if record is None:   # stopped on time within the epoch, its position checkpointed
                break
            self.done = epoch + 1
            stopping = self.should_stop(record["epoch_s"], started, stop_after, max_minutes)
            if self.log:
                self.log.log(record)
                every = self.settings.checkpoint_every
                if (every and self.done % every == 0) or stopping:
                    self.save(self.done)
            if stopping:
                break
        self.finish()
        return self.model

    def finish(self) -> None:
        if self.log:
            if not self.stopped_within_epoch and (not self.ckpt.exists() or self._saved_position() != (self.done, None)):
                self.save(self.done)
            self.log.close()
        if self.restore_batch_norm is not None:
            self.restore_batch_norm()
        barrier()  # the other processes return once rank 0 has written its checkpoint and metrics


def build_pretrainer(cfg: Config, data: ImageData | EncodedStore, out_dir: str | Path, device: torch.device,
                     pseudo_labels: np.ndarray | None = None, resume: bool = False, method: str = "simclr",
                     monitor: tuple[ImageData, ImageData] | None = None) -> Pretrainer:
    """A :class:`Pretrainer` of ``method`` with every part built from ``cfg``: the method's own (model,
    views, criterion, step) from its recipe after its option checks, then the optimizer, sampler,
    schedule, logger and, for ``--pseudo-labels encoder``, the re-clustering."""
    entry = METHODS.get(method)
    recipe = entry.parts()
    recipe.validate(cfg, len(data))        # the options as given (its errors name them), then the data's defaults
    cfg = recipe.resolve(cfg, len(data))
    world = current_world()
    reclustering = None
    if entry.guided and parse_source(cfg.pseudo_labels)[0] == "encoder":
        reclustering = EncoderReclustering.from_config(cfg, len(data))
    out_dir = Path(out_dir)
    seed_everything(cfg.seed)
    # channels_last: faster on GPUs, and 1.75x faster on this 2-core CPU too (paper ResNet, batch 256, 32 px)
    model = recipe.build_model(cfg).to(device, memory_format=torch.channels_last)
    check_step_memory(cfg, model, recipe.n_views(cfg), device, world.size)
    optimizer = build_optimizer(cfg.optimizer, model, cfg.lr, cfg.momentum, cfg.weight_decay)
    scaler = grad_scaler(device, cfg.precision)  # enabled for fp16 only
    init_report = None
    if cfg.init and not (resume and (out_dir / CHECKPOINT).exists()):  # a resumed run continues from its own weights
        from gsimclr.models.weights import load_init_weights

        init_report = load_init_weights(model.backbone, cfg.init)
    guided_labels = pseudo_labels if entry.guided and reclustering is None else None

    def sampler_for(labels: np.ndarray | None):
        return make_sampler(cfg, len(data), labels, world)

    sampler = sampler_for(guided_labels)
    steps_per_epoch = len(sampler)
    schedule = lr_multiplier(cfg.schedule, cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch),
                             cfg.restart_steps or round(cfg.restart_epochs * steps_per_epoch),
                             cfg.restart_t_mul, cfg.restart_m_mul, cfg.decay_steps)
    views = ViewSource.from_config(cfg, data, device, recipe.n_views(cfg))
    criterion = recipe.build_criterion(cfg, model)
    loss_fn = recipe.make_loss_fn(cfg, criterion)
    if recipe.compile_loss:
        loss_fn = maybe_compile(loss_fn, device, cfg.compile)
    logger = RunLogger(out_dir, tensorboard=True, resume=resume,
                       wandb=wandb_options(cfg, out_dir, entry.name)) if world.is_main else None
    meta = {"method": entry.name, "config": cfg.to_dict(), "fingerprint": data.fingerprint, "data": content_id(data), "images": len(data),
            "init": cfg.init}
    return Pretrainer(method=entry, model=model, optimizer=optimizer, views=views, sampler=sampler,
                      sampler_for=sampler_for, criterion=criterion, loss_fn=loss_fn, schedule=schedule,
                      steps_per_epoch=steps_per_epoch, settings=TrainSettings.from_config(cfg), data=data,
                      out_dir=out_dir, device=device, logger=logger, checkpoint_meta=meta, scaler=scaler,
                      pseudo_labels=pseudo_labels, resume=resume, reclustering=reclustering,
                      monitor=KnnMonitor(cfg, *monitor, device) if monitor is not None else None,
                      chance_loss=lambda sizes: recipe.chance_loss(cfg, sizes), init_report=init_report)


def _not_a_loss(method, criterion, loss) -> str:
    """The one line for a training step whose loss cannot be trained on (a plug-in's loss or method that
    returns a vector, a number or a detached tensor): what it returned and what it must return."""
    source = (f"the loss of {method.title} ({type(criterion).__name__})" if criterion is not None
              else f"the training step of {method.title}")
    if isinstance(loss, torch.Tensor) and loss.dim() == 0:
        return (f"{source} returned a tensor that does not depend on the model's parameters (detached?): compute "
                "the loss from the embeddings it is given")
    what = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else f"{type(loss).__name__} {loss!r:.40}"
    return f"{source} returned {what}, not a scalar tensor: reduce it to one number (e.g. .mean())"


def check_step_memory(cfg: Config, model: torch.nn.Module, n_views: int, device: torch.device, processes: int = 1) -> None:
    """A UserError before any work when one step's views (each process's share of the batch) and the
    network's activations for them would need more than the device's memory (a GPU's, else this
    machine's): :func:`gsimclr.methods.views.check_views_memory`."""
    memory, where = None, "this machine's"
    if device.type == "cuda":
        memory, where = torch.cuda.get_device_properties(device).total_memory, f"the GPU's ({device})"
    check_views_memory(n_views, max(cfg.batch_size // processes, 1), cfg.image_size, memory, where,
                       activations=activation_values(model, cfg.image_size, device))


def pretrain(cfg: Config, data: ImageData, out_dir: str | Path, pseudo_labels: np.ndarray | None = None,
             resume: bool = False, method: str = "simclr", stop_after: int | None = None,
             max_minutes: float | None = None, monitor: tuple[ImageData, ImageData] | None = None,
             device: torch.device | None = None) -> torch.nn.Module:
    """Train a model with ``method`` (a :data:`gsimclr.methods.METHODS` name) on ``data``; a guided
    method (G-SimCLR, G-MoCo) uses ``pseudo_labels`` for its batches (``cfg.sampler``) and loss
    (``cfg.guidance``), or, with ``cfg.pseudo_labels == "encoder"``, clusters its own features during
    training. Writes checkpoints and metrics to ``out_dir``.

    ``stop_after`` ends this call after that many epochs with a checkpoint, so a long run can be cut
    into parts that ``resume=True`` continues to the same result as an uninterrupted run.
    ``max_minutes`` does the same by time: it stops after the last epoch that is expected to end
    within that many minutes of the start of this call. ``monitor`` (labelled train and test data)
    logs the weighted kNN accuracy every ``cfg.monitor_every`` epochs, with the training time so far."""
    if device is None:
        device = resolve_device(world_device(cfg.device, current_world()))
    trainer = build_pretrainer(cfg, data, out_dir, device, pseudo_labels, resume, method, monitor)
    return trainer.run(stop_after, max_minutes)
