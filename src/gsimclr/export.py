"""Exporting a pretrained backbone for use elsewhere: a state dict for torchvision/timm, a Hugging Face-
style folder, ONNX.

The backbone's weights are written under the key names of the model they load into (:func:`target_of`
says which and :func:`build_target` builds it), so no key surgery is needed downstream:

============================  =====================================================================
``--model``                   loads with ``strict=True`` into
============================  =====================================================================
``resnet18``, ``resnet50``    ``torchvision.models.resnet18()`` (``resnet50()``) with ``fc = nn.Identity()``
``resnet18_cifar``            torchvision ``resnet18()`` with ``conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)``,
                              ``maxpool = nn.Identity()``, ``fc = nn.Identity()``
``timm:NAME``                 ``timm.create_model(NAME, num_classes=0, **kwargs)`` (kwargs in the export,
                              e.g. ``img_size``); ``timm:NAME_cifar`` also gets the CIFAR stem above
``paper_resnet``              ``gsimclr.models.resnet.PaperResNet(n_blocks=N)`` (no torchvision twin)
============================  =====================================================================

The torchvision ResNet keys are also timm's: ``timm.create_model("resnet18", num_classes=0)`` loads the
same file. Written into ``OUT``:

- ``backbone.pth``: the state dict (``torch.load(..., weights_only=True)``);
- ``hf/``: ``config.json`` (architecture, recipe, input size and normalisation), ``model.safetensors``
  (the same state dict) and a model card ``README.md`` with the run's command and results (read from
  the run folder's ``run.json`` and ``results.json`` when present);
- ``backbone.onnx``: ``torch.onnx.export`` of the backbone with a dynamic batch axis, input ``images``
  (N, 3, S, S, normalised), output ``features``; run with onnxruntime on the CPU against PyTorch, the
  maximum absolute difference stored in ``export.json``.

The folder is assembled beside ``OUT`` and renamed into place, so an interrupted export leaves nothing.
onnx, onnxruntime and timm are optional (``pip install 'gsimclr[export]'``, ``'gsimclr[timm]'``).
"""

from __future__ import annotations

import inspect
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gsimclr import __version__
from gsimclr.errors import UserError
from gsimclr.io import write_json, write_text
from gsimclr.transforms.augment import IMAGENET_MEAN, IMAGENET_STD

FORMATS = ("state_dict", "hf", "onnx")
ONNX_TOLERANCE = 1e-4  # max abs difference accepted between onnxruntime and PyTorch (fp32, CPU)
ONNX_OPSET = 17


# ------------------------------------------------------------------------------------------- targets


def target_of(model: str, image_size: int, n_blocks: int = 3, timm_kwargs: dict | None = None) -> dict[str, Any]:
    """Which model a ``--model`` backbone's weights load into, as a JSON-able description.

    Example:
        >>> target_of("resnet18_cifar", 32)["recipe"].splitlines()[1]
        'net = torchvision.models.resnet18(weights=None)'
    """
    if model in ("resnet18", "resnet50", "resnet18_cifar"):
        arch = model.removesuffix("_cifar")
        cifar = model.endswith("_cifar")
        target = {"library": "torchvision", "name": arch, "kwargs": {}, "cifar_stem": cifar}
    elif model.startswith("timm:"):
        from gsimclr.models.timm_backbone import split_cifar, timm_options

        name, cifar = split_cifar(model[len("timm:"):])
        kwargs = timm_kwargs if timm_kwargs is not None else timm_options(name, image_size)
        target = {"library": "timm", "name": name, "kwargs": kwargs, "cifar_stem": cifar}
    elif model == "paper_resnet":
        target = {"library": "gsimclr", "name": "PaperResNet", "kwargs": {"n_blocks": n_blocks}, "cifar_stem": False}
    else:
        raise UserError(f"export: no known target model for --model {model}")
    target["recipe"] = _recipe(target)
    return target


def _recipe(target: dict[str, Any]) -> str:
    """Python that builds the target model and loads ``state`` (the exported state dict) strictly."""
    kwargs = "".join(f", {k}={v!r}" for k, v in target["kwargs"].items())
    lines = {
        "torchvision": ["import torch, torchvision", f"net = torchvision.models.{target['name']}(weights=None)"],
        "timm": ["import torch, timm", f"net = timm.create_model({target['name']!r}, pretrained=False{kwargs})"],
        "gsimclr": ["import torch", "from gsimclr.models.resnet import PaperResNet",
                    f"net = PaperResNet({kwargs[2:]})"],
    }[target["library"]]
    if target["cifar_stem"]:
        width = 64 if target["library"] == "torchvision" else "net.conv1.out_channels"
        lines += [f"net.conv1 = torch.nn.Conv2d(3, {width}, 3, 1, 1, bias=False)", "net.maxpool = torch.nn.Identity()"]
    if target["library"] == "torchvision":
        lines.append("net.fc = torch.nn.Identity()")
    lines.append("net.load_state_dict(state, strict=True)")
    return "\n".join(lines)


