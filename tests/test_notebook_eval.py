"""The notebooks' evaluation protocols and Keras' early stopping."""

import numpy as np
import pytest
import torch

from gsimclr.data.dataset import ImageData
from gsimclr.evaluation.early_stopping import EarlyStopping
from gsimclr.evaluation.fit import Selection
from gsimclr.evaluation.images import LabelledImages
from gsimclr.evaluation.notebook import (
    DenseClassifier,
    keras,
    notebook_finetune,
    notebook_linear_probe,
    notebook_supervised,
    sample_labelled,
)
from gsimclr.models.registry import create_backbone


def _run(es, losses, net):
    es.start(net)
    stopped = None
    for epoch, loss in enumerate(losses, start=1):
        with torch.no_grad():
            net.weight.fill_(epoch)  # the weights of epoch e are e
        if es.update(epoch, loss, net):
            stopped = epoch
            break
    es.finish(net)
    return stopped


@pytest.mark.parametrize("restore,losses,weight,restored", [
    ("best", [3, 2, 2.5, 2.2], 2, 2),        # stops at 4, best epoch 2 restored
    ("on_stop", [3, 2, 2.5, 2.2], 2, 2),     # same: stopping triggered
    ("best", [3, 2, 2.5], 2, 2),             # ran out of epochs: "best" restores anyway
    ("on_stop", [3, 2, 2.5], 3, None),       # tf.keras 2.3: the last epoch's weights stay
    ("none", [3, 2, 2.5, 2.2], 4, None),
])
def test_early_stopping_restore_semantics(restore, losses, weight, restored):
    net = torch.nn.Linear(1, 1)
    es = EarlyStopping(patience=2, restore=restore)
    _run(es, losses, net)
    assert float(net.weight) == weight
    assert es.summary()["best_epoch"] == 2 and es.summary()["restored_epoch"] == restored


def test_early_stopping_equal_loss_is_no_improvement_and_min_delta():
    net = torch.nn.Linear(1, 1)
    es = EarlyStopping(patience=1)
    assert _run(es, [1.0, 1.0, 0.5], net) == 2
    es = EarlyStopping(patience=1, min_delta=0.1)
    assert _run(es, [1.0, 0.95], net) == 2


def test_sampling_of_the_labelled_fraction():
    labels = np.repeat(np.arange(5), 250)
    uniform = sample_labelled(labels, 0.1, "uniform", 0)
    assert len(uniform) == 125 and len(set(uniform.tolist())) == 125
    replace = sample_labelled(labels, 0.1, "uniform_replace", 0)
    assert len(replace) == 125 and len(set(replace.tolist())) < 125  # 125 draws from 1250 repeat some
    strat = sample_labelled(labels, 0.1, "stratified", 0)
    assert np.bincount(labels[strat]).tolist() == [25] * 5


def test_holdout_split_never_touches_test_and_is_disjoint():
    labels = np.repeat(np.arange(4), 20)
    fit, held = Selection(select_on="holdout", holdout_fraction=0.25).split(labels, 0)
    assert len(held) == 20 and not set(fit) & set(held) and len(fit) + len(held) == 80
    assert Selection(select_on="test", holdout_fraction=0.25).split(labels, 0)[1] is None


def test_linear_probe_uses_raw_features_and_reports_selection():
    torch.manual_seed(0)
    x = torch.randn(400, 4) * 50 + 100  # raw (unstandardised) features still train with Adam
    y = (x[:, 0] > 100).long()
    r = notebook_linear_probe(x[:300], y[:300], x[300:], y[300:], keras(40, 0.05), Selection(patience=3))
    assert r["selected_on"] == "test" and 1 <= r["best_epoch"] <= r["epochs_run"] <= 40
    assert r["top1"] > 80


def _images(n, seed):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 60, (n, 8, 8, 3)).astype(np.uint8)
    images[labels == 1] += 150  # class 1 is bright
    return LabelledImages(ImageData(images, labels, ["dark", "bright"], name="toy"), 8, torch.device("cpu"), "toy")


def test_finetune_keeps_batch_norm_statistics_frozen():
    train, test = _images(200, 0), _images(60, 1)
    torch.manual_seed(0)
    backbone = create_backbone("paper_resnet", n_blocks=0)
    before = {k: v.clone() for k, v in backbone.state_dict().items() if "running" in k}
    r = notebook_finetune(backbone, train, test, keras(3, 1e-3), keras(2, 1e-3, seed=1), Selection(patience=5),
                          fraction=0.5)
    after = {k: v for k, v in backbone.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert r["labelled"] == 100 and r["head"]["epochs_run"] == 3 and r["all_layers"]["epochs_run"] == 2
    assert r["top1"] > 90
    backbone = create_backbone("paper_resnet", n_blocks=0)
    notebook_finetune(backbone, train, test, keras(1, 1e-3), keras(1, 1e-5, seed=1), fraction=0.5, bn="train")
    assert not all(torch.equal(before[k], v) for k, v in backbone.state_dict().items() if "running" in k)


def test_supervised_resnet20_head_and_batch_statistics_quirk():
    train, test = _images(128, 0), _images(64, 1)
    torch.manual_seed(0)
    net = DenseClassifier(create_backbone("paper_resnet", n_blocks=1, pre_pool_bn=True, shortcut_bn=False), 2)
    assert isinstance(net.backbone.net[-4], torch.nn.BatchNorm2d)
    r = notebook_supervised(net, train, test, keras(3, 1e-3), Selection(select_on="holdout", holdout_fraction=0.25))
    assert r["selected_on"] == "holdout" and r["epochs_run"] <= 3
    r = notebook_supervised(DenseClassifier(create_backbone("paper_resnet", n_blocks=0), 2), train, test,
                            keras(2, 1e-3), bn_eval="batch")
    assert 0 <= r["top1"] <= 100
