"""Exporting a pretrained backbone for use elsewhere: a state dict for torchvision/timm, a Hugging Face-
style folder, ONNX.

Two registries say what an export can be:

- **targets** (:data:`EXPORT_TARGETS`, by library): the model of another library the weights load into
  with ``strict=True``, how to build it and the Python recipe that does. Which target a backbone has is
  part of its registration (:func:`gsimclr.models.registry.register_backbone`'s ``export``):

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

  The torchvision ResNet keys are also timm's: ``timm.create_model("resnet18", num_classes=0)`` loads
  the same file.
- **formats** (:data:`EXPORT_FORMATS`, ``--format``), each with its help and files, written into ``OUT``:

  - ``state_dict``: ``backbone.pth``, the state dict (``torch.load(..., weights_only=True)``);
  - ``hf``: ``hf/config.json`` (architecture, recipe, input size and normalisation), ``hf/model.safetensors``
    (the same state dict) and a model card ``hf/README.md`` with the run's command and results (read
    from the run folder's ``run.json`` and ``results.json`` when present);
  - ``onnx``: ``backbone.onnx``, ``torch.onnx.export`` of the backbone with a dynamic batch axis, input
    ``images`` (N, 3, S, S, normalised), output ``features``; run with onnxruntime on the CPU against
    PyTorch, the maximum absolute difference stored in ``export.json``.

**Safety.** An export never deletes or corrupts what it reads: an ``OUT`` that is, contains or lies
inside the checkpoint or the run folder it exports is refused (symbolic links resolved), except the
stage's own ``export/`` folder (the default); ``--overwrite`` replaces only a previous export (a folder
holding ``export.json``). Exporting into the run takes the run's lock, reading it from elsewhere a
shared lock (refused while a command writes the run). ``OUT`` is checked before any work (not under a
file, not in a read-only folder); the folder is assembled in a hidden temporary folder beside ``OUT``
and renamed into place, so an interrupted or failed export (a full disk) leaves nothing half-written
(a killed export's temporary folder is removed by the next export to that place), and the files get
the ordinary permissions of new files. onnx, onnxruntime and timm are optional (``pip install
'gsimclr[export]'``, ``'gsimclr[timm]'``).

This module imports PyTorch only when exporting, so the CLI reads the registries cheaply.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from gsimclr import __version__
from gsimclr.errors import UserError
from gsimclr.io import check_output, normal_permissions, same_or_inside, write_bytes, write_error, write_json, write_text
from gsimclr.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

ONNX_TOLERANCE = 1e-4  # max abs difference accepted between onnxruntime and PyTorch (fp32, CPU)
ONNX_OPSET = 17
SUMMARY = "export.json"
_TEMP_TAG = ".export-"  # hidden temporary folders: .<OUT name>.export-<pid>-<random> (and .old-<pid>-...)


# ------------------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class TargetLibrary:
    """A library whose models take exported weights: the Python lines that build ``net`` from a target
    description, the builder itself, and whether the backbone's ``net.`` key prefix is removed."""

    recipe: Callable[[dict], list[str]]
    build: Callable[[dict], "nn.Module"]
    strip_net_prefix: bool = True


EXPORT_TARGETS: Registry = Registry("export target")


def _torchvision_recipe(target: dict) -> list[str]:
    lines = ["import torch, torchvision", f"net = torchvision.models.{target['name']}(weights=None)"]
    if target.get("downsample_in_1x1"):
        lines += ["for block in net.modules():",
                  "    if isinstance(block, torchvision.models.resnet.Bottleneck) and block.conv2.stride != (1, 1):",
                  "        block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)"]
    return lines


def _torchvision_build(target: dict) -> "nn.Module":
    import torchvision
    from torch import nn

    net = getattr(torchvision.models, target["name"])(weights=None)
    net.fc = nn.Identity()
    if target.get("downsample_in_1x1"):
        for block in net.modules():
            if isinstance(block, torchvision.models.resnet.Bottleneck) and block.conv2.stride != (1, 1):
                block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
    return net


def _kwargs_text(target: dict) -> str:
    return "".join(f", {k}={v!r}" for k, v in target["kwargs"].items())


def _timm_build(target: dict) -> "nn.Module":
    from gsimclr.models.timm_backbone import import_timm

    return import_timm().create_model(target["name"], pretrained=False, **target["kwargs"])


def _gsimclr_build(target: dict) -> "nn.Module":
    from gsimclr.models.resnet import PaperResNet

    return PaperResNet(**target["kwargs"])


