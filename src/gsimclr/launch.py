"""What torchrun tells a process about its place in the world (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``),
read and checked without importing PyTorch.

These variables only say how to *join* a process group; once joined, the rank is the group's
(:func:`gsimclr.distributed.current_world`), and a process that joined none is a world of one whatever
``RANK`` says. Nonsense (``RANK=abc``, ``RANK=3`` with ``WORLD_SIZE=2``, a negative value) is a
one-line :class:`~gsimclr.errors.UserError` before any work.

Example:
    >>> launch_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    LaunchEnvironment(rank=1, world_size=2, local_rank=1)
    >>> launch_environment({}) is None
    True
    >>> launch_environment({"RANK": "abc", "WORLD_SIZE": "2"})
    Traceback (most recent call last):
    ...
    gsimclr.errors.UserError: RANK must be a whole number >= 0, got 'abc' (torchrun sets RANK, WORLD_SIZE and LOCAL_RANK)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from gsimclr.errors import UserError

VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class LaunchEnvironment:
    rank: int
    world_size: int
    local_rank: int


def _number(env: Mapping[str, str], name: str, default: int | None = None, minimum: int = 0) -> int | None:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise UserError(f"{name} must be a whole number >= {minimum}, got {raw!r} "
                        "(torchrun sets RANK, WORLD_SIZE and LOCAL_RANK)")
    return value


def launch_environment(env: Mapping[str, str] | None = None) -> LaunchEnvironment | None:
    """The launcher's variables, checked; None when no launcher set ``WORLD_SIZE`` (a plain process,
    whatever ``RANK`` or ``LOCAL_RANK`` say, which are still checked)."""
    env = os.environ if env is None else env
    rank = _number(env, "RANK")
    local_rank = _number(env, "LOCAL_RANK")
    size = _number(env, "WORLD_SIZE", minimum=1)
    if size is None:
        return None
    rank = 0 if rank is None else rank
    local_rank = rank if local_rank is None else local_rank
    if rank >= size:
        raise UserError(f"RANK {rank} is not below WORLD_SIZE {size} (ranks count from 0)")
    if local_rank > rank:
        raise UserError(f"LOCAL_RANK {local_rank} is larger than RANK {rank}")
    return LaunchEnvironment(rank, size, local_rank)