def build_target(target: dict[str, Any]) -> nn.Module:
    """The (untrained) model described by :func:`target_of`, ready for ``load_state_dict(strict=True)``."""
    if target["library"] == "torchvision":
        import torchvision

        net = getattr(torchvision.models, target["name"])(weights=None)
        net.fc = nn.Identity()
    elif target["library"] == "timm":
        from gsimclr.models.timm_backbone import import_timm

        net = import_timm().create_model(target["name"], pretrained=False, **target["kwargs"])
    else:
        from gsimclr.models.resnet import PaperResNet

        net = PaperResNet(**target["kwargs"])
    if target["cifar_stem"]:
        from gsimclr.models.timm_backbone import apply_cifar_stem

        apply_cifar_stem(net, target["name"])
    return net


def target_state_dict(backbone: nn.Module, target: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The backbone's weights under the target's key names (torchvision and timm: without ``net.``)."""
    state = backbone.state_dict()
    if target["library"] != "gsimclr":
        state = {k.removeprefix("net."): v for k, v in state.items()}
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


# --------------------------------------------------------------------------------------------- ONNX


def _import_onnxruntime():
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxruntime: pip install 'gsimclr[export]'") from None
    return onnxruntime


def export_onnx(backbone: nn.Module, image_size: int, path: str | Path, batch: int = 4, seed: int = 0) -> float:
    """Write ``backbone`` as ONNX (dynamic batch) and return the max abs difference between onnxruntime
    (CPU) and PyTorch on a random batch; a UserError when it exceeds :data:`ONNX_TOLERANCE`."""
    ort = _import_onnxruntime()
    net = _cpu_copy(backbone)
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    kwargs: dict[str, Any] = dict(input_names=["images"], output_names=["features"], opset_version=ONNX_OPSET,
                                  dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}})
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: no onnxscript needed, one self-contained file
    path = Path(path)
    with torch.no_grad():
        torch.onnx.export(net, (x,), str(path), **kwargs)
        expected = net(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["features"], {"images": x.numpy()})[0]
    diff = float(abs(got - expected).max())
    if not diff <= ONNX_TOLERANCE:
        raise UserError(f"ONNX export differs from PyTorch by {diff:.2e} (> {ONNX_TOLERANCE:g}) on the CPU")
    return diff


def _cpu_copy(backbone: nn.Module) -> nn.Module:
    import copy

    net = copy.deepcopy(backbone).float().cpu().eval()
    return net.to(memory_format=torch.contiguous_format)


# ------------------------------------------------------------------------------------ Hugging Face


def _model_card(target: dict, config: dict, run: dict | None, results: dict | None, method: str) -> str:
    from gsimclr.report import markdown_table

    tags = dict.fromkeys(["self-supervised-learning", "simclr", method])
    lines = ["---", f"library_name: {target['library']}", "tags:", *(f"- {t}" for t in tags), "---", "", f"# {method} backbone ({config['model']}) pretrained with gsimclr", "",
             f"{config['method']} pretraining, {config['epochs']} epoch(s), {config['image_size']} px inputs, "
             f"{config['num_features']}-d features. Exported by gsimclr {__version__}.", "",
             "## Load", "", "```python", "from safetensors.torch import load_file",
             "state = load_file('model.safetensors')", target["recipe"], "```", "",
             "Inputs: RGB in [0, 1], resized to the input size, normalised with mean "
             f"{list(config['mean'])} and std {list(config['std'])}; outputs: pooled features.", ""]
    lines += ["## Training run", ""]
    if run:
        lines += ["```", run.get("command", "(command not recorded)"), "```", "",
                  f"gsimclr {run.get('gsimclr_version', '?')}, torch {run.get('torch', '?')}, device "
                  f"{run.get('device', '?')}, started {run.get('started', '?')}, commit {run.get('git_commit')}.", ""]
    else:
        lines += ["(no run.json beside the checkpoint: command not recorded)", ""]
    lines += ["## Results", ""]
    if results and results.get("methods"):
        lines += [markdown_table(results), "", f"Data: {results.get('data')}.", ""]
    else:
        lines += ["(no results.json in the run folder: not evaluated)", ""]
    return "\n".join(lines)


def export_hf(backbone: nn.Module, target: dict, config: dict, folder: Path, run_dir: Path | None, method: str) -> None:
    """config.json, model.safetensors and README.md (model card) in ``folder``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(target_state_dict(backbone, target), str(folder / "model.safetensors"),
              metadata={"format": "pt", "library": target["library"], "name": target["name"]})
    write_json(folder / "config.json", {"model_type": "gsimclr-backbone", "architecture": target, **config})
    run = _read_json(run_dir / "run.json") if run_dir else None
    results = _read_json(run_dir / "results.json") if run_dir else None
    write_text(folder / "README.md", _model_card(target, config, run, results, method))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------ exports


def export_backbone(backbone: nn.Module, target: dict, config: dict, out: str | Path,
                    formats: tuple[str, ...] = FORMATS, run_dir: Path | None = None, method: str = "simclr",
                    overwrite: bool = False) -> dict[str, Any]:
    """Write the chosen ``formats`` of ``backbone`` into ``out`` (see the module docstring); returns the
    summary also written to ``out/export.json``. ``config`` holds at least model, image_size, epochs,
    method and num_features."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"--format must be among {', '.join(FORMATS)}, got {', '.join(unknown) or 'nothing'}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"export folder {out} is a file; choose another --output")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"export folder {out} exists and is not empty; choose another --output or pass --overwrite")
    if "onnx" in formats:
        _import_onnxruntime()  # fail before writing anything
    config = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), **config}
    backbone = _cpu_copy(backbone)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        summary: dict[str, Any] = {"gsimclr_version": __version__, "target": target, "config": config, "files": []}
        if "state_dict" in formats:
            torch.save(target_state_dict(backbone, target), tmp / "backbone.pth")
            summary["files"].append("backbone.pth")
        if "hf" in formats:
            export_hf(backbone, target, config, tmp / "hf", run_dir, method)
            summary["files"] += ["hf/config.json", "hf/model.safetensors", "hf/README.md"]
        if "onnx" in formats:
            diff = export_onnx(backbone, config["image_size"], tmp / "backbone.onnx")
            summary["files"].append("backbone.onnx")
            summary["onnx"] = {"max_abs_diff": diff, "tolerance": ONNX_TOLERANCE, "runtime": "onnxruntime CPU",
                               "opset": ONNX_OPSET}
        write_json(tmp / "export.json", summary)
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _replace_folder(new: Path, out: Path) -> None:
    """Move ``new`` to ``out``; an existing ``out`` is set aside first and removed only afterwards."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{new.name}"
        out.rename(old)
    new.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def locate_checkpoint(path: str | Path, method: str | None = None) -> tuple[Path, Path | None, str]:
    """(checkpoint, run folder or None, method) for a checkpoint file, a stage folder or a run folder."""
    from gsimclr.training.pretrain import CHECKPOINT

    path = Path(path)
    if path.is_file():
        return path, _run_dir_of(path.parent), method or path.parent.name
    if (path / CHECKPOINT).is_file():
        return path / CHECKPOINT, _run_dir_of(path), method or path.name
    candidates = [method] if method else ["simclr", "gsimclr"]
    for name in candidates:
        if (path / name / CHECKPOINT).is_file():
            return path / name / CHECKPOINT, path, name
    raise UserError(f"export: no checkpoint in {path} (expected {CHECKPOINT}, or a run folder with "
                    f"{'/'.join(candidates)}/{CHECKPOINT})")


def _run_dir_of(stage: Path) -> Path | None:
    parent = stage.parent
    return parent if (parent / "run.json").exists() or (parent / "results.json").exists() else None


def export_run(path: str | Path, out: str | Path | None = None, formats: tuple[str, ...] = FORMATS,
               method: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Export the backbone of a checkpoint (or a stage or run folder); ``out`` defaults to the stage
    folder's ``export/``."""
    from gsimclr.pipeline import load_encoder

    ckpt, run_dir, method = locate_checkpoint(path, method)
    model, cfg, meta = load_encoder(ckpt)
    backbone = model.backbone
    timm_kwargs = getattr(backbone, "create_kwargs", None)
    target = target_of(cfg.model, cfg.image_size, getattr(cfg, "n_blocks", 3), timm_kwargs)
    config = {"model": cfg.model, "image_size": cfg.image_size, "num_features": backbone.num_features,
              "method": meta.get("method", method), "epochs": meta.get("epoch"), "checkpoint": str(ckpt)}
    return export_backbone(backbone, target, config, out or ckpt.parent / "export", formats, run_dir,
                           method, overwrite)
