"""Starting a backbone from local weights (``--init PATH``).

``PATH`` is a torchvision or timm state dict (``.pth``/``.pt``/``.bin`` saved with ``torch.save``, or
``.safetensors``), a folder written by ``gsimclr export`` (its ``model.safetensors``), or one of our
checkpoints (keys ``model.backbone.*``). Prefixes are matched, not guessed from the file name: the
keys are tried as they are, under the backbone's ``net.`` and with ``model.backbone.``, ``backbone.``,
``module.`` or ``state_dict`` wrappers removed, and the reading that fits the backbone best is used.
A classifier in the file (``fc.*``, ``head.*``, ``classifier.*``, absent from a backbone) is dropped;
any other missing, unexpected or differently shaped key is a one-line :class:`UserError` naming the
first few.

Example:
    >>> import torch, tempfile, os
    >>> from torchvision.models import resnet18
    >>> from gsimclr.models import create_backbone
    >>> path = os.path.join(tempfile.mkdtemp(), "r18.pth")
    >>> torch.save(resnet18().state_dict(), path)       # a torchvision state dict, with its fc
    >>> report = load_init_weights(create_backbone("resnet18"), path)
    >>> report["loaded"], report["dropped"]
    (120, ['fc.bias', 'fc.weight'])
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from gsimclr.errors import UserError

WRAPPERS = ("model.backbone.", "backbone.", "module.", "model.", "encoder.")
CLASSIFIER_PREFIXES = ("fc.", "head.", "classifier.", "head_dist.", "last_linear.")
SHOWN = 3  # keys named in an error


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors in ``path`` (safetensors or a torch pickle, tensors only); UserError when unreadable."""
    path = Path(path).expanduser()
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"
    if not path.is_file():
        raise UserError(f"--init: no such weights file: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:  # many formats, many failures: all of them mean "not weights we can read"
        raise UserError(f"--init: cannot read weights from {path}: not a state dict of tensors saved with torch.save "
                        "or safetensors (a gsimclr checkpoint or export folder also works)") from None
    for key in ("state_dict", "model", "model_state_dict"):  # common training-checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"--init: {path} holds no state dict of tensors")
    return state


def _readings(state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The file's keys as they are, with one wrapper prefix removed, each also under ``net.``."""
    found = [state]
    for prefix in WRAPPERS:
        stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if stripped:
            found.append(stripped)
    return found + [{"net." + k: v for k, v in s.items()} for s in found]


def _is_classifier(key: str) -> bool:
    bare = key[4:] if key.startswith("net.") else key
    return bare.startswith(CLASSIFIER_PREFIXES)


def match_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "--init") -> tuple[dict, list]:
    """(the state dict to load into ``model`` strictly, the dropped classifier keys); UserError on a mismatch."""
    target = model.state_dict()
    best = max(_readings(state), key=lambda s: len(target.keys() & s.keys()))
    dropped = sorted(k for k in best.keys() - target.keys() if _is_classifier(k))
    missing = sorted(target.keys() - best.keys())
    unexpected = sorted(best.keys() - target.keys() - set(dropped))
    shapes = sorted(k for k in target.keys() & best.keys() if target[k].shape != best[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:SHOWN])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:SHOWN])})")
    if shapes:
        problems.append(f"{len(shapes)} of another shape (e.g. " + ", ".join(
            f"{k} {tuple(best[k].shape)} vs {tuple(target[k].shape)}" for k in shapes[:SHOWN]) + ")")
    if problems:
        raise UserError(f"{source}: the weights do not fit the backbone: {'; '.join(problems)} keys")
    return {k: best[k] for k in target}, [k[4:] if k.startswith("net.") else k for k in dropped]


def load_init_weights(backbone: nn.Module, path: str | os.PathLike) -> dict:
    """Load the weights in ``path`` into ``backbone`` (strictly, after matching); returns what was done."""
    state, dropped = match_state_dict(backbone, read_state_dict(path))
    backbone.load_state_dict(state, strict=True)
    return {"path": str(path), "loaded": len(state), "dropped": dropped}
