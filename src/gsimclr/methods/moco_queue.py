"""MoCo's queue size against the data, without PyTorch: its default (:func:`queue_size`) and the rule
it must meet (:func:`check_queue`), so that the command line checks them before PyTorch is imported
when ``--train-limit`` gives the number of images, and the trainer checks them on the data it reads.

What the loss guarantees (:class:`gsimclr.methods.moco.MoCoLoss`): a query's own image is never among
its negatives; the queue keeps each key's image index, and every key of the query's own image is left
out of its loss, wherever it sits in the queue. The rule here, a queue of at most *images - batch size*
keys, adds that with each image seen once per epoch, the queue holds no key of a batch's own images
during the first epoch, and later at most one of each (an older key from the previous epoch, left out).

Example:
    >>> from types import SimpleNamespace
    >>> cfg = SimpleNamespace(queue_size=None, batch_size=128)
    >>> queue_size(cfg, 1437)           # whole batches up to 1437 - 128 keys
    1280
    >>> check_queue(SimpleNamespace(queue_size=2000, batch_size=128), 1437)
    Traceback (most recent call last):
    ...
    gsimclr.errors.UserError: --queue-size 2000 with --batch-size 128 needs 2128 training images, the data has 1437: the queue holds at most images - batch size keys; give --queue-size 1309 or less
"""

from __future__ import annotations

from gsimclr.errors import UserError

#: the queue size when --queue-size is not given: MoCo v2's CIFAR size, or less on a smaller data set
DEFAULT_QUEUE = 4096


def queue_size(cfg, n_images: int) -> int:
    """``--queue-size``, or by default :data:`DEFAULT_QUEUE` keys or fewer: the most whole batches
    within n_images - batch_size keys (at least one batch)."""
    if cfg.queue_size is not None:
        return cfg.queue_size
    room = n_images - cfg.batch_size
    return max(cfg.batch_size, min(DEFAULT_QUEUE, room - room % cfg.batch_size))


def check_queue(cfg, n_images: int, counted: str = "") -> None:
    """A one-line UserError when MoCo's queue (``--queue-size``, or its default) cannot hold at most
    ``n_images`` - ``--batch-size`` keys; the message names the options the user gave (``counted``: where
    the number of images comes from, e.g. ``"--train-limit 150"``; default: the data)."""
    has = f"{counted} keeps at most {n_images}" if counted else f"the data has {n_images}"
    room = n_images - cfg.batch_size
    size = queue_size(cfg, n_images)
    if size <= room:
        return
    smaller_batch = f"--batch-size {n_images // 2} or less"
    if cfg.queue_size is None:       # the default needs a whole batch of room
        raise UserError(f"--batch-size {cfg.batch_size} leaves no room for MoCo's queue ({has} training "
                        f"images): the queue (by default whole batches) holds at most images - batch size keys; give "
                        + (f"--queue-size {room} or less, or " if room >= 1 else "") + smaller_batch)
    fix = f"give --queue-size {room} or less" if room >= 1 else f"give {smaller_batch}"
    raise UserError(f"--queue-size {cfg.queue_size} with --batch-size {cfg.batch_size} needs "
                    f"{cfg.queue_size + cfg.batch_size} training images, {has}: the queue holds at "
                    f"most images - batch size keys; {fix}")
