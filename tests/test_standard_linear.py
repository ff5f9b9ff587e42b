"""The standard linear protocol (SGD on the frozen backbone with crop and flip) and label-fraction sampling."""

import numpy as np
import pytest
import torch
from torch import nn

from gsimclr.data.sources import load_split
from gsimclr.errors import UserError
from gsimclr.evaluation.standard_linear import label_fraction_indices, standard_linear_eval


class Pixels(nn.Sequential):
    """A fixed 'backbone': 8x8 average-pooled pixels (a linear classifier on them reaches ~80% on digits)."""

    def __init__(self):
        super().__init__(nn.AdaptiveAvgPool2d(8), nn.Flatten())
        self.num_features = 192


@pytest.fixture(scope="module")
def digits():
    return load_split("digits"), load_split("digits", "test")


def test_learns_and_keeps_the_backbone_frozen(digits):
    train, test = digits
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.AdaptiveAvgPool2d(4), nn.Flatten())
    backbone.num_features = 128
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    small = train.subset(np.arange(256))
    result = standard_linear_eval(backbone, small, test, 32, torch.device("cpu"), epochs=1, batch_size=128)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())  # BN statistics too
    assert result["protocol"] == "standard" and result["train_images"] == len(small)
    pixels = standard_linear_eval(Pixels(), train, test, 32, torch.device("cpu"), epochs=5, batch_size=64)
    assert pixels["top1"] > 60  # chance is 10


def test_fraction_trains_on_fewer_images(digits):
    train, test = digits
    result = standard_linear_eval(Pixels(), train, test, 32, torch.device("cpu"), epochs=1, fraction=0.1,
                                  sampling="uniform", seed=3)
    assert result["train_images"] == round(0.1 * len(train)) and result["sampling"] == "uniform"


def test_stratified_versus_uniform_sampling():
    labels = np.repeat(np.arange(10), [510] + [5] * 9)  # one large class, nine small ones: 555 images
    strat = label_fraction_indices(labels, 0.1, "stratified", seed=0)
    assert np.bincount(labels[strat], minlength=10).tolist() == [51] + [1] * 9  # every class, >= 1 each
    counts = [np.bincount(labels[label_fraction_indices(labels, 0.1, "uniform", seed=s)], minlength=10)
              for s in range(20)]
    assert all(len(label_fraction_indices(labels, 0.1, "uniform", seed=s)) == round(0.1 * 555) for s in range(3))
    assert any((c[1:] == 0).any() for c in counts)  # uniform draws can miss a small class entirely
    idx = label_fraction_indices(labels, 0.1, "uniform", seed=1)
    assert np.array_equal(idx, np.sort(idx)) and len(np.unique(idx)) == len(idx)
    assert np.array_equal(idx, label_fraction_indices(labels, 0.1, "uniform", seed=1))
    assert len(label_fraction_indices(labels, 1.0, "stratified")) == len(labels)
    with pytest.raises(UserError, match="label fraction"):
        label_fraction_indices(labels, 0.0)
    with pytest.raises(UserError, match="stratified, uniform"):
        label_fraction_indices(labels, 0.5, "balanced")
