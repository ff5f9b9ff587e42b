"""Early stopping on a validation loss with Keras' ``EarlyStopping(monitor="val_loss", patience,
restore_best_weights=True)`` semantics, recording the epoch it chose.

After each epoch :meth:`EarlyStopping.update` gets the monitored loss: an epoch improves when
``loss + min_delta < best`` (Keras' default ``min_delta`` is 0; the first epoch always improves),
and training stops once ``patience`` epochs in a row have not improved. The weights of the best
epoch (parameters and buffers, e.g. BatchNorm statistics, as Keras' ``get_weights``) are kept.

``restore`` decides when they are put back:

- ``"best"``: at the end of training, whether it stopped early or ran out of epochs;
- ``"on_stop"``: only when stopping triggers, as tf.keras 2.3 (the notebooks' version, 2020) did:
  a run that reaches its last epoch keeps that epoch's weights;
- ``"none"``: never.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(1, 1)
    >>> es = EarlyStopping(patience=2)
    >>> es.start(net)
    >>> [es.update(epoch, loss, net) for epoch, loss in enumerate([3.0, 2.0, 2.5, 2.1], start=1)]
    [False, False, False, True]
    >>> es.finish(net); es.summary()
    {'epochs_run': 4, 'best_epoch': 2, 'best_loss': 2.0, 'stopped_early': True, 'restored_epoch': 2}
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # no PyTorch import at module level: --es-restore is checked before PyTorch is imported
    from torch import nn

RESTORES = ("best", "on_stop", "none")


class EarlyStopping:
    def __init__(self, patience: int = 2, min_delta: float = 0.0, restore: str = "best"):
        if restore not in RESTORES:
            raise ValueError(f"restore must be one of {', '.join(RESTORES)}, got {restore!r}")
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.patience, self.min_delta, self.restore = patience, abs(min_delta), restore
        self.start(None)

    def start(self, model: nn.Module | None) -> None:
        """Reset for a new training run (as Keras' ``on_train_begin``)."""
        self.best, self.best_epoch, self.best_state = float("inf"), None, None
        self.wait, self.epochs_run, self.stopped_early, self.restored_epoch = 0, 0, False, None

    def update(self, epoch: int, loss: float, model: nn.Module) -> bool:
        """Record epoch ``epoch``'s (1-based) monitored ``loss``; True when training should stop (the
        best weights are then already restored if ``restore`` says so)."""
        self.epochs_run = epoch
        if loss + self.min_delta < self.best or self.best_epoch is None:
            self.best, self.best_epoch, self.wait = loss, epoch, 0
            if self.restore != "none":
                self.best_state = copy.deepcopy(model.state_dict())
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_early = True
            if self.restore in ("best", "on_stop"):
                self._restore(model)
            return True
        return False

    def finish(self, model: nn.Module) -> None:
        """End of training: with ``restore="best"``, put the best epoch's weights back."""
        if self.restore == "best" and self.restored_epoch is None:
            self._restore(model)

    def _restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
            self.restored_epoch = self.best_epoch

    def summary(self) -> dict:
        return {"epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
                "best_loss": None if self.best_epoch is None else float(self.best),
                "stopped_early": self.stopped_early, "restored_epoch": self.restored_epoch}
