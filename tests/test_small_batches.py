"""The supervised baseline and fine-tuning when the data size leaves one image in the last batch
(BatchNorm cannot train on one image): the lone image joins the batch before it."""

from __future__ import annotations

import numpy as np
import torch

from gsimclr.data.sources import load_split
from gsimclr.evaluation.classifier import finetune, supervised
from gsimclr.models.registry import create_backbone


def _data(n):
    data = load_split("digits", image_size=8)
    return data.subset(np.arange(n))


def test_supervised_with_a_last_batch_of_one():
    torch.manual_seed(0)
    train, test = _data(65), _data(20)
    top1 = supervised(create_backbone("paper_resnet", n_blocks=0), train, test, 8, 1, 0.01, torch.device("cpu"),
                      batch_size=64)
    assert 0 <= top1 <= 100


def test_finetune_with_a_last_batch_of_one():
    torch.manual_seed(0)
    train, test = _data(128), _data(20)  # a 0.5 stratified fraction of 128 digits: 65 images, batch 64
    top1 = finetune(create_backbone("paper_resnet", n_blocks=0), train, test, 0.5, 8, 1, 1, 1e-3,
                    torch.device("cpu"))
    assert 0 <= top1 <= 100
