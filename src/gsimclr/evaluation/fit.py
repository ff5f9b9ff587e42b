"""One training loop for every supervised evaluation: the linear probes (ours on standardised
features, the standard protocol on the frozen backbone, the notebooks' Dense layer), the head of
fine-tuning and fine-tuning itself, and the supervised baselines (ours and the notebooks').

:func:`fit` trains a module on a batch source with a loss: the optimiser, the learning-rate
schedule, the epoch order and the precision come from one :class:`FitOptions`; early stopping (and
the split it watches) from one :class:`Selection`. Every step runs the same way: the loss under
:func:`gsimclr.runtime.autocast` at the run's ``--precision``, backward and step through
:func:`gsimclr.runtime.backward_step` with a :func:`gsimclr.runtime.grad_scaler` (enabled for fp16
only), so no evaluation trains at another precision or without the scaler fp16 needs.

A batch source has a length (samples) and ``batches(order, epoch)``, which yields one batch per index
tensor of ``order``: (features, labels) of tensors (:class:`gsimclr.evaluation.images.TensorBatches`)
or augmented images (:meth:`gsimclr.evaluation.images.LabelledImages.training`). The loss gets a
batch and returns a scalar.

The epoch order: every epoch a permutation of the samples, cut in batches of ``batch_size`` (the
last one short). ``shuffle`` names the random stream that draws it (``torch``: a seeded
``torch.Generator``; ``numpy``: a seeded ``numpy.random.Generator``), kept per evaluation so that
results reproduce across releases; ``lone="merge"`` joins a last batch of one sample to the batch
before (BatchNorm cannot train on one sample; a single sample gives no batch).

Example:
    >>> import torch
    >>> from gsimclr.evaluation.images import TensorBatches
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(200, 5); y = (x[:, 0] > 0).long()
    >>> clf = torch.nn.Linear(5, 2)
    >>> summary = fit(clf, TensorBatches(x, y), lambda b: F.cross_entropy(clf(b[0]), b[1]),
    ...               FitOptions(epochs=20, lr=0.05, batch_size=32))
    >>> summary["epochs_run"], score(clf, [(x, y)])[1] > 90
    (20, True)
    >>> epoch_batches(torch.arange(5), 2, "merge")
    [tensor([0, 1]), tensor([2, 3, 4])]
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from gsimclr.errors import UserError
from gsimclr.evaluation.early_stopping import EarlyStopping
from gsimclr.evaluation.registry import SELECT_ON
from gsimclr.runtime import autocast, backward_step, grad_scaler

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "constant")
SHUFFLES = ("torch", "numpy")
LONE = ("keep", "merge")
KERAS_ADAM_EPS = 1e-7


@dataclass(frozen=True)
class FitOptions:
    """How :func:`fit` trains."""

    epochs: int
    lr: float
    batch_size: int = 64
    optimizer: str = "adam"      # adam, or sgd (with ``momentum``, ``nesterov``)
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    eps: float = 1e-8            # Adam's epsilon (Keras': KERAS_ADAM_EPS)
    schedule: str = "cosine"     # cosine annealing over every step, or a constant rate
    shuffle: str = "torch"       # the random stream of the epoch order (see the module docstring)
    lone: str = "keep"           # a last batch of one sample: keep it, or merge it into the one before
    seed: int = 0
    precision: str = "auto"      # gsimclr.runtime.PRECISIONS
    progress: str | None = None  # a progress bar over the epochs, with this label

    def __post_init__(self) -> None:
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("shuffle", SHUFFLES),
                              ("lone", LONE)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.batch_size < 1 or self.epochs < 0:
            raise ValueError(f"batch_size must be positive and epochs >= 0, got {self.batch_size}, {self.epochs}")

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                   nesterov=self.nesterov)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay, eps=self.eps)


@dataclass(frozen=True)
class Selection:
    """Early stopping on a validation loss (Keras' ``EarlyStopping``, see
    :mod:`gsimclr.evaluation.early_stopping`) and the split it watches: the test set (``select_on="test"``,
    the notebooks) or a stratified ``holdout_fraction`` of the training samples (``"holdout"``)."""

    patience: int = 2
    min_delta: float = 0.0
    restore: str = "on_stop"
    select_on: str = "test"
    holdout_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.select_on not in SELECT_ON:
            raise ValueError(f"select_on must be one of {', '.join(SELECT_ON)}, got {self.select_on!r}")

    @classmethod
    def of(cls, cfg) -> "Selection":
        """The selection a run's config asks for (``--es-patience``, ``--es-restore``, ``--select-on``,
        ``--holdout-fraction``)."""
        return cls(patience=cfg.es_patience, restore=cfg.es_restore, select_on=cfg.select_on,
                   holdout_fraction=cfg.holdout_fraction)

    def early_stopping(self) -> EarlyStopping:
        return EarlyStopping(self.patience, self.min_delta, self.restore)

    def split(self, labels: np.ndarray, seed: int, what: str = "labelled samples") -> tuple[np.ndarray, np.ndarray | None]:
        """(training indices, held-out indices or None) of ``labels``: with ``select_on="holdout"`` a
        stratified ``holdout_fraction`` is held out for model selection."""
        if self.select_on == "test":
            return np.arange(len(labels)), None
        from gsimclr.data.splits import label_subset

        held = label_subset(labels, self.holdout_fraction, seed)
        if len(held) >= len(labels):
            raise UserError(f"--holdout-fraction {self.holdout_fraction} leaves none of the {len(labels)} {what} "
                            "for training; use more data or --select-on test")
        return np.setdiff1d(np.arange(len(labels)), held), held


def epoch_batches(order: torch.Tensor, batch_size: int, lone: str = "keep") -> list[torch.Tensor]:
    """``order`` cut in batches of ``batch_size``; ``lone="merge"``: a last batch of one joins the one before."""
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if lone == "merge" and batches and len(batches[-1]) == 1:
        last = batches.pop()
        if batches:
            batches[-1] = torch.cat([batches[-1], last])
    return batches


class _Order:
    """The epoch orders of ``n`` samples (see the module docstring)."""

    def __init__(self, n: int, options: FitOptions):
        self.n, self.options = n, options
        self.numpy = np.random.default_rng(options.seed) if options.shuffle == "numpy" else None
        self.torch = torch.Generator().manual_seed(options.seed) if options.shuffle == "torch" else None

    def steps(self) -> int:
        return len(epoch_batches(torch.arange(self.n), self.options.batch_size, self.options.lone))

    def next(self) -> list[torch.Tensor]:
        if self.numpy is not None:
            order = torch.from_numpy(self.numpy.permutation(self.n))
        else:
            order = torch.randperm(self.n, generator=self.torch)
        return epoch_batches(order, self.options.batch_size, self.options.lone)


def _device(module: nn.Module, params: list) -> torch.device:
    return params[0].device if params else next(module.parameters()).device


_RESUMABLE: contextvars.ContextVar = contextvars.ContextVar("gsimclr_resumable_fit", default=None)


@contextlib.contextmanager
def resumable(folder: str | Path, key: str) -> Iterator[None]:
    """Every :func:`fit` inside keeps its progress after each epoch in ``folder`` (one file per call, in
    call order): a stage killed in its 40th epoch continues with the 41st, and a call that had finished is
    not trained again (its module, summary and random streams are restored), to the uncut result. A file
    made under another ``key`` (other options, data or inputs) is ignored. The files are removed when the
    block ends without an error; after a kill they stay for the next run.

    The supervised baseline (hours on one CPU core) and each evaluation of a run are made resumable this
    way (:mod:`gsimclr.pipeline`)."""
    folder = Path(folder)
    token = _RESUMABLE.set({"folder": folder, "key": key, "calls": 0})
    try:
        yield
    finally:
        _RESUMABLE.reset(token)
    for path in folder.glob("fit-*.progress.pt"):   # reached only without an error: the stage is done
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


class _Progress:
    """One :func:`fit` call's progress file inside :func:`resumable` (nothing outside it)."""

    def __init__(self):
        place = _RESUMABLE.get()
        self.path = None
        if place is not None:
            self.path = place["folder"] / f"fit-{place['calls']}.progress.pt"
            self.key = place["key"]
            place["calls"] += 1

    def load(self) -> dict | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a torn or foreign file: trained again
            return None
        return state if isinstance(state, dict) and state.get("key") == self.key else None

    def save(self, state: dict) -> None:
        if self.path is None:
            return
        from gsimclr.io import atomic_path

        with atomic_path(self.path) as tmp:
            torch.save({"key": self.key, **state}, tmp)