EXPORT_TARGETS.register("torchvision", TargetLibrary(_torchvision_recipe, _torchvision_build))
EXPORT_TARGETS.register("timm", TargetLibrary(
    lambda t: ["import torch, timm", f"net = timm.create_model({t['name']!r}, pretrained=False{_kwargs_text(t)})"],
    _timm_build))
EXPORT_TARGETS.register("gsimclr", TargetLibrary(
    lambda t: ["import torch", "from gsimclr.models.resnet import PaperResNet", f"net = PaperResNet({_kwargs_text(t)[2:]})"],
    _gsimclr_build, strip_net_prefix=False))


def target_of(model: str, image_size: int, n_blocks: int = 3, timm_kwargs: dict | None = None,
              **options) -> dict[str, Any]:
    """Which model a ``--model`` backbone's weights load into (its registered export target), as a
    JSON-able description with its recipe.

    Example:
        >>> target_of("resnet18_cifar", 32)["recipe"].splitlines()[1]
        'net = torchvision.models.resnet18(weights=None)'
    """
    from gsimclr.models.registry import export_target, is_backbone

    if not is_backbone(model):
        raise UserError(f"export: no known target model for --model {model}")
    target = export_target(model, {"image_size": image_size, "n_blocks": n_blocks, "timm_kwargs": timm_kwargs,
                                   **options})
    target["recipe"] = _recipe(target)
    return target


def _recipe(target: dict[str, Any]) -> str:
    """Python that builds the target model and loads ``state`` (the exported state dict) strictly."""
    library = EXPORT_TARGETS.get(target["library"])
    lines = library.recipe(target)
    if target["cifar_stem"]:
        width = 64 if target["library"] == "torchvision" else "net.conv1.out_channels"
        lines += [f"net.conv1 = torch.nn.Conv2d(3, {width}, 3, 1, 1, bias=False)", "net.maxpool = torch.nn.Identity()"]
    if target["library"] == "torchvision":
        lines.append("net.fc = torch.nn.Identity()")
    lines.append("net.load_state_dict(state, strict=True)")
    return "\n".join(lines)


def build_target(target: dict[str, Any]) -> "nn.Module":
    """The (untrained) model described by :func:`target_of`, ready for ``load_state_dict(strict=True)``."""
    net = EXPORT_TARGETS.get(target["library"]).build(target)
    if target["cifar_stem"]:
        from gsimclr.models.timm_backbone import apply_cifar_stem

        apply_cifar_stem(net, target["name"])
    return net


def target_state_dict(backbone: "nn.Module", target: dict[str, Any]) -> dict[str, "torch.Tensor"]:
    """The backbone's weights under the target's key names (torchvision and timm: without ``net.``)."""
    state = backbone.state_dict()
    if EXPORT_TARGETS.get(target["library"]).strip_net_prefix:
        state = {k.removeprefix("net."): v for k, v in state.items()}
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


# ------------------------------------------------------------------------------------------- formats


@dataclass
class ExportJob:
    """What every format writes from: the backbone (a float32 CPU copy), its target, the config shown in
    the model card and ``export.json``, the run folder it came from (or None) and the method."""

    backbone: "nn.Module"
    target: dict[str, Any]
    config: dict[str, Any]
    run_dir: Path | None
    method: str


@dataclass(frozen=True)
class ExportFormat:
    """An export format: its help, the files it writes, the writer (job, folder) -> summary entries, and
    a check of its optional dependencies run before any work (or None)."""

    help: str
    files: tuple[str, ...]
    write: Callable[[ExportJob, Path], dict[str, Any]]
    requires: Callable[[], None] | None = None


EXPORT_FORMATS: Registry = Registry("export format")


def _write_state_dict(job: ExportJob, folder: Path) -> dict[str, Any]:
    import torch

    buffer = io.BytesIO()
    torch.save(target_state_dict(job.backbone, job.target), buffer)
    write_bytes(folder / "backbone.pth", buffer.getvalue())
    return {}


def _import_onnxruntime():
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxruntime: pip install 'gsimclr[export]'") from None
    return onnxruntime


