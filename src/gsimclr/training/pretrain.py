"""Contrastive pretraining (SimCLR and G-SimCLR) with no framework in the way.

The dataset lives on the device as one uint8 tensor (pinned host memory when it does not fit);
every step indexes a batch, augments it on the device (two random views, per-sample parameters),
runs one forward pass over both views and the NT-Xent loss. Nothing in the step waits for the host:
the epoch's loss is summed on the device and read once per epoch.

Example:
    >>> from gsimclr.config import load_config
    >>> from gsimclr.data.sources import load_split
    >>> cfg = load_config("digits-quick", {"epochs": 1, "device": "cpu"})  # doctest: +SKIP
    >>> model = pretrain(cfg, load_split("digits"), "runs/example/simclr")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gsimclr.checkpoint import load_checkpoint, read_meta, save_checkpoint
from gsimclr.config import Config
from gsimclr.data.dataset import ImageData
from gsimclr.data.decode import BatchDecoder, default_backend
from gsimclr.data.store import EncodedStore
from gsimclr.data.store_batches import store_views
from gsimclr.distributed import (World, all_sum, barrier, convert_sync_batch_norm, current_world, from_main,
                                 same_on_all_ranks, world_device)
from gsimclr.errors import UserError
from gsimclr.loss import build_criterion
from gsimclr.methods import METHODS
from gsimclr.models.simclr import SimCLRModel
from gsimclr.guidance.diagnostics import epoch_pair_stats
from gsimclr.guidance.recluster import ReclusterSchedule
from gsimclr.guidance.samplers import GreedyBatchSampler, RandomBatchSampler, make_batch_sampler
from gsimclr.guidance.sources import (check_k, encoder_pseudo_labels, load_pseudo_labels, parse_source,
                                      save_pseudo_labels)
from gsimclr.io import save_npy
from gsimclr.run_folder import CHECKPOINT, CHECKPOINT_PSEUDO_LABELS  # the stage folder's checkpoint name (re-exported here)
from gsimclr.runtime import (autocast, backward_step, grad_scaler, maybe_compile, resolve_device, restore_scaler,
                             scaler_state, seed_epoch, seed_everything)
from gsimclr.tracking import RunLogger, WandbOptions
from gsimclr.training.optim import build_optimizer, lr_multiplier
from gsimclr.training.views import VIEW_FORWARDS
from gsimclr.transforms.augment import NORMALIZATIONS, build_augment


def backbone_options(cfg: Config) -> dict:
    """What :func:`gsimclr.models.create_backbone` needs from a config (each backbone takes what it uses)."""
    return {"n_blocks": cfg.n_blocks, "image_size": cfg.image_size, "patch_size": cfg.patch_size,
            "shortcut_bn": cfg.shortcut_bn, "downsample_in_1x1": cfg.downsample_in_1x1, "defaults": cfg.defaults}


def build_backbone(cfg: Config):
    from gsimclr.models.registry import create_backbone

    return create_backbone(cfg.model, **backbone_options(cfg))


def build_model(cfg: Config) -> SimCLRModel:
    return SimCLRModel.build(cfg.model, cfg.head_dims, cfg.head_batch_norm, **backbone_options(cfg))


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


def make_views_fn(cfg: Config, device: torch.device):
    """``views(batch)``: two augmented views (2, N, 3, S, S) of a uint8 batch (N, H, W, 3). On a GPU it
    is compiled (about 1,200 small operations per batch fused into a few kernels); its randomness comes
    from the global stream that :func:`gsimclr.runtime.seed_epoch` seeds every epoch."""
    augment = build_pretrain_augment(cfg)
    return maybe_compile(lambda batch: augment.views(batch, 2), device, cfg.compile)


def make_store_views_fn(cfg: Config, device: torch.device):
    """``(decoder, views)`` for data in an encoded store: the decoder runs the recipe's crop stage on a
    batch's JPEG bytes (uint8 crops (V, N, S, S, 3), random resized crops drawn on each image's own
    aspect ratio, or one centred square per image for a recipe without crops); ``views(crops)`` runs the
    rest of the recipe batched on the device and gives (2, N, 3, S, S)."""
    augment = build_pretrain_augment(cfg)
    decoder = BatchDecoder.for_recipe(augment, views=2, backend=default_backend(device))
    return decoder, maybe_compile(lambda crops: augment.views_from_crops(crops, 2), device, cfg.compile)


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


def check_reclustering(cfg: Config, n: int) -> None:
    """UserError, before any training, when ``--pseudo-labels encoder`` cannot work on ``n`` images:
    more clusters than images, or a warm-up that no clustering follows (none follows the last epoch),
    which would silently train G-SimCLR as SimCLR."""
    check_k(cfg.n_clusters, n)
    if cfg.recluster_warmup >= cfg.epochs:
        raise UserError(f"--recluster-warmup {cfg.recluster_warmup} is not shorter than --epochs {cfg.epochs}: "
                        "the encoder would never be clustered and G-SimCLR would train as SimCLR")


def make_sampler(cfg: Config, n: int, pseudo_labels: np.ndarray | None, world: World):
    """The configured sampler (``--sampler``) over the pseudo labels; plain shuffling without them
    (SimCLR, or G-SimCLR with encoder pseudo labels before the first clustering), as tf.data's buffer
    shuffle with ``--shuffle-buffer`` and the first epoch's order every epoch with ``--reshuffle false``;
    ``--drop-last`` skips short last batches."""
    options = {"tail": cfg.sampler_tail} if cfg.sampler == "greedy" else {}
    try:
        if pseudo_labels is None or cfg.sampler == "random":
            return RandomBatchSampler(n, cfg.batch_size, cfg.seed, world.rank, world.size, cfg.drop_last,
                                      cfg.reshuffle, cfg.shuffle_buffer)
        sampler = make_batch_sampler(cfg.sampler, n, cfg.batch_size, pseudo_labels, cfg.seed, world.rank, world.size,
                                     drop_last=cfg.drop_last, **options)
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


def make_loss_fn(criterion, views_forward: str = "joint"):
    """``loss_fn(model, views, labels)``: the views (V, N, C, H, W) through the model, by default in one
    forward pass stacked into one batch (``views_forward``, :data:`gsimclr.training.views.VIEW_FORWARDS`),
    then the criterion (built once, :func:`gsimclr.loss.build_criterion`) on (V, N, D)."""
    forward = VIEW_FORWARDS[views_forward]

    def contrastive_loss(model, views: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return criterion(forward(model, views), pseudo_labels=labels)

    return contrastive_loss


def train_step(model, optimizer: torch.optim.Optimizer, loss_fn, views: torch.Tensor, cfg: Config,
               device: torch.device, labels: torch.Tensor | None = None, scaler=None) -> torch.Tensor:
    """One optimisation step on prepared views; returns the loss as a device tensor (no host sync).
    ``scaler`` (:func:`gsimclr.runtime.grad_scaler`) scales the fp16 gradients; None or disabled: none."""
    with autocast(device, cfg.precision):
        loss = loss_fn(model, views, labels)
    optimizer.zero_grad(set_to_none=True)
    backward_step(loss, optimizer, scaler)
    return loss.detach()


def chance_loss(batch_size: int, n: int) -> float:
    """NT-Xent of collapsed (all equal) embeddings with two views, averaged over an epoch's batches."""
    full, rest = divmod(n, batch_size)
    sizes = [batch_size] * full + ([rest] if rest else [])
    return sum(b * np.log(max(2 * b - 1, 1)) for b in sizes) / n