def _random_state(order: "_Order") -> dict:
    return {"order_torch": None if order.torch is None else order.torch.get_state(),
            "order_numpy": None if order.numpy is None else repr(order.numpy.bit_generator.state),
            "torch": torch.get_rng_state()}


def _set_random_state(order: "_Order", state: dict) -> None:
    import ast

    if order.torch is not None and state.get("order_torch") is not None:
        order.torch.set_state(state["order_torch"])
    if order.numpy is not None and state.get("order_numpy") is not None:
        order.numpy.bit_generator.state = ast.literal_eval(state["order_numpy"])
    torch.set_rng_state(state["torch"])


def _early_state(es: EarlyStopping | None) -> dict | None:
    if es is None:
        return None
    return {"best": float(es.best), "best_epoch": es.best_epoch, "wait": es.wait, "epochs_run": es.epochs_run,
            "stopped_early": es.stopped_early, "restored_epoch": es.restored_epoch, "best_state": es.best_state}


def _set_early_state(es: EarlyStopping | None, state: dict | None) -> None:
    if es is None or state is None:
        return
    es.best, es.best_epoch, es.wait = state["best"], state["best_epoch"], state["wait"]
    es.epochs_run, es.stopped_early, es.restored_epoch = state["epochs_run"], state["stopped_early"], state["restored_epoch"]
    es.best_state = state["best_state"]