def onnx_bytes(backbone: "nn.Module", image_size: int, batch: int = 4, seed: int = 0) -> tuple[bytes, float]:
    """``backbone`` as ONNX (dynamic batch) and the max abs difference between onnxruntime (CPU) and
    PyTorch on a random batch; a UserError when it exceeds :data:`ONNX_TOLERANCE`."""
    import torch

    ort = _import_onnxruntime()
    net = _cpu_copy(backbone)
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    kwargs: dict[str, Any] = dict(input_names=["images"], output_names=["features"], opset_version=ONNX_OPSET,
                                  dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}})
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: no onnxscript needed, one self-contained file
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(net, (x,), buffer, **kwargs)
        expected = net(x).numpy()
    model = buffer.getvalue()
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    got = session.run(["features"], {"images": x.numpy()})[0]
    diff = float(abs(got - expected).max())
    if not diff <= ONNX_TOLERANCE:
        raise UserError(f"ONNX export differs from PyTorch by {diff:.2e} (> {ONNX_TOLERANCE:g}) on the CPU")
    return model, diff


def export_onnx(backbone: "nn.Module", image_size: int, path: str | Path, batch: int = 4, seed: int = 0) -> float:
    """Write ``backbone`` as ONNX to ``path`` (:func:`onnx_bytes`); returns the max abs difference."""
    model, diff = onnx_bytes(backbone, image_size, batch, seed)
    write_bytes(path, model)
    return diff


def _write_onnx(job: ExportJob, folder: Path) -> dict[str, Any]:
    diff = export_onnx(job.backbone, job.config["image_size"], folder / "backbone.onnx")
    return {"onnx": {"max_abs_diff": diff, "tolerance": ONNX_TOLERANCE, "runtime": "onnxruntime CPU",
                     "opset": ONNX_OPSET}}


def _cpu_copy(backbone: "nn.Module") -> "nn.Module":
    import copy

    import torch

    net = copy.deepcopy(backbone).float().cpu().eval()
    return net.to(memory_format=torch.contiguous_format)


def _model_card(target: dict, config: dict, run: dict | None, results: dict | None, method: str) -> str:
    from gsimclr.report import markdown_table

    tags = dict.fromkeys(["self-supervised-learning", "simclr", method])
    lines = ["---", f"library_name: {target['library']}", "tags:", *(f"- {t}" for t in tags), "---", "",
             f"# {method} backbone ({config['model']}) pretrained with gsimclr", "",
             f"{config['method']} pretraining, {config['epochs']} epoch(s), {config['image_size']} px inputs, "
             f"{config['num_features']}-d features. Exported by gsimclr {__version__}.", "",
             "## Load", "", "```python", "from safetensors.torch import load_file",
             "state = load_file('model.safetensors')", target["recipe"], "```", "",
             "Inputs: RGB in [0, 1], resized to the input size, normalised with mean "
             f"{list(config['mean'])} and std {list(config['std'])}; outputs: pooled features.", ""]
    lines += ["## Training run", ""]
    if run:
        lines += ["```", str(run.get("command", "(command not recorded)")), "```", "",
                  f"gsimclr {run.get('gsimclr_version', '?')}, torch {run.get('torch', '?')}, device "
                  f"{run.get('device', '?')}, started {run.get('started', '?')}, commit {run.get('git_commit')}.", ""]
    else:
        lines += ["(no run.json beside the checkpoint: command not recorded)", ""]
    lines += ["## Results", ""]
    try:   # a hand-edited results.json may hold anything: the card then goes without the table
        table = markdown_table(results) if results and results.get("methods") else None
    except (TypeError, AttributeError, KeyError, ValueError, IndexError):
        table, results = None, None
    if table is not None:
        lines += [table, "", f"Data: {results.get('data')}.", ""]
    else:
        lines += ["(no results.json in the run folder: not evaluated)", ""]
    return "\n".join(lines)


def export_hf(backbone: "nn.Module", target: dict, config: dict, folder: Path, run_dir: Path | None,
              method: str) -> None:
    """config.json, model.safetensors and README.md (model card) in ``folder``."""
    from safetensors.torch import save

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(folder, exc) from None
    write_bytes(folder / "model.safetensors",
                save(target_state_dict(backbone, target),
                     metadata={"format": "pt", "library": target["library"], "name": target["name"]}))
    write_json(folder / "config.json", {"model_type": "gsimclr-backbone", "architecture": target, **config})
    run = _read_json(run_dir / "run.json") if run_dir else None
    results = _read_json(run_dir / "results.json") if run_dir else None
    write_text(folder / "README.md", _model_card(target, config, run, results, method))


def _write_hf(job: ExportJob, folder: Path) -> dict[str, Any]:
    export_hf(job.backbone, job.target, job.config, folder / "hf", job.run_dir, job.method)
    return {}


