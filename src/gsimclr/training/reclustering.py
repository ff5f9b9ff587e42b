"""Encoder pseudo labels during pretraining (``--pseudo-labels encoder``): a part the trainer receives,
built from the config by :meth:`EncoderReclustering.from_config`.

After ``--recluster-warmup`` epochs and then every ``--recluster-every`` epochs (not after the last),
rank 0 clusters the encoder's features (inputs normalised as in training, ``--normalize``; k-means
with ``--kmeans-n-init`` starts) while the other ranks wait on the long-timeout barrier of
:func:`gsimclr.distributed.wait_for_main` (an ImageNet-scale k-means outlasts NCCL's collective
timeout), then every rank receives the labels. They are saved in the stage folder and used from the
next epoch on; resuming reads the labels the checkpoint trained with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

from gsimclr.distributed import current_world, from_main, wait_for_main
from gsimclr.errors import UserError
from gsimclr.guidance.recluster import ReclusterSchedule
from gsimclr.guidance.sources import check_k, encoder_pseudo_labels, load_pseudo_labels, save_pseudo_labels
from gsimclr.run_folder import CHECKPOINT_PSEUDO_LABELS

if TYPE_CHECKING:
    import torch

    from gsimclr.data.dataset import ImageData
    from gsimclr.data.store import EncodedStore


class Trainer(Protocol):
    """What re-clustering reads of the trainer it is a part of (a
    :class:`~gsimclr.training.pretrain.Pretrainer`): the model, its data, device and stage folder, the
    epoch this call started at, and a way to hand it new pseudo labels."""

    model: torch.nn.Module
    data: ImageData | EncodedStore
    device: torch.device
    out_dir: Path
    start_epoch: int

    def set_pseudo_labels(self, labels: np.ndarray | None) -> None: ...


def from_main_after(compute: Callable[[], Any]) -> Any:
    """Rank 0's ``compute()`` on every rank: rank 0 computes while the others wait on the long-timeout
    barrier (:func:`gsimclr.distributed.wait_for_main`), then the result is broadcast (which no longer
    waits). In a single process, just ``compute()``."""
    world = current_world()
    if not world.distributed:
        return compute()
    result = compute() if world.is_main else None
    wait_for_main()
    return from_main(result)


def check_reclustering(cfg, n: int) -> None:
    """UserError, before any training, when ``--pseudo-labels encoder`` cannot work on ``n`` images:
    more clusters than images, or a warm-up that no clustering follows (none follows the last epoch),
    which would silently train G-SimCLR as SimCLR."""
    check_k(cfg.n_clusters, n)
    if cfg.recluster_warmup >= cfg.epochs:
        raise UserError(f"--recluster-warmup {cfg.recluster_warmup} is not shorter than --epochs {cfg.epochs}: "
                        "the encoder would never be clustered and G-SimCLR would train as SimCLR")


@dataclass(frozen=True)
class EncoderReclustering:
    schedule: ReclusterSchedule
    epochs: int
    k: int
    image_size: int
    precision: str
    seed: int
    normalize: str
    n_init: int

    @classmethod
    def from_config(cls, cfg, n: int) -> "EncoderReclustering":
        check_reclustering(cfg, n)
        return cls(ReclusterSchedule(cfg.recluster_every, cfg.recluster_warmup), cfg.epochs, cfg.n_clusters,
                   cfg.image_size, cfg.precision, cfg.seed, cfg.normalize, cfg.kmeans_n_init)

    def cluster(self, trainer: Trainer, epochs_done: int) -> dict:
        """New pseudo labels from the encoder (rank 0 computes, every rank receives them), saved in the
        stage folder and used; returns their description (k, sizes, NMI/ARI)."""
        def compute():
            result = encoder_pseudo_labels(trainer.model, trainer.data, self.k, self.image_size, trainer.device,
                                           self.precision, self.seed, normalize=self.normalize, n_init=self.n_init)
            result.metrics["epoch"] = epochs_done
            save_pseudo_labels(trainer.out_dir, result)
            return result.labels, result.metrics

        labels, metrics = from_main_after(compute)
        trainer.set_pseudo_labels(labels)
        return metrics

    def restore(self, trainer: Trainer) -> None:
        """At the start of a call: new labels when a clustering is due now, else (resuming) the saved ones."""
        start = trainer.start_epoch
        if start < self.epochs and self.schedule.due(start):
            self.cluster(trainer, start)
        elif self.schedule.last_refresh(start) is not None:
            trainer.set_pseudo_labels(self._checkpoint_labels(trainer, self.schedule.last_refresh(start)))

    def after_epoch(self, trainer: Trainer, epoch: int, record: dict) -> None:
        """Epoch hook: re-cluster when the schedule says so (not after the last epoch)."""
        done = epoch + 1
        if done < self.epochs and self.schedule.due(done):
            metrics = self.cluster(trainer, done)
            record["reclustered"] = 1
            record.update({f"pseudo_{key}": metrics[key] for key in ("nmi", "ari") if key in metrics})

    @staticmethod
    def _checkpoint_labels(trainer: Trainer, refresh: int) -> np.ndarray:
        """The labels the checkpoint trained with, those of the re-clustering after epoch ``refresh``:
        saved beside the checkpoint, since pseudo_labels.npy may hold a later re-clustering's (a run
        killed after one that was not checkpointed, with --checkpoint-every > 1)."""
        path = trainer.out_dir / CHECKPOINT_PSEUDO_LABELS
        if path.is_file():
            return load_pseudo_labels(path, len(trainer.data))
        meta = trainer.out_dir / "pseudo_labels.json"
        saved = json.loads(meta.read_text()).get("epoch") if meta.is_file() else None
        if saved != refresh:                      # a run folder from before CHECKPOINT_PSEUDO_LABELS
            raise UserError(f"--resume: the checkpoint trained with the pseudo labels of epoch {refresh}, but "
                            f"{trainer.out_dir / 'pseudo_labels.npy'} holds those of epoch {saved}; start the run anew")
        return load_pseudo_labels(trainer.out_dir / "pseudo_labels.npy", len(trainer.data))
