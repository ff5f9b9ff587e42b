"""Backbones, heads, the autoencoder: shapes, the paper's depth, and P1/P2/P3 wiring."""

import pytest
import torch

from gsimclr.models import BACKBONES, ProjectionHead, SimCLRModel, create_backbone
from gsimclr.models.autoencoder import DenoisingAutoencoder


def test_paper_resnet_depth_38_and_256_features():
    net = create_backbone("paper_resnet", n_blocks=3)
    shortcut_convs = {id(b.shortcut[0]) for b in net.modules() if hasattr(b, "shortcut") and
                      isinstance(b.shortcut, torch.nn.Sequential)}
    main_path = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and id(m) not in shortcut_convs]
    # 1 stem conv + 3 groups x (1 projection + 3 identity blocks) x 3 convs = 37, + the classifier = depth 38
    assert len(main_path) == 37 and len(shortcut_convs) == 3
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 256)


@pytest.mark.parametrize("name,size,features", [("resnet18_cifar", 32, 512), ("resnet18", 64, 512)])
def test_registry_backbones(name, size, features):
    net = create_backbone(name)
    assert net.num_features == features
    assert net(torch.zeros(2, 3, size, size)).shape == (2, features)


def test_registry_lists_and_rejects():
    assert {"paper_resnet", "resnet18_cifar", "resnet18", "resnet50"} <= set(BACKBONES)
    with pytest.raises(ValueError, match="unknown model"):
        create_backbone("vgg")


def test_paper_head_points():
    head = ProjectionHead(256, [256, 128, 50])
    x = torch.randn(3, 256)
    z, f = head(x, return_features=True)
    assert z.shape == (3, 50)
    assert torch.equal(f["P3"], x)
    assert torch.allclose(f["P2"], head.stages[0](x))                    # minus the last two layers
    assert torch.allclose(f["P1"], head.stages[1](head.stages[0](x)))    # minus the last layer
    assert torch.allclose(z, head.stages[2](f["P1"]))
    assert head.feature_dims(256) == {"P1": 128, "P2": 256, "P3": 256}


def test_simclr_head_with_batch_norm():
    head = ProjectionHead(512, [2048, 128], batch_norm=True)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules())
    assert head.feature_dims(512) == {"P1": 2048, "P2": 512, "P3": 512}


def test_model_features():
    model = SimCLRModel.build("paper_resnet", [64, 32, 16], n_blocks=0).eval()
    x = torch.randn(2, 3, 16, 16)
    feats = model.features(x)
    assert {k: v.shape[1] for k, v in feats.items()} == model.feature_dims()
    assert torch.allclose(model.head.stages[-1](feats["P1"]), model(x), atol=1e-6)


@pytest.mark.parametrize("arch,size,latent", [("shallow", 32, 128), ("deep", 64, 1024)])
def test_autoencoder_shapes_and_range(arch, size, latent):
    ae = DenoisingAutoencoder(arch)
    x = torch.rand(2, 3, size, size)
    out = ae(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert ae.encode(x).shape == (2, latent)
