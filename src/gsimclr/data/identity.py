"""What an image set holds, as a digest of its content: the data identity a run's stages record.

An image set has two names. Its ``fingerprint`` (:func:`gsimclr.data.cache.fingerprint`) covers where
its files are and when they last changed (absolute paths, sizes, modification times, decoding
options): cheap to compute before anything is decoded, and right for a cache. It is wrong for
``--resume``: the same images copied, moved, re-downloaded or mounted anew (a new modification time)
are the same data, and a long run must continue on them. :func:`content_id` is what resume compares:
a SHA-256 of the pixels, labels and class names, whatever files they came from.

Its cost (measured on this project's 2-core CPU): 0.12 s for CIFAR-10's 50,000 decoded training images
(153 MB), once per image set per process (kept on the object); a set read from the decoded-image cache
brings the id the cache computed when it stored it (:func:`remember`), so a large one is not read whole. An encoded JPEG store is not read for it:
its id hashes the store's per-MiB CRC-32 list (written when the store was built) and its index arrays.

Example:
    >>> import numpy as np
    >>> from gsimclr.data.dataset import ImageData
    >>> a = ImageData(np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1]), fingerprint="/here, mtime 1")
    >>> b = ImageData(np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1]), fingerprint="/there, mtime 2")
    >>> content_id(a) == content_id(b)
    True
    >>> content_id(a) == content_id(a.subset(np.array([1, 0])))
    False
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

_ATTRIBUTE = "_gsimclr_content_id"
_CHUNK = 64 << 20  # bytes hashed at a time: a memory-mapped set is read once, in order, never all at once


def content_id(data: Any) -> str:
    """A 24-hex-digit digest of what ``data`` holds (see the module); the ``fingerprint`` of a set of
    a kind this module does not know (a plug-in's data source that gives neither images nor a store)."""
    known = getattr(data, "__dict__", {}).get(_ATTRIBUTE)
    if known is not None:
        return known
    digest = hashlib.sha256()
    if isinstance(getattr(data, "images", None), np.ndarray):
        _update_array(digest, data.images)
    elif callable(getattr(data, "content_parts", None)):
        for part in data.content_parts():
            _update_array(digest, np.asarray(part))
    else:
        return str(getattr(data, "fingerprint", ""))
    labels = getattr(data, "labels", None)
    _update_array(digest, np.zeros(0, np.int64) if labels is None else np.asarray(labels, np.int64))
    digest.update(json.dumps(getattr(data, "classes", None)).encode())
    value = digest.hexdigest()[:24]
    try:
        data.__dict__[_ATTRIBUTE] = value
    except (AttributeError, TypeError):  # an object without a __dict__: computed each time
        pass
    return value


def remember(data: Any, value: str) -> None:
    """Give ``data`` its content id without hashing it: one the decoded-image cache computed when it stored
    the same images (its sealed ``meta.json`` keeps it), so a large cached set is not read whole at start."""
    data.__dict__[_ATTRIBUTE] = value


def _update_array(digest, array: np.ndarray) -> None:
    digest.update(f"{array.dtype.str}|{array.shape}|".encode())
    if array.size == 0:
        return
    rows = array.reshape(len(array), -1) if array.ndim > 1 else array.reshape(-1, 1)
    step = max(1, _CHUNK // max(1, rows.shape[1] * array.itemsize))
    for start in range(0, len(rows), step):
        digest.update(np.ascontiguousarray(rows[start:start + step]).data)
