"""Device, precision and compilation choices, made once per run.

This module owns the precisions (:data:`PRECISIONS`, the ``--precision`` option's choices) and imports
PyTorch only inside its functions, so that the command line checks the option without importing it.
"""

from __future__ import annotations

import contextlib
import functools
import random
import warnings
from typing import TYPE_CHECKING

from gsimclr.errors import UserError

if TYPE_CHECKING:
    import torch

#: the ``--precision`` choices: ``auto`` picks one of the others (:func:`resolve_precision`)
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def resolve_device(name: str = "auto") -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UserError(f"--device {name}: this machine has {count} CUDA device{'s' if count > 1 else ''} "
                        f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    if device.type == "mps" and not _mps_available():
        raise UserError(f"--device {name}: MPS (Apple GPU) is not available on this machine; use auto, cpu or cuda")
    return device


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 natively: every CPU (autocast's CPU bf16 kernels), Ampere and later
    GPUs. Emulated bf16 (what ``torch.cuda.is_bf16_supported()`` reports for a V100 since torch 2.3) does
    not count: it is slower than fp16 with a gradient scaler."""
    import torch

    if device.type != "cuda":
        return True
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.3: no emulation, the plain answer is the native one
        return bool(torch.cuda.is_bf16_supported())


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """The precision a run uses: ``bf16``, ``fp16`` or ``fp32``.

    ``auto``: bf16 on a GPU that supports it, fp16 (with a gradient scaler, see :func:`grad_scaler`) on
    one that does not (V100, T4), fp32 on the CPU. A forced choice is honoured where it can run; fp16 on
    the CPU is refused with a :class:`UserError`: torch's CPU fp16 autocast is slow and has no gradient
    scaler before torch 2.3, and bf16 (same memory, fp32's range) is the CPU's half precision.

    Example:
        >>> import torch
        >>> resolve_precision(torch.device("cpu")), resolve_precision(torch.device("cpu"), "bf16")
        ('fp32', 'bf16')
    """
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if bf16_supported(device) else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32")
    if precision == "bf16" and not bf16_supported(device):
        import torch

        raise UserError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no native bf16; "
                        "use fp16 (or auto, which picks it) or fp32")
    return precision


_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}  # torch's names


def autocast(device: torch.device, precision: str = "auto"):
    """Autocast to the precision :func:`resolve_precision` picks; nothing for fp32."""
    import torch

    resolved = resolve_precision(device, precision)
    if resolved == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, _DTYPES[resolved]))


def grad_scaler(device: torch.device, precision: str = "auto"):
    """A gradient scaler, enabled only for fp16 (bf16 and fp32 have fp32's exponent range and need none).

    Use it for every step (a disabled scaler passes calls through) and checkpoint it with
    :func:`scaler_state`, so that a resumed fp16 run starts at the scale it reached.

    Example:
        >>> import torch
        >>> scaler = grad_scaler(torch.device("cpu"))
        >>> scaler.is_enabled()
        False
    """
    import torch

    enabled = resolve_precision(device, precision) == "fp16"
    try:
        return torch.amp.GradScaler(device.type, enabled=enabled)
    except (AttributeError, TypeError):  # torch < 2.3
        return torch.cuda.amp.GradScaler(enabled=enabled)


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler=None) -> None:
    """``loss.backward(); optimizer.step()`` through ``scaler`` when one is given and enabled: the
    gradients are scaled up for fp16, unscaled before the step, and a step with inf/NaN gradients is
    skipped while the scale backs off."""
    if scaler is None or not scaler.is_enabled():
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def scaler_state(scaler) -> dict | None:
    """The scaler's state as JSON-able scalars for a checkpoint's metadata; None when it is disabled."""
    import torch

    if scaler is None or not scaler.is_enabled():
        return None
    return {k: (float(v) if torch.is_tensor(v) else v) for k, v in scaler.state_dict().items()}


def restore_scaler(scaler, state: dict | None) -> None:
    """Load a state written by :func:`scaler_state` (nothing to do for a run without one)."""
    if scaler is not None and scaler.is_enabled() and state:
        scaler.load_state_dict(dict(state))


def maybe_compile(fn, device: torch.device, mode: str = "auto"):
    """torch.compile on a GPU by default (``on``/``auto``; ``max-autotune`` and ``reduce-overhead``,
    which uses CUDA graphs, are torch.compile's modes); the eager function where compilation is off.

    torch.compile compiles lazily, at the first call, so a compiler that cannot work here (no C++ or
    Triton toolchain, an unsupported GPU, a dynamo error) fails then, not when the function is wrapped:
    the returned :class:`CompiledOrEager` calls the compiled function and, when compiling fails, warns
    once and runs ``fn`` eagerly from then on. Its ``compiled`` attribute says which ran (None before the
    first call)."""
    import torch

    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return fn
    try:
        # dynamic=False: a short last batch gets a graph of its own, compiled once and reused every
        # epoch, instead of one dynamic-shape graph for every batch
        compiled = torch.compile(fn, dynamic=False, mode=mode if mode in ("max-autotune", "reduce-overhead") else None)
    except Exception as exc:  # torch.compile itself refused (an old torch, an unsupported platform)
        _compile_warning(exc)
        return fn
    return CompiledOrEager(fn, compiled)


def _compile_errors() -> tuple[type[BaseException], ...]:
    """The exception types of a failed compilation (dynamo's and inductor's), for calls after the first."""
    kinds: list[type[BaseException]] = []
    with contextlib.suppress(Exception):
        from torch._dynamo.exc import TorchDynamoException

        kinds.append(TorchDynamoException)
    with contextlib.suppress(Exception):
        from torch._inductor.exc import InductorError

        kinds.append(InductorError)
    return tuple(kinds)


def _compile_warning(exc: BaseException) -> None:
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    warnings.warn(f"torch.compile failed ({type(exc).__name__}: {first}); running eagerly (--compile off "
                  "skips the attempt)", RuntimeWarning, stacklevel=3)


class CompiledOrEager:
    """A function compiled by torch.compile that falls back to the eager ``fn`` when compiling fails:
    at its first call (any error: the compile happens there, and a genuine error of ``fn`` is raised
    again by the eager call) or at a later recompilation (a new input shape; dynamo's and inductor's
    errors only)."""

    def __init__(self, fn, compiled):
        self.fn, self.compiled_fn = fn, compiled
        self.compiled: bool | None = None
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        if self.compiled is False:
            return self.fn(*args, **kwargs)
        try:
            out = self.compiled_fn(*args, **kwargs)
        except Exception as exc:
            if self.compiled is True and not isinstance(exc, _compile_errors()):
                raise
            _compile_warning(exc)
            self.compiled = False
            return self.fn(*args, **kwargs)
        self.compiled = True
        return out


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed the global random streams (CPU and every GPU) for one epoch: a function of (seed, epoch)
    only, so a resumed run draws the same augmentations as an uninterrupted one. Each process of a
    multi-process run (``rank`` > 0) gets a stream of its own. The global stream, not a
    ``torch.Generator`` argument, so that torch.compile can trace the augmentations."""
    import numpy as np
    import torch

    entropy = [seed, epoch] if rank == 0 else [seed, epoch, rank]
    torch.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))


def random_state() -> dict:
    """torch's global random streams (the CPU's and each GPU's) as JSON-safe text, for a checkpoint taken
    within an epoch: :func:`set_random_state` puts them back, so the resumed steps draw what the uncut
    run drew."""
    import base64

    import torch

    def text(state: torch.Tensor) -> str:
        return base64.b64encode(state.numpy().tobytes()).decode("ascii")

    cuda = [text(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {"cpu": text(torch.get_rng_state()), "cuda": cuda}


def set_random_state(state: dict) -> None:
    import base64

    import torch

    def tensor(text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)

    torch.set_rng_state(tensor(state["cpu"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensor(t) for t in state["cuda"]][:torch.cuda.device_count()])
