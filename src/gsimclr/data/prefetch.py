"""Load the next batches in a background thread while the current step runs.

:class:`Prefetcher` walks a batch sampler (anything that yields index arrays, such as the batch
samplers the training loop receives) in one background thread, calls ``load(step, indices)`` on each
batch and keeps at most ``depth`` loaded batches in a bounded queue; iterating it yields
``(indices, loaded)`` in the sampler's order. Errors in ``load`` are raised in the consuming thread;
leaving the loop early (``break``, an exception) or :meth:`Prefetcher.close` stops the thread.

Example:
    >>> batches = [[0, 1], [2, 3], [4]]
    >>> with Prefetcher(batches, lambda step, idx: sum(idx)) as loaded:
    ...     [total for _, total in loaded]
    [1, 5, 4]
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

_DONE = object()


class Prefetcher:
    """Iterate ``(indices, load(step, indices))`` over ``batches``, loading ``depth`` batches ahead."""

    def __init__(self, batches: Iterable, load: Callable[[int, Any], Any], depth: int = 2):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.batches, self.load, self.depth = batches, load, depth
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self.batches)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _put(self, item) -> bool:
        """Put ``item`` on the queue unless stopped; False when stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for step, indices in enumerate(self.batches):
                if self._stop.is_set() or not self._put((indices, self.load(step, indices))):
                    return
            self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)

    def __iter__(self):
        self.close()
        self._stop = threading.Event()
        self._queue = queue.Queue(self.depth)
        self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the background thread and wait for it (it finishes the batch it is loading)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
