"""Loss-side guidance (``--guidance``): what NT-Xent does with candidates that share the anchor's
pseudo label (implemented in :func:`gsimclr.loss.ntxent.nt_xent`), combinable with any sampler.

- ``none``: nothing; they stay negatives (the paper's G-SimCLR relies on batching alone).
- ``mask``: they leave the denominator (false-negative elimination).
- ``attract``: they become extra positives, the anchor's loss averaged over all its positives
  (false-negative attraction, FNC, Huynh et al. 2022; SupCon's L_out).

Example:
    >>> sorted(GUIDANCE)
    ['attract', 'mask', 'none']
"""

from gsimclr.registry import Registry

#: name -> what it does (``--guidance``)
GUIDANCE: Registry = Registry("loss-side guidance", option="guidance", section="guidance")
GUIDANCE.register("none", "same-pseudo-label candidates stay negatives")
GUIDANCE.register("mask", "drop same-pseudo-label candidates from the denominator")
GUIDANCE.register("attract", "count same-pseudo-label candidates as extra positives (FNC attraction)")
