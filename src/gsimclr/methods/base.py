"""What a pretraining method builds: :class:`Recipe`, the parts a :class:`gsimclr.methods.Method`
entry stands for. The trainer (:class:`gsimclr.training.pretrain.Pretrainer`) receives these parts
built and never asks which method it runs.

A recipe builds, from the config:

- :meth:`~Recipe.build_model`: the network (a backbone, a head and any extra encoder) with
  ``backbone``, ``head``, ``features(x)`` (P1/P2/P3 for evaluation) and ``forward(x)``;
- :meth:`~Recipe.n_views`: how many augmented views of each image a step sees;
- :meth:`~Recipe.build_criterion`: the loss, built once (as lightly's loss modules);
- :meth:`~Recipe.make_loss_fn`: the training step's loss, ``loss_fn(model, views, labels, index)``
  with the views (V, N, C, H, W), the batch's pseudo labels (N,) or None, and its image indices (N,);
- :meth:`~Recipe.check`: the option checks, before any work (a UserError), and :meth:`~Recipe.resolve`,
  the defaults that depend on the data;
- :meth:`~Recipe.chance_loss`: the loss of collapsed embeddings (None: no collapse check);
- :meth:`~Recipe.pair_stats`: the epoch's false-negative diagnostics (same-class pairs among the
  negatives of the loss), from the state :meth:`~Recipe.epoch_state` took at the epoch's start;
- :meth:`~Recipe.relabel`: what the model keeps of the pseudo labels, when they change.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from gsimclr.guidance.diagnostics import epoch_pair_stats
from gsimclr.methods import check_method_images, check_method_options


class Recipe:
    """The parts of one method (the defaults: SimCLR's, except the model and criterion)."""

    compile_loss = True   # whether the step's loss may be compiled (torch.compile, --compile)
    uses_index = False    # whether the step's loss reads the batch's image indices (else it gets None)

    def __init__(self, method):
        self.method = method

    # ------------------------------------------------------------------ building
    def check(self, cfg, n_images: int) -> None:
        """UserError when the options cannot train this method on ``n_images`` images (the hook; the
        rules that need no data are the entry's ``requires``)."""

    def validate(self, cfg, n_images: int) -> None:
        """Every check, as the trainer and the pipeline run it on the options as given (before
        :meth:`resolve`): the entry's ``requires`` (:func:`gsimclr.methods.check_method_options`, which
        the command line runs before any data is read), its ``fits``
        (:func:`gsimclr.methods.check_method_images`, which the command line also runs on
        ``--train-limit``), then :meth:`check`."""
        check_method_options(cfg, self.method.name)
        check_method_images(cfg, self.method.name, n_images)
        self.check(cfg, n_images)

    def resolve(self, cfg, n_images: int):
        """The config with the defaults that depend on the data filled in (it is what the checkpoint
        records and :meth:`build_model` reads)."""
        return cfg

    def n_views(self, cfg) -> int:
        return 2

    def build_model(self, cfg) -> nn.Module:
        raise NotImplementedError

    def build_criterion(self, cfg, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def make_loss_fn(self, cfg, criterion):
        """``loss_fn(model, views, labels, index)`` -> the step's loss (a scalar tensor)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ monitoring
    def chance_loss(self, cfg, batch_sizes: Sequence[int]) -> float | None:
        """The epoch's mean loss when the embeddings have collapsed (all equal); None: not checked."""
        return None

    def epoch_state(self, model: nn.Module) -> Any:
        """What :meth:`pair_stats` needs from the model at an epoch's start (None: nothing)."""
        return None

    def pair_stats(self, batches: Sequence[np.ndarray], state: Any, pseudo_labels: np.ndarray | None,
                   classes: np.ndarray | None, guidance: str) -> dict[str, float]:
        """The epoch's false-negative diagnostics (:func:`gsimclr.guidance.diagnostics.epoch_pair_stats`:
        the negatives are the other images of the batch)."""
        return epoch_pair_stats(batches, pseudo_labels, classes, guidance)

    def relabel(self, model: nn.Module, labels: torch.Tensor | None) -> None:
        """New pseudo labels (on the device; None: the loss ignores them) for what the model keeps."""
