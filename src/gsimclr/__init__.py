"""gsimclr: SimCLR and G-SimCLR (Guided SimCLR) for contrastive self-supervised learning.

The pieces, one module each:

- ``gsimclr.loss.ntxent``: the NT-Xent loss (any number of views, optional false-negative masking).
- ``gsimclr.transforms.augment``: batched SimCLR augmentations that run on the GPU or the CPU.
- ``gsimclr.sampler``: the guided batch sampler (no two images of a pseudo label in one batch).
- ``gsimclr.pseudo_labels``: denoising autoencoder + k-means pseudo labels.
- ``gsimclr.training.pretrain``: the contrastive pretraining loop.
- ``gsimclr.evaluation``: linear probes at P1/P2/P3, kNN, fine-tuning, the supervised baseline.
"""

__version__ = "0.1.0"