def _read_json(path: Path) -> dict | None:
    """A JSON object of the run folder for the model card, or None (missing, damaged, or another shape)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


EXPORT_FORMATS.register("state_dict", ExportFormat("backbone.pth, the state dict for torch.load(weights_only=True)",
                                                   ("backbone.pth",), _write_state_dict))
EXPORT_FORMATS.register("hf", ExportFormat("hf/: config.json, model.safetensors and a model card README.md",
                                           ("hf/config.json", "hf/model.safetensors", "hf/README.md"), _write_hf))
EXPORT_FORMATS.register("onnx", ExportFormat("backbone.onnx, checked against PyTorch with onnxruntime "
                                             "(needs gsimclr[export])", ("backbone.onnx",), _write_onnx,
                                             _import_onnxruntime))
FORMATS = tuple(EXPORT_FORMATS.names())


def check_formats(formats: tuple[str, ...]) -> tuple[str, ...]:
    """The formats asked for, known and with their dependencies installed (before any work)."""
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise UserError(f"--format must be among {', '.join(EXPORT_FORMATS.names())}, "
                        f"got {', '.join(unknown) or 'nothing'}")
    for name in formats:
        if EXPORT_FORMATS[name].requires is not None:
            EXPORT_FORMATS[name].requires()
    return tuple(dict.fromkeys(formats))


# ------------------------------------------------------------------------------------ the export folder


def check_export_folder(out: str | Path, overwrite: bool = False) -> Path:
    """Before any work: ``out`` is a new or empty folder, or with ``overwrite`` a previous export, in a
    place this process may write."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"export folder {out} is a file; choose another --output")
    check_output(out, "--output", folder=True)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"export folder {out} exists and is not empty; choose another --output or pass --overwrite")
        if not (out / SUMMARY).is_file():
            raise UserError(f"--overwrite replaces only a previous export (a folder holding {SUMMARY}); "
                            f"{out} holds other files: choose another --output")
    return out


