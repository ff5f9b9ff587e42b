"""gsimclr: SimCLR and G-SimCLR (Guided SimCLR) for contrastive self-supervised learning.

The pieces, one module each:

- ``gsimclr.loss``: the NT-Xent loss (any number of views, false negatives masked or attracted) and the
  label-free false-negative corrections, the debiased and hard-negative losses.
- ``gsimclr.transforms.augment``: batched SimCLR augmentations that run on the GPU or the CPU.
- ``gsimclr.guidance``: pseudo labels (autoencoder, encoder, file), k-means, batch samplers, loss-side
  guidance and false-negative diagnostics.
- ``gsimclr.training.pretrain``: the contrastive pretraining loop.
- ``gsimclr.evaluation``: linear probes at P1/P2/P3, kNN, fine-tuning, the supervised baseline.
"""

__version__ = "0.1.0"
