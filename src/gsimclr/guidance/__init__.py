"""Guidance: everything G-SimCLR adds to SimCLR to keep images of one category from acting as each
other's negatives, one concept per module.

- ``gsimclr.guidance.sources``: where pseudo labels come from (autoencoder, encoder, file:PATH).
- ``gsimclr.guidance.autoencoder``: the paper's denoising autoencoder features.
- ``gsimclr.guidance.kmeans``: k-means (scikit-learn, or batched torch for large N and k).
- ``gsimclr.guidance.recluster``: when the encoder's features are re-clustered during training.
- ``gsimclr.guidance.samplers``: batching by pseudo labels (random, paper, spread, greedy).
- ``gsimclr.guidance.loss_guidance``: what the loss does with same-label candidates (none, mask, attract);
  NT-Xent applies it to the batch, MoCo (``gsimclr.methods.moco``) to its queue of negatives too.
- ``gsimclr.guidance.diagnostics``: same-label pairs per batch, with their references.
"""
