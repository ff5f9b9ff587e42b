"""Checkpoints: weights and optimizer state in one safetensors file, the config, data fingerprint,
epoch and code version in its metadata. Written atomically. The metadata also holds a SHA-256 of
every tensor's name, type, shape and bytes (``checksum``), verified on load, and a SHA-256 of every
other metadata field (``header_checksum``, which covers ``checksum`` too), verified whenever the
metadata is read: a damaged or hand-edited file (``"epoch": 1`` made ``2``, another ``image_size``)
is a one-line error naming it, never silently wrong weights, a skipped epoch or a wrong-size export.

A header that claims this version (or any from :data:`CHECKSUMS_REQUIRED_SINCE` on) must carry both
checksums, so that they cannot be stripped: renaming or deleting them makes the file refused, not
read as an older one. Only a file that names an older version (gsimclr 0.1.0, whose early builds wrote
neither or only the tensors' checksum) is read without them, with a one-line note naming the file; a
header that names no gsimclr version was not written by gsimclr, and is refused.

Example:
    >>> import torch, tempfile, os
    >>> net = torch.nn.Linear(2, 2)
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.safetensors")
    >>> save_checkpoint(path, net, meta={"epoch": 3})
    >>> load_checkpoint(path, net)["epoch"]
    3
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gsimclr import __version__
from gsimclr.errors import UserError
from gsimclr.io import atomic_path

HEADER_CHECKSUM = "header_checksum"
CHECKSUMS_REQUIRED_SINCE = "0.2.0"
"""The first version whose checkpoints must carry both checksums (every 0.2.0 checkpoint does)."""
_MODEL = "model."
_OPTIM = "optimizer."


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    meta: dict[str, Any] | None = None) -> None:
    tensors = {_MODEL + k: v.detach().contiguous() for k, v in model.state_dict().items()}
    header: dict[str, Any] = {"gsimclr_version": __version__, **(meta or {})}
    if optimizer is not None:
        state = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, slots in state["state"].items():
            for key, value in slots.items():
                if torch.is_tensor(value):
                    tensors[f"{_OPTIM}{idx}.{key}"] = value.detach().contiguous()
                else:
                    scalars.setdefault(str(idx), {})[key] = value
        header["optimizer"] = {"param_groups": state["param_groups"], "scalars": scalars}
    tensors = {k: v.cpu() for k, v in tensors.items()}
    header["checksum"] = tensor_checksum(tensors)
    header = json.loads(json.dumps(header))  # as it will be read back (tuples as lists), then sealed
    header[HEADER_CHECKSUM] = header_checksum(header)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"gsimclr": json.dumps(header)})


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` (in name order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def header_checksum(header: dict[str, Any]) -> str:
    """SHA-256 over every metadata field but :data:`HEADER_CHECKSUM` itself (canonical JSON, sorted keys)."""
    fields = {k: v for k, v in header.items() if k != HEADER_CHECKSUM}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's metadata, its :data:`HEADER_CHECKSUM` verified (and removed); a UserError naming
    the file when it is missing, not a file, unreadable or edited."""
    from safetensors import safe_open

    if os.path.isdir(path):
        raise UserError(f"checkpoint {path} is a folder, not a checkpoint file; restore the file or retrain that stage")
    if not os.path.exists(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            header = json.loads((f.metadata() or {}).get("gsimclr", "{}"))
    except (SafetensorError, OSError, ValueError) as exc:
        reason = " ".join((getattr(exc, "strerror", None) or str(exc)).split())[:160]
        raise UserError(f"cannot read checkpoint {path} ({reason}); restore the file or retrain that stage") from None
    if not isinstance(header, dict) or not header:
        raise UserError(f"checkpoint {path} has no gsimclr metadata; restore the file or retrain that stage")
    expected = header.pop(HEADER_CHECKSUM, None)
    if expected is not None and header_checksum(header) != expected:
        raise UserError(f"checkpoint {path} is damaged or was edited (its metadata does not match its checksum); "
                        "restore the file or retrain that stage")
    if expected is None or "checksum" not in header:
        _older_version(path, header)
    return header


def _older_version(path: str | os.PathLike, header: dict[str, Any]) -> None:
    """A header without both checksums: read (with a one-line note) only when it names a version from
    before :data:`CHECKSUMS_REQUIRED_SINCE`; else a UserError, since they were stripped."""
    version = header.get("gsimclr_version")
    if not isinstance(version, str) or not version.strip():
        raise UserError(f"checkpoint {path} names no gsimclr version and carries no checksums: it was not written "
                        "by gsimclr, or was edited; restore the file or retrain that stage")
    if not _release(version) < _release(CHECKSUMS_REQUIRED_SINCE):
        raise UserError(f"checkpoint {path} says gsimclr {version} but lacks the checksums every checkpoint of "
                        f"gsimclr {CHECKSUMS_REQUIRED_SINCE} or later carries: it is damaged or was edited; restore "
                        "the file or retrain that stage")
    unchecked = "its tensors verified, its metadata" if "checksum" in header else "its tensors and metadata"
    warnings.warn(f"checkpoint {path} comes from gsimclr {version}, before checkpoints carried checksums of "
                  f"their metadata: {unchecked} taken as they are", stacklevel=3)


def _release(version: str) -> tuple[int, ...]:
    """The release numbers of a version string ("0.2.0.dev1" -> (0, 2, 0)); an unreadable version reads
    as the newest, so that it must carry checksums."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    if match is None:
        return (float("inf"),)  # type: ignore[return-value]
    numbers = tuple(int(part) for part in match.group(1).split("."))
    return numbers + (0,) * (3 - len(numbers))


def _mismatch(target: dict[str, Any], weights: dict[str, Any], exc: BaseException) -> str:
    """What differs between a model's state dict and a checkpoint's weights, on one line (PyTorch's own
    message spans many lines and its first says nothing)."""
    missing = sorted(target.keys() - weights.keys())
    unexpected = sorted(weights.keys() - target.keys())
    shapes = sorted(k for k in target.keys() & weights.keys() if tuple(target[k].shape) != tuple(weights[k].shape))
    shown = [f"{k} {tuple(weights[k].shape)} vs {tuple(target[k].shape)}" for k in shapes]
    problems = [f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})"
                for keys, what in ((missing, "missing"), (unexpected, "unexpected"), (shown, "of another shape"))
                if keys]
    return "; ".join(problems) + " keys" if problems else " ".join(str(exc).split())[:300]


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Load weights (and optimizer state) in place; returns the metadata."""
    meta = read_meta(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        reason = " ".join((getattr(exc, "strerror", None) or str(exc)).split())[:160]
        raise UserError(f"cannot read checkpoint {path} ({reason}); restore the file or retrain that stage") from None
    expected = meta.pop("checksum", None)
    if expected is not None and tensor_checksum(tensors) != expected:
        raise UserError(f"checkpoint {path} is damaged (its checksum does not match its bytes); "
                        "retrain that stage or restore the file")
    weights = {k[len(_MODEL):]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise UserError(f"checkpoint {path} does not match the model: {_mismatch(model.state_dict(), weights, exc)}") from None
    if optimizer is not None and "optimizer" in meta:
        opt_meta = meta.pop("optimizer")
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith(_OPTIM):
                idx, slot = key[len(_OPTIM):].split(".", 1)
                state.setdefault(int(idx), {})[slot] = value
        for idx, slots in opt_meta["scalars"].items():
            state.setdefault(int(idx), {}).update(slots)
        optimizer.load_state_dict({"state": state, "param_groups": opt_meta["param_groups"]})
    else:
        meta.pop("optimizer", None)
    return meta
