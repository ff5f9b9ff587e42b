"""Export of a pretrained backbone (torchvision/timm state dict, HF folder, ONNX), --init weights, timm backbones."""

import json
import re

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import load_file

from gsimclr.config import load_config
from gsimclr.data.sources import load_split
from gsimclr.errors import UserError
from gsimclr.export import FORMATS, build_target, export_backbone, export_run, target_of, target_state_dict
from gsimclr.io import write_json
from gsimclr.models import create_backbone, is_backbone
from gsimclr.models.weights import load_init_weights
from gsimclr.training.pretrain import pretrain

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    """A ResNet-18 (CIFAR stem) pretrained one epoch by gsimclr on 64 digits, in a run folder with results."""
    run = tmp_path_factory.mktemp("run")
    cfg = load_config(None, {"data": "digits", "image_size": 16, "model": "resnet18_cifar", "head_dims": [64, 16],
                             "optimizer": "adam", "lr": 1e-3, "epochs": 1, "batch_size": 32, "device": "cpu"})
    data = load_split("digits", image_size=16).subset(np.arange(64))
    model = pretrain(cfg, data, run / "simclr")
    write_json(run / "run.json", {"command": "gsimclr run --preset digits-quick --model resnet18_cifar",
                                  "gsimclr_version": "0.1.0", "torch": torch.__version__, "device": "cpu"})
    write_json(run / "results.json", {"data": "digits", "knn_k": 10, "label_fraction": 0.1,
                                      "methods": {"simclr": {"linear": {"P3": 41.5}, "knn": 38.25}}})
    return run, model


@pytest.fixture(scope="module")
def exported(resnet_run, tmp_path_factory):
    """Every format of the run's backbone, exported once."""
    out = tmp_path_factory.mktemp("export") / "out"
    return out, export_run(resnet_run[0], out)


def test_pretrained_resnet18_exports_and_loads_strictly_into_torchvision(resnet_run, exported):
    _, model = resnet_run
    out, summary = exported
    assert set(summary["files"]) >= {"backbone.pth", "hf/model.safetensors", "backbone.onnx"}
    # the documented recipe: torchvision resnet18, 3x3/1 conv1, no max-pool, no classifier
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()
    net.fc = torch.nn.Identity()
    net.load_state_dict(torch.load(out / "backbone.pth", weights_only=True), strict=True)
    net.eval()
    backbone = model.backbone.cpu().eval().to(memory_format=torch.contiguous_format)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(net(x), backbone(x), atol=1e-5)
    # the ONNX check ran on the CPU and its difference is stored, within 1e-4
    stored = json.loads((out / "export.json").read_text())
    assert stored["onnx"]["max_abs_diff"] <= 1e-4 and stored["target"]["library"] == "torchvision"


