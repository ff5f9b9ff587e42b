"""Pretraining: the loop that runs any method from built parts.

- ``gsimclr.training.pretrain``: :class:`~gsimclr.training.pretrain.Pretrainer` (epochs, ``step``,
  checkpoints, diagnostics) and :func:`~gsimclr.training.pretrain.build_pretrainer`, which builds its
  parts from a config (the method's own from :mod:`gsimclr.methods`).
- ``gsimclr.training.reclustering``: encoder pseudo labels refreshed during training.
- ``gsimclr.training.optim``: optimizers and learning-rate schedules.
"""