def fit(module: nn.Module, data, loss: Callable[[object], torch.Tensor], options: FitOptions, *,
        params: Iterable[torch.nn.Parameter] | None = None, train_mode: Callable[[], None] | None = None,
        validate: Callable[[], float] | None = None, early_stopping: EarlyStopping | None = None) -> dict:
    """Train ``module`` (its ``params``, default all) on the batch source ``data`` with ``loss(batch)``.

    Each epoch: ``train_mode()`` (default ``module.train()``), the batches in a fresh order, then, with
    ``early_stopping``, the ``validate()`` loss decides whether to stop (early stopping saves and
    restores ``module``'s weights). Returns ``{"epochs_run", ...}``: early stopping's summary when given.
    Inside :func:`resumable` it continues from its last whole epoch."""
    params = [p for p in (params if params is not None else module.parameters())]
    device = _device(module, params)
    opt = options.make_optimizer(params)
    order = _Order(len(data), options)
    sched = None
    if options.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, options.epochs * order.steps()))
    scaler = grad_scaler(device, options.precision)
    if early_stopping is not None:
        if validate is None:
            raise ValueError("early stopping needs a validation loss")
        early_stopping.start(module)
    progress = _Progress()
    kept = progress.load()
    start = 0
    if kept is not None:
        module.load_state_dict(kept["module"])
        _set_early_state(early_stopping, kept["early_stopping"])
        _set_random_state(order, kept["random"])
        if kept["done"]:   # this call had finished: as it ended, without training again
            return kept["summary"]
        opt.load_state_dict(kept["optimizer"])
        if sched is not None:
            sched.load_state_dict(kept["scheduler"])
        if scaler is not None and kept.get("scaler"):
            scaler.load_state_dict(kept["scaler"])
        start = kept["epoch"]
    epochs_run = start

    def state(done: bool, summary: dict | None = None) -> dict:
        return {"done": done, "epoch": epochs_run, "summary": summary, "module": module.state_dict(),
                "optimizer": None if done else opt.state_dict(),
                "scheduler": None if done or sched is None else sched.state_dict(),
                "scaler": None if done or scaler is None else scaler.state_dict(),
                "early_stopping": _early_state(early_stopping), "random": _random_state(order)}

    stopped = False
    for epoch in tqdm(range(start, options.epochs), desc=options.progress, unit="epoch", leave=False,
                      disable=None if options.progress else True):
        (train_mode or module.train)()
        for batch in data.batches(order.next(), epoch):
            with autocast(device, options.precision):
                value = loss(batch).float()
            opt.zero_grad(set_to_none=True)
            backward_step(value, opt, scaler)
            if sched is not None:
                sched.step()
        epochs_run = epoch + 1
        stopped = early_stopping is not None and early_stopping.update(epochs_run, validate(), module)
        if stopped:
            break
        if epochs_run < options.epochs:
            progress.save(state(False))
    if early_stopping is None:
        summary = {"epochs_run": epochs_run}
    else:
        early_stopping.finish(module)
        summary = early_stopping.summary()
    progress.save(state(True, summary))
    return summary


@torch.no_grad()
def score(module: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], precision: str = "auto",
          device: torch.device | None = None) -> tuple[float, float]:
    """(mean cross-entropy, top-1 %) of ``module`` (as it is: the caller sets its mode) over (inputs,
    labels) ``batches``."""
    total, correct, count = 0.0, 0, 0
    for x, y in batches:
        with autocast(device or x.device, precision):
            logits = module(x).float()
        total += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        count += len(y)
    return total / max(count, 1), 100.0 * correct / max(count, 1)


def chunks(x: torch.Tensor, y: torch.Tensor, size: int = 4096) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) in consecutive chunks of ``size`` (scoring tensors already on the device)."""
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


@contextlib.contextmanager
def seeded(seed: int):
    """Random draws inside (a new head's initial weights) from ``seed`` alone, whatever ran before in this
    process (PyTorch seeds its global stream at random at start-up), so an evaluation gives the same
    number from ``gsimclr run`` and from its own subcommand; the global stream continues as it was.

    >>> with seeded(0): a = torch.nn.Linear(3, 2).weight
    >>> _ = torch.randn(5)
    >>> with seeded(0): b = torch.nn.Linear(3, 2).weight
    >>> torch.equal(a, b)
    True
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def freeze(module: nn.Module) -> nn.Module:
    """``module`` in inference mode with no trainable parameter (a frozen backbone)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()