def test_onnx_matches_pytorch_with_onnxruntime(resnet_run, exported):
    ort = pytest.importorskip("onnxruntime")
    _, model = resnet_run
    session = ort.InferenceSession(str(exported[0] / "backbone.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(5, 3, 16, 16) * 4 - 2  # another batch size than the export's: the batch axis is dynamic
    backbone = model.backbone.cpu().eval().to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        expected = backbone(x).numpy()
    got = session.run(None, {"images": x.numpy()})[0]
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4


def test_hf_folder_has_config_weights_and_a_card_with_results(resnet_run, tmp_path):
    run, _ = resnet_run
    export_run(run / "simclr" / "checkpoint.safetensors", tmp_path / "hf", formats=("hf",))
    folder = tmp_path / "hf" / "hf"
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"]["name"] == "resnet18" and config["architecture"]["cifar_stem"]
    assert config["image_size"] == 16 and config["num_features"] == 512 and config["epochs"] == 1
    card = (folder / "README.md").read_text()
    assert "gsimclr run --preset digits-quick --model resnet18_cifar" in card and "41.50" in card and "38.25" in card
    net = build_target(config["architecture"])
    net.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    assert not (tmp_path / "hf" / "backbone.onnx").exists()


def test_export_refuses_a_used_folder_and_bad_formats(resnet_run, tmp_path):
    run, _ = resnet_run
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "mine.txt").write_text("keep")
    with pytest.raises(UserError, match="not empty; choose another --output or pass --overwrite"):
        export_run(run, tmp_path / "used", formats=("state_dict",))
    assert (tmp_path / "used" / "mine.txt").read_text() == "keep"
    with pytest.raises(UserError, match="is a file; choose another --output"):  # not a NotADirectoryError
        export_run(run, tmp_path / "used" / "mine.txt", formats=("state_dict",))
    assert (tmp_path / "used" / "mine.txt").read_text() == "keep"
    with pytest.raises(UserError, match="--format"):
        export_run(run, tmp_path / "x", formats=("tflite",))
    with pytest.raises(UserError, match="no checkpoint"):
        export_run(tmp_path, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["used"]  # nothing half-written beside it


@pytest.mark.parametrize("model,size", [("resnet18", 32), ("paper_resnet", 16), ("timm:convnext_atto", 32),
                                        ("timm:vit_tiny_patch16_224", 32), ("timm:resnet18_cifar", 16)])
def test_every_backbone_loads_strictly_into_its_target(model, size):
    backbone = create_backbone(model, image_size=size, n_blocks=0).eval()
    target = target_of(model, size, 0, getattr(backbone, "create_kwargs", None))
    net = build_target(target).eval()
    net.load_state_dict(target_state_dict(backbone, target), strict=True)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(net(x), backbone(x), atol=1e-6)
    if target["library"] == "timm":  # the recipe in the card is the same model
        namespace = {"state": target_state_dict(backbone, target)}
        exec(target["recipe"], namespace)
        assert type(namespace["net"]) is type(net)


def test_timm_resnet_takes_the_torchvision_export():
    backbone = create_backbone("resnet18")
    state = target_state_dict(backbone, target_of("resnet18", 64))
    timm.create_model("resnet18", pretrained=False, num_classes=0).load_state_dict(state, strict=True)


def test_init_from_torchvision_timm_and_our_checkpoint(resnet_run, tmp_path):
    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    net = create_backbone("resnet18")
    report = load_init_weights(net, tmp_path / "tv.pth")
    assert report["dropped"] == ["fc.bias", "fc.weight"]
    assert torch.equal(net.net.conv1.weight, tv.conv1.weight)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=10)
    torch.save({"state_dict": vit.state_dict()}, tmp_path / "vit.pt")
    ours = create_backbone("timm:vit_tiny_patch16_224", image_size=32)
    load_init_weights(ours, tmp_path / "vit.pt")
    assert torch.equal(ours.net.pos_embed, vit.pos_embed)
    run, model = resnet_run
    fresh = create_backbone("resnet18_cifar")
    load_init_weights(fresh, run / "simclr" / "checkpoint.safetensors")
    assert torch.equal(fresh.net.layer4[1].conv2.weight, model.backbone.net.layer4[1].conv2.weight.cpu())


def test_init_mismatch_is_one_line_naming_keys(resnet_run, tmp_path):
    run, _ = resnet_run
    with pytest.raises(UserError) as err:  # a CIFAR-stem checkpoint into an ImageNet-stem ResNet-50
        load_init_weights(create_backbone("resnet50"), run / "simclr" / "checkpoint.safetensors")
    message = str(err.value)
    assert "\n" not in message and re.search(r"\d+ missing \(e\.g\. net\.layer\d\.\d\.\w+\.\w+", message), message
    with pytest.raises(UserError, match="another shape.*conv1.weight"):
        load_init_weights(create_backbone("resnet18"), run / "simclr" / "checkpoint.safetensors")
    (tmp_path / "junk.pth").write_text("not weights")
    with pytest.raises(UserError, match="cannot read"):
        load_init_weights(create_backbone("resnet18"), tmp_path / "junk.pth")
    with pytest.raises(UserError, match="no such"):
        load_init_weights(create_backbone("resnet18"), tmp_path / "missing.pth")


def test_timm_names_and_cifar_stem_errors():
    assert is_backbone("timm:anything") and not is_backbone("timm:") and not is_backbone("vgg")
    net = create_backbone("timm:resnet18_cifar")
    assert net.net.conv1.kernel_size == (3, 3) and isinstance(net.net.maxpool, torch.nn.Identity)
    with pytest.raises(UserError, match="ResNets only"):
        create_backbone("timm:convnext_atto_cifar")
    with pytest.raises(UserError, match="no model 'resnet_nope'"):
        create_backbone("timm:resnet_nope")
    vit = create_backbone("timm:vit_tiny_patch16_224", image_size=64)
    assert vit(torch.zeros(1, 3, 64, 64)).shape == (1, 192)


def test_formats_constant():
    assert FORMATS == ("state_dict", "hf", "onnx")


def test_export_backbone_of_a_timm_vit(tmp_path):
    backbone = create_backbone("timm:vit_tiny_patch16_224", image_size=32, patch_size=8)
    target = target_of("timm:vit_tiny_patch16_224", 32, timm_kwargs=backbone.create_kwargs)
    summary = export_backbone(backbone, target, {"model": "timm:vit_tiny_patch16_224", "image_size": 32,
                                                 "num_features": 192, "method": "simclr", "epochs": 0},
                              tmp_path / "vit", formats=("state_dict",))
    assert summary["files"] == ["backbone.pth"] and target["kwargs"] == {"num_classes": 0, "img_size": 32, "patch_size": 8}
    net = build_target(target)
    net.load_state_dict(torch.load(tmp_path / "vit" / "backbone.pth", weights_only=True), strict=True)


def test_locate_checkpoint_finds_any_registered_method_in_a_run_folder(tmp_path):
    """A run folder holding only a MoCo (or any registered method's) stage is found without --method;
    with several, the first registered wins and --method picks another."""
    import pytest

    from gsimclr.errors import UserError
    from gsimclr.export import locate_checkpoint
    from gsimclr.methods import METHODS
    from gsimclr.run_folder import CHECKPOINT

    run = tmp_path / "run"
    for name in ("moco", "gmoco"):
        (run / name).mkdir(parents=True)
        (run / name / CHECKPOINT).write_bytes(b"x")
    assert locate_checkpoint(run)[2] == "moco"
    assert locate_checkpoint(run, "gmoco")[0] == run / "gmoco" / CHECKPOINT
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="--method picks one") as err:
        locate_checkpoint(empty)
    assert all(name in str(err.value) for name in METHODS.names())