def remove_stale_exports(out: Path) -> int:
    """Remove the hidden temporary folders beside ``out`` that an export killed before it finished left
    (``.<name>.export-<pid>-*``, ``.<name>.old-<pid>-*``), when their process is gone. Returns how many."""
    removed = 0
    if not out.parent.is_dir():
        return 0
    for tag in (_TEMP_TAG, ".old-"):
        for path in out.parent.glob(f".{out.name}{tag}*"):
            pid = path.name[len(f".{out.name}{tag}"):].split("-", 1)[0]
            if path.is_dir() and not path.is_symlink() and pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a folder of ours from before is stale too (we are not writing it now)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def export_backbone(backbone: "nn.Module", target: dict, config: dict, out: str | Path,
                    formats: tuple[str, ...] = FORMATS, run_dir: Path | None = None, method: str = "simclr",
                    overwrite: bool = False) -> dict[str, Any]:
    """Write the chosen ``formats`` of ``backbone`` into ``out`` (see the module docstring); returns the
    summary also written to ``out/export.json``. ``config`` holds at least model, image_size, epochs,
    method and num_features (and mean/std: ImageNet's when absent)."""
    from gsimclr.transforms.augment import IMAGENET_MEAN, IMAGENET_STD

    formats = check_formats(tuple(formats))
    out = check_export_folder(out, overwrite)
    config = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), **config}
    job = ExportJob(_cpu_copy(backbone), target, config, run_dir, method)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_exports(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{_TEMP_TAG}{os.getpid()}-", dir=out.parent))
    except OSError as exc:
        raise write_error(out, exc) from None
    try:
        summary: dict[str, Any] = {"gsimclr_version": __version__, "target": target, "config": config, "files": []}
        for name in formats:
            summary.update(EXPORT_FORMATS[name].write(job, tmp))
            summary["files"] += list(EXPORT_FORMATS[name].files)
        write_json(tmp / SUMMARY, summary)
        normal_permissions(tmp)
        _replace_folder(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(out, exc) from None
    except UserError as exc:  # name the export folder, not its temporary twin
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(str(exc).replace(str(tmp), str(out))) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _replace_folder(new: Path, out: Path) -> None:
    """Move ``new`` to ``out``; an existing ``out`` is set aside first and removed only afterwards."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{new.name.rsplit('-', 1)[-1]}"
        out.rename(old)
    try:
        new.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)  # put the previous export back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------ exports


def locate_checkpoint(path: str | Path, method: str | None = None,
                      command: str = "export") -> tuple[Path, Path | None, str]:
    """(checkpoint, run folder or None, method) for a checkpoint file, a stage folder or a run folder."""
    from gsimclr.run_folder import CHECKPOINT

    path = Path(path)
    if not path.exists():
        raise UserError(f"{command}: checkpoint not found: {path}")
    if path.is_file():
        return path, _run_dir_of(path.parent), method or path.parent.name
    if (path / CHECKPOINT).is_file():
        return path / CHECKPOINT, _run_dir_of(path), method or path.name
    if (path / CHECKPOINT).exists():
        raise UserError(f"{command}: {path / CHECKPOINT} is not a file (a folder?); restore the checkpoint")
    from gsimclr.methods import METHODS  # torch-free: the registered methods' stage folders, in registration order

    candidates = [method] if method else METHODS.names()
    for name in candidates:
        if (path / name / CHECKPOINT).is_file():
            return path / name / CHECKPOINT, path, name
        if (path / name / CHECKPOINT).exists():
            raise UserError(f"{command}: {path / name / CHECKPOINT} is not a file (a folder?); restore the checkpoint")
    raise UserError(f"{command}: no checkpoint in {path} (expected {CHECKPOINT}, or a run folder with "
                    f"{'|'.join(candidates)}/{CHECKPOINT}" + ("" if method else "; --method picks one") + ")")


def _run_dir_of(stage: Path) -> Path | None:
    from gsimclr.run_folder import LOCK

    parent = stage.parent
    marks = ("run.json", "results.json", LOCK)
    return parent if any((parent / m).exists() for m in marks) else None


def check_not_reading(out: Path, checkpoint: Path, run_dir: Path | None) -> None:
    """A UserError when ``out`` is, contains or lies inside what the export reads: the checkpoint, its
    run folder (or its stage folder outside a run); the stage's own ``export/`` folder is allowed."""
    from gsimclr.run_folder import CHECKPOINT

    stage = checkpoint.parent
    own = stage / "export"
    if same_or_inside(checkpoint, out):
        raise UserError(f"--output {out} would replace the checkpoint {checkpoint} it exports; "
                        "choose a folder outside it")
    read = run_dir if run_dir is not None else stage if checkpoint.name == CHECKPOINT else None
    if read is None:
        return
    what = "run folder" if run_dir is not None else "stage folder"
    if same_or_inside(read, out):
        raise UserError(f"--output {out} would replace the {what} {read} it exports from; choose a folder outside it")
    if same_or_inside(out, read) and Path(out).resolve() != own.resolve():
        raise UserError(f"--output {out} lies inside the {what} {read} it exports from; choose a folder outside it "
                        f"(or leave --output out: {own})")


def export_run(path: str | Path, out: str | Path | None = None, formats: tuple[str, ...] = FORMATS,
               method: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Export the backbone of a checkpoint (or a stage or run folder); ``out`` defaults to the stage
    folder's ``export/``. Holds the run folder's lock: exclusive when ``out`` is in the run, shared
    (other readers allowed, writers refused) otherwise."""
    from gsimclr.run_folder import RunFolder

    formats = check_formats(tuple(formats))
    ckpt, run_dir, method = locate_checkpoint(path, method)
    out = Path(out) if out is not None else ckpt.parent / "export"
    check_not_reading(out, ckpt, run_dir)
    check_export_folder(out, overwrite)
    if run_dir is None:
        return _export_checkpoint(ckpt, out, formats, run_dir, method, overwrite)
    into_run = same_or_inside(out, run_dir)
    with RunFolder(run_dir).lock(shared=not into_run):
        return _export_checkpoint(ckpt, out, formats, run_dir, method, overwrite)


def _export_checkpoint(ckpt: Path, out: Path, formats: tuple[str, ...], run_dir: Path | None, method: str,
                       overwrite: bool) -> dict[str, Any]:
    from gsimclr.training.pretrain import backbone_options, load_encoder
    from gsimclr.transforms.augment import NORMALIZATIONS

    model, cfg, meta = load_encoder(ckpt)
    backbone = model.backbone
    options = {**backbone_options(cfg), "timm_kwargs": getattr(backbone, "create_kwargs", None)}
    target = target_of(cfg.model, **options)
    mean, std = NORMALIZATIONS.get(cfg.normalize, NORMALIZATIONS["imagenet"])
    config = {"model": cfg.model, "image_size": cfg.image_size, "num_features": backbone.num_features,
              "method": meta.get("method", method), "epochs": meta.get("epoch"), "checkpoint": str(ckpt),
              "normalize": cfg.normalize, "mean": list(mean), "std": list(std)}
    return export_backbone(backbone, target, config, out, formats, run_dir, method, overwrite)
