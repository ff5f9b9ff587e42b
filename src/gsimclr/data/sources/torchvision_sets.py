"""Torchvision data sets: ``cifar10[:ROOT]``, ``cifar100[:ROOT]``, ``stl10[:ROOT]`` and
``stl10-unlabeled[:ROOT]`` (STL-10 with its 100,000 unlabelled images as the train split), under ROOT
(default :data:`DEFAULT_TORCHVISION_ROOT`), downloaded when missing, read from their numpy arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gsimclr.data import cache as decoded_cache
from gsimclr.data.dataset import ImageData
from gsimclr.data.sources.base import DataSource, Request, register_source
from gsimclr.data.sources.decoding import resize_square
from gsimclr.errors import UserError

DEFAULT_TORCHVISION_ROOT = "~/.cache/gsimclr/datasets"
DOWNLOAD_PROBE_SECONDS = 10.0
"""How long the download server may take to answer before a missing data set is refused (name
resolution included: a lookup that hangs without network has no timeout of its own)."""
DOWNLOAD_STALL_SECONDS = 120.0
"""How long a download may receive nothing before it fails (urllib's sockets wait forever otherwise)."""
TORCHVISION_SETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10",
                    "stl10-unlabeled": "STL-10 (train: its 100,000 unlabelled images)"}


def _load_torchvision(name: str, root: str | None, split: str, image_size: int | None) -> ImageData | None:
    """CIFAR-10/100 or STL-10 through torchvision, read from its numpy arrays (no per-image loop)."""
    root = str(Path(root or DEFAULT_TORCHVISION_ROOT).expanduser().resolve())
    kwargs = _torchvision_split(name, split)
    if kwargs is None:
        return None
    dataset = _open_torchvision(name, root, kwargs)
    if name.startswith("stl10"):
        images = np.ascontiguousarray(dataset.data.transpose(0, 2, 3, 1))  # NCHW -> NHWC
        labels = None if kwargs["split"] == "unlabeled" else dataset.labels
    else:
        images, labels = dataset.data, dataset.targets
    if image_size is not None and image_size != images.shape[1]:
        images = resize_square(images, image_size)
    classes = None if labels is None else getattr(dataset, "classes", None)
    key = decoded_cache.fingerprint(kind=name, root=root, split=split, image_size=image_size)
    return ImageData(images, labels, classes, name, key)


def _torchvision_split(name: str, split: str) -> dict | None:
    """Constructor arguments selecting ``split``, or None when the data set has no such split.

    ``stl10-unlabeled`` is STL-10 with the 100,000 unlabelled images as its train split.
    """
    if name in ("cifar10", "cifar100"):
        return {"train": split == "train"} if split in ("train", "test") else None
    train = "unlabeled" if name == "stl10-unlabeled" else "train"
    stl_split = {"train": train, "test": "test", "unlabeled": "unlabeled"}.get(split)
    return None if stl_split is None else {"split": stl_split}


def _open_torchvision(name: str, root: str, kwargs: dict):
    """The torchvision data set, downloaded only when its files are missing or damaged."""
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}.get(name, datasets.STL10)
    try:
        return cls(root, download=False, **kwargs)
    except RuntimeError:  # not found or corrupted: try downloading
        pass
    import socket

    from gsimclr.data.sources import hf  # imported here: the sources register in the order of their imports

    url = getattr(cls, "url", "")
    if url and not hf.hub_reachable(url, timeout=DOWNLOAD_PROBE_SECONDS):
        raise UserError(f"{name} is not at {root} and its download server does not answer within "
                        f"{DOWNLOAD_PROBE_SECONDS:g} s ({url}): connect, or put the data set there and give "
                        f"--data {name}:ROOT")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_STALL_SECONDS)
    try:
        return cls(root, download=True, **kwargs)
    except Exception as exc:  # network, checksum or archive failure
        detail = " ".join(str(exc).split())
        raise UserError(f"{name} is not at {root} and the download failed: {detail}") from exc
    finally:
        socket.setdefaulttimeout(previous)


def _register(name: str, title: str) -> None:
    def load(root: str | None, request: Request) -> ImageData | None:
        return _load_torchvision(name, root or None, request.split, request.image_size)

    register_source(name, DataSource(f"{name}[:ROOT]", f"torchvision {title} under ROOT (default "
                                     f"{DEFAULT_TORCHVISION_ROOT}), downloaded when missing", load))


for _name, _title in TORCHVISION_SETS.items():
    _register(_name, _title)