def monitor_knn(cfg: Config, model: SimCLRModel, train: ImageData, test: ImageData, device: torch.device) -> float:
    """Weighted kNN top-1 (%) on backbone features: the community's quick monitor."""
    from gsimclr.evaluation.features import extract_features
    from gsimclr.evaluation.knn import knn_accuracy

    mean, std = NORMALIZATIONS[cfg.normalize]
    ftrain = extract_features(model, train, cfg.image_size, device, precision=cfg.precision, mean=mean, std=std)["P3"]
    ftest = extract_features(model, test, cfg.image_size, device, precision=cfg.precision, mean=mean, std=std)["P3"]
    return knn_accuracy(ftrain, torch.from_numpy(train.labels), ftest, torch.from_numpy(test.labels),
                        cfg.knn_k, cfg.knn_temperature, device)


class Pretrainer:
    """One pretraining run in three parts: set-up (``__init__``: model, optimizer, resume, sampler,
    schedule, views, criterion, logger), one epoch (:meth:`train_epoch` -> its metrics record) and the
    stopping policy (:meth:`should_stop`); :meth:`run` strings them together and :meth:`finish` writes
    the final checkpoint. Extensions hook in at these seams: ``self.sampler`` (which batches),
    ``self.loss_labels`` (the per-image labels the criterion sees), ``epoch_hooks`` (functions
    ``hook(trainer, epoch, record)`` called after every epoch, e.g. to re-cluster or log diagnostics).

    Guidance: a guided method batches by its pseudo labels (``--sampler``) and hands them to the loss
    (``--guidance``); :meth:`set_pseudo_labels` swaps them, which re-clustering (``--pseudo-labels
    encoder``, :meth:`recluster`) does after ``--recluster-warmup`` epochs and then every
    ``--recluster-every`` epochs. Every epoch's record carries the false-negative diagnostics of
    :func:`gsimclr.guidance.diagnostics.epoch_pair_stats` for the batches it trained on (from the
    sampler's index arrays on the host; the training labels serve these diagnostics only). An
    unguided method (SimCLR) reports the same-pseudo-label pairs of its batches when given pseudo labels.

    ``device`` is resolved once by the caller and passed down."""

    def __init__(self, cfg: Config, data: ImageData, out_dir: str | Path, device: torch.device,
                 pseudo_labels: np.ndarray | None = None, resume: bool = False, method: str = "simclr",
                 monitor: tuple[ImageData, ImageData] | None = None):
        self.cfg, self.data, self.out_dir, self.device = cfg, data, Path(out_dir), device
        self.method = METHODS.get(method)
        self.world = world = current_world()
        self.monitor = monitor
        self.pseudo_labels = pseudo_labels if self.method.guided else None
        self.diagnostic_labels = pseudo_labels         # shown, never used, by an unguided method
        self.classes = data.labels if data.has_labels else None
        self.epoch_hooks: list = []
        self.reclustering = None
        if self.method.guided and parse_source(cfg.pseudo_labels)[0] == "encoder":
            self.reclustering = ReclusterSchedule(cfg.recluster_every, cfg.recluster_warmup)
            check_reclustering(cfg, len(data))
            self.pseudo_labels = None
            self.epoch_hooks.append(_recluster_after_epoch)
        seed_everything(cfg.seed)
        # channels_last: faster on GPUs, and 1.75x faster on this 2-core CPU too (paper ResNet, batch 256, 32 px)
        self.model = build_model(cfg).to(device, memory_format=torch.channels_last)
        self.optimizer = build_optimizer(cfg.optimizer, self.model, cfg.lr, cfg.momentum, cfg.weight_decay)
        self.scaler = grad_scaler(device, cfg.precision)  # enabled for fp16 only
        self.ckpt = self.out_dir / CHECKPOINT
        self.start_epoch = self._resume() if resume else 0
        self.init_report = None
        if cfg.init and not (resume and self.ckpt.exists()):  # a resumed run continues from its own weights
            from gsimclr.models.weights import load_init_weights

            self.init_report = load_init_weights(self.model.backbone, cfg.init)
        if not same_on_all_ranks(self.start_epoch, device):
            raise UserError(f"--resume: the processes found different checkpoints in {self.out_dir}; "
                            "the run folder must be on a file system shared by every node")
        self.train_model, self.restore_batch_norm = self.model, None
        if world.distributed:
            # Checkpoints hold `model`, never the DDP wrapper, so their keys have no "module." prefix and
            # they resume with any number of processes. SyncBatchNorm needs GPUs (torch raises on CPU tensors).
            if cfg.sync_batch_norm and device.type == "cuda":
                self.restore_batch_norm = convert_sync_batch_norm(self.model)
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.sampler = make_sampler(cfg, len(data), self.pseudo_labels, world)
        self.steps_per_epoch = len(self.sampler)
        self.schedule = lr_multiplier(cfg.schedule, cfg.epochs * self.steps_per_epoch,
                                      round(cfg.warmup_epochs * self.steps_per_epoch),
                                      cfg.restart_steps or round(cfg.restart_epochs * self.steps_per_epoch),
                                      cfg.restart_t_mul, cfg.restart_m_mul, cfg.decay_steps)
        self.store = data if isinstance(data, EncodedStore) else None
        if self.store is None:
            self.make_views = make_views_fn(cfg, device)
            self.images = place_images(data.images, device)
        else:
            self.decoder, self.make_views = make_store_views_fn(cfg, device)
            self.images = None
        self.loss_labels = None
        self.set_pseudo_labels(self.pseudo_labels)
        if self.reclustering is not None:
            self._restore_pseudo_labels()
        self.criterion = build_criterion(cfg)
        self.loss_fn = maybe_compile(make_loss_fn(self.criterion, cfg.views_forward), device, cfg.compile)
        self.log = RunLogger(self.out_dir, tensorboard=world.is_main, resume=resume,
                             wandb=wandb_options(cfg, self.out_dir, self.method.name)) if world.is_main else None
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
            self.sampler = make_sampler(self.cfg, len(self.data), labels, self.world)
        self.pseudo_labels = labels
        if self.cfg.guidance != "none":
            self.loss_labels = torch.from_numpy(labels).to(self.device)

    def recluster(self, epochs_done: int) -> dict:
        """Cluster the encoder's features into new pseudo labels (rank 0 computes, every rank receives
        them), save them in the stage folder and use them; returns their description (k, sizes, NMI/ARI)."""
        labels = metrics = None
        if self.world.is_main:
            result = encoder_pseudo_labels(self.model, self.data, self.cfg.n_clusters, self.cfg.image_size, self.device,
                                           self.cfg.precision, self.cfg.seed)
            result.metrics["epoch"] = epochs_done
            save_pseudo_labels(self.out_dir, result)
            labels, metrics = result.labels, result.metrics
        labels, metrics = from_main((labels, metrics))
        self.set_pseudo_labels(labels)
        return metrics

    def _restore_pseudo_labels(self) -> None:
        """At the start of a call: new labels when a clustering is due now, else (resuming) the saved ones."""
        schedule, start = self.reclustering, self.start_epoch
        if start < self.cfg.epochs and schedule.due(start):
            self.recluster(start)
        elif schedule.last_refresh(start) is not None:
            self.set_pseudo_labels(self._checkpoint_pseudo_labels(schedule.last_refresh(start)))

    def _checkpoint_pseudo_labels(self, refresh: int) -> np.ndarray:
        """The labels the checkpoint trained with, those of the re-clustering after epoch ``refresh``:
        saved beside the checkpoint, since pseudo_labels.npy may hold a later re-clustering's (a run
        killed after one that was not checkpointed, with --checkpoint-every > 1)."""
        path = self.out_dir / CHECKPOINT_PSEUDO_LABELS
        if path.is_file():
            return load_pseudo_labels(path, len(self.data))
        meta = self.out_dir / "pseudo_labels.json"
        saved = json.loads(meta.read_text()).get("epoch") if meta.is_file() else None
        if saved != refresh:                      # a run folder from before CHECKPOINT_PSEUDO_LABELS
            raise UserError(f"--resume: the checkpoint trained with the pseudo labels of epoch {refresh}, but "
                            f"{self.out_dir / 'pseudo_labels.npy'} holds those of epoch {saved}; start the run anew")
        return load_pseudo_labels(self.out_dir / "pseudo_labels.npy", len(self.data))

    def _resume(self) -> int:
        if not self.ckpt.exists():
            return 0
        meta = read_meta(self.ckpt)
        if meta.get("fingerprint") not in (None, self.data.fingerprint):
            raise UserError(f"--resume: {self.ckpt} was trained on other data ({meta.get('fingerprint')})")
        meta = load_checkpoint(self.ckpt, self.model, self.optimizer)
        restore_scaler(self.scaler, meta.get("grad_scaler"))
        return int(meta["epoch"])

    def save(self, epoch: int) -> None:
        if self.reclustering is not None and self.pseudo_labels is not None:   # written first: resuming reads both
            save_npy(self.out_dir / CHECKPOINT_PSEUDO_LABELS, self.pseudo_labels)
        save_checkpoint(self.ckpt, self.model, self.optimizer,
                        {"epoch": epoch, "method": self.method.name, "config": self.cfg.to_dict(),
                         "fingerprint": self.data.fingerprint, "images": len(self.data),
                         "grad_scaler": scaler_state(self.scaler), "init": self.cfg.init})

    def train_epoch(self, epoch: int) -> dict:
        """Train one epoch (0-based) and return its metrics record (also logged on rank 0)."""
        cfg, device, world = self.cfg, self.device, self.world
        self.train_model.train()
        self.sampler.set_epoch(epoch)
        seed_epoch(cfg.seed, epoch, world.rank)
        total = torch.zeros((), device=device)
        seen, t0 = 0, time.perf_counter()
        bar = tqdm(self._batches(epoch), desc=f"{self.method.name} epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   leave=False, disable=None if world.is_main else True)
        for i, (idx, batch) in enumerate(bar):
            step = epoch * self.steps_per_epoch + i
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.lr * self.schedule(step)
            labels = None
            if self.loss_labels is not None:
                labels = self.loss_labels[torch.from_numpy(np.asarray(idx)).to(device, non_blocking=True)]
            total += train_step(self.train_model, self.optimizer, self.loss_fn, self.make_views(batch), cfg, device,
                                labels, self.scaler) * len(idx)
            seen += len(idx)
        # the epoch's one host synchronisation; over every process, so all of them log and check the same mean
        loss_sum, seen = all_sum([float(total), seen], device) if world.distributed else (float(total), seen)
        mean_loss = loss_sum / max(seen, 1)
        elapsed = time.perf_counter() - t0
        self.train_time += elapsed
        record = {"epoch": epoch + 1, "loss": mean_loss, "lr": self.optimizer.param_groups[0]["lr"],
                  "images_per_s": seen / elapsed, "epoch_s": elapsed, "train_s": self.train_time}
        if isinstance(self.sampler, GreedyBatchSampler):
            record["relaxed_images"] = self.sampler.relaxed_images
        if world.is_main:
            shown = self.pseudo_labels if self.method.guided else self.diagnostic_labels
            record.update(epoch_pair_stats(self.sampler.epoch_batches(), shown, self.classes,
                                           self.cfg.guidance if self.loss_labels is not None else "none"))
        if self.monitor is not None and cfg.monitor_every and (epoch + 1) % cfg.monitor_every == 0:
            record["knn"] = monitor_knn(cfg, self.model, *self.monitor, device)
            record["knn_k"] = min(cfg.knn_k, len(self.monitor[0]))  # the vote a smaller monitor set allows
        for hook in self.epoch_hooks:
            hook(self, epoch, record)
        self._check_loss(epoch, mean_loss)
        return record

    def _batches(self, epoch: int):
        """``(indices, batch)`` for each of the sampler's batches: a uint8 batch (N, H, W, 3) indexed from the
        in-memory images, or from a store, crops (V, N, S, S, 3) decoded in a background thread while the
        previous step runs; either way on the device."""
        device = self.device
        if self.store is None:
            for idx in self.sampler:
                index = torch.from_numpy(idx).to(self.images.device, non_blocking=True)
                yield idx, host_batch(self.images, index, device)
            return
        prefetch = store_views(self.store, self.decoder, self.sampler, self.cfg.seed, epoch, self.world.rank,
                               pin=device.type == "cuda")
        for idx, crops in prefetch:
            yield idx, crops.to(device, non_blocking=True)

    def _check_loss(self, epoch: int, mean_loss: float) -> None:
        if not np.isfinite(mean_loss):
            raise UserError(f"pretraining diverged at epoch {epoch + 1} (loss {mean_loss}); lower --lr")
        # collapsed embeddings give exactly the chance loss; an untrained network only hovers near it
        at_chance = abs(mean_loss - chance_loss(self.cfg.batch_size, len(self.data))) < 1e-3
        self._at_chance = self._at_chance + 1 if at_chance else 0
        if self._at_chance == 2 and self.world.is_main:
            warnings.warn(f"{self.method.name} epoch {epoch + 1}: the loss ({mean_loss:.3f}) is at its chance level, "
                          "the embeddings have collapsed; lower --lr", stacklevel=1)

    def should_stop(self, epoch_s: float, started: float, stop_after: int | None, max_minutes: float | None) -> bool:
        """Stop this call early (with a checkpoint) after ``stop_after`` epochs of this call, or when one
        more epoch would end past ``max_minutes`` (decided on rank 0's clock for every rank)."""
        stopping = bool(stop_after) and self.done - self.start_epoch >= stop_after
        if max_minutes:
            over = time.perf_counter() - started + epoch_s > max_minutes * 60
            stopping = stopping or bool(from_main(over))
        return stopping and self.done < self.cfg.epochs

    def run(self, stop_after: int | None = None, max_minutes: float | None = None) -> SimCLRModel:
        started = time.perf_counter()
        for epoch in range(self.start_epoch, self.cfg.epochs):
            record = self.train_epoch(epoch)
            self.done = epoch + 1
            stopping = self.should_stop(record["epoch_s"], started, stop_after, max_minutes)
            if self.log:
                self.log.log(record)
                if (self.cfg.checkpoint_every and self.done % self.cfg.checkpoint_every == 0) or stopping:
                    self.save(self.done)
            if stopping:
                break
        self.finish()
        return self.model

    def finish(self) -> None:
        if self.log:
            if not self.ckpt.exists() or int(read_meta(self.ckpt).get("epoch", -1)) != self.done:
                self.save(self.done)
            self.log.close()
        if self.restore_batch_norm is not None:
            self.restore_batch_norm()
        barrier()  # the other processes return once rank 0 has written its checkpoint and metrics


def _recluster_after_epoch(trainer: Pretrainer, epoch: int, record: dict) -> None:
    """Epoch hook of encoder pseudo labels: re-cluster when the schedule says so (not after the last epoch)."""
    done = epoch + 1
    if done < trainer.cfg.epochs and trainer.reclustering.due(done):
        metrics = trainer.recluster(done)
        record["reclustered"] = 1
        record.update({f"pseudo_{key}": metrics[key] for key in ("nmi", "ari") if key in metrics})


def pretrain(cfg: Config, data: ImageData, out_dir: str | Path, pseudo_labels: np.ndarray | None = None,
             resume: bool = False, method: str = "simclr", stop_after: int | None = None,
             max_minutes: float | None = None, monitor: tuple[ImageData, ImageData] | None = None,
             device: torch.device | None = None) -> SimCLRModel:
    """Train a model with ``method`` (a :data:`gsimclr.methods.METHODS` name) on ``data``; a guided
    method (G-SimCLR) uses ``pseudo_labels`` for its batches (``cfg.sampler``) and loss (``cfg.guidance``),
    or, with ``cfg.pseudo_labels == "encoder"``, clusters its own features during training.
    Writes checkpoints and metrics to ``out_dir``.

    ``stop_after`` ends this call after that many epochs with a checkpoint, so a long run can be cut
    into parts that ``resume=True`` continues to the same result as an uninterrupted run.
    ``max_minutes`` does the same by time: it stops after the last epoch that is expected to end
    within that many minutes of the start of this call. ``monitor`` (labelled train and test data)
    logs the weighted kNN accuracy every ``cfg.monitor_every`` epochs, with the training time so far."""
    if device is None:
        device = resolve_device(world_device(cfg.device, current_world()))
    trainer = Pretrainer(cfg, data, out_dir, device, pseudo_labels, resume, method, monitor)
    return trainer.run(stop_after, max_minutes)
