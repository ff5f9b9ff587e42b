"""Frozen features of a dataset at P1, P2 and P3, extracted once for every evaluation."""

from __future__ import annotations

import torch

from gsimclr.evaluation.images import Images, read_in_order
from gsimclr.models.simclr import SimCLRModel
from gsimclr.runtime import autocast
from gsimclr.transforms.augment import IMAGENET_MEAN, IMAGENET_STD, eval_transform


@torch.no_grad()
def extract_features(model: SimCLRModel, data: Images, image_size: int, device: torch.device,
                     batch_size: int = 512, precision: str = "auto", mean=IMAGENET_MEAN,
                     std=IMAGENET_STD) -> dict[str, torch.Tensor]:
    """{"P1": (N, d1), "P2": (N, d2), "P3": (N, d3)} float32 tensors on the CPU, in the data's order;
    inputs normalised with ``mean``/``std`` (0 and 1: raw ``[0, 1]`` pixels, as the notebooks)."""
    model.eval()
    if not all(p.dim() != 4 or p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters()):
        # only when needed: re-laying out a model that is already channels_last replaces some of its
        # parameters' tensors, which a DistributedDataParallel wrapper around it (training, with a kNN
        # monitor or re-clustering between epochs) does not follow: its later steps diverged from a plain run
        model.to(memory_format=torch.channels_last)
    chunks: dict[str, list[torch.Tensor]] = {}
    for batch in read_in_order(data, device, batch_size):
        x = eval_transform(batch, image_size, mean, std).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            feats = model.features(x)
        for point, value in feats.items():
            chunks.setdefault(point, []).append(value.float().cpu())
    return {p: torch.cat(v) for p, v in chunks.items()}

