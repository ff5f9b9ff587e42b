"""The evaluations of a pretrained encoder, one :class:`Evaluation` each in :data:`EVALUATIONS`.

The pipeline runs every registered evaluation after pretraining (``eval.json`` holds one key per
evaluation), the CLI gives each one a subcommand taking only its own option sections, and the report
asks each one for its table rows. Adding an evaluation is its own module with a ``run(ctx)``
function and one registration in :mod:`gsimclr.evaluation`::

    EVALUATIONS.register("centroid", Evaluation(
        name="centroid", command="centroid-eval", help="nearest class centroid on P3", sections=("knn",),
        run="gsimclr.evaluation.centroid:run_centroid",
        rows=lambda value, results: [("centroid", "Nearest centroid", value)]))

:data:`PROTOCOLS` are the ``--eval-protocol`` choices: ``gsimclr``'s own evaluations, or the G-SimCLR
notebooks' (Keras fit with early stopping, :mod:`gsimclr.evaluation.notebook`); each evaluation's
``enabled(cfg)`` reads it, and every evaluation keeps its own subcommand.

``run`` is the function or its ``"module:function"`` name, imported when the evaluation runs, so
that the registry (and the CLI that reads it) loads without PyTorch and a bad option fails at once.
It gets an :class:`gsimclr.evaluation.context.EvalContext` and returns a JSON-serialisable result.
``check(cfg, train, test)``, when given (a function or its ``"module:function"`` name), refuses settings
the evaluation cannot run with on these splits with a :class:`gsimclr.errors.UserError` naming them in
the evaluation's own options (never one its subcommand does not take); :func:`check_evaluations` runs
every check before any evaluation starts. ``enabled(cfg)``, when given, decides whether the pipeline runs it (an opt-in evaluation, e.g. the
standard linear protocol under ``--linear-protocol``); its subcommand runs it whatever ``enabled`` says.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import Any, Callable

from gsimclr.options import Declares
from gsimclr.registry import Registry

Rows = Callable[[Any, dict], list[tuple[str, str, "float | None"]]]
PROTOCOLS = ("gsimclr", "notebook")
# The notebook protocol's option values (no PyTorch here, so the command line checks them before importing it):
SELECT_ON = ("test", "holdout")                               # --select-on, --ae-select
LABEL_SAMPLINGS = ("stratified", "uniform", "uniform_replace")  # --label-sampling
FINETUNE_BN = ("frozen", "train")                              # --finetune-bn
BN_EVAL = ("running", "batch")                                 # --supervised-bn-eval


@dataclass(frozen=True)
class Evaluation:
    name: str                                   # the key in eval.json and results.json
    command: str                                # its CLI subcommand
    help: str
    sections: tuple[str, ...]                   # the option sections it reads (besides data and execution)
    run: str | Callable[[Any], Any]             # run(ctx) -> result, or its "module:function" name
    rows: Rows                                  # (key, row title, value) for the results table
    enabled: Callable[[Any], bool] | None = None  # enabled(cfg): does the pipeline run it (default: always)
    check: str | Callable[[Any, Any, Any], None] | None = None  # check(cfg, train, test): refuse before any work

    def __call__(self, ctx: Any) -> Any:
        return _resolve(self.run)(ctx)


def _resolve(fn: str | Callable) -> Callable:
    if isinstance(fn, str):
        module, _, attr = fn.partition(":")
        fn = getattr(importlib.import_module(module), attr)
    return fn


def _enabled(cfg: Any) -> list[str]:
    return enabled_evaluations(cfg)


#: an evaluation's declared options are options of its own subcommand and of ``run`` (section: its first)
EVALUATIONS: Registry = Registry("evaluation", selected=_enabled, section="knn", commands=("run",))


def register_evaluation(evaluation: Evaluation, declares: Declares | None = None) -> Evaluation:
    """Register ``evaluation``; its declared options (:class:`gsimclr.options.Declares`) are options of its
    subcommand and of ``run``, in its first section unless an option names another."""
    if declares is not None:
        declares = replace(declares, commands=declares.commands or (evaluation.command, "run"),
                           options=tuple(o if o.section else replace(o, section=evaluation.sections[0])
                                         for o in declares.options))
    return EVALUATIONS.register(evaluation.name, evaluation, declares=declares)


def enabled_evaluations(cfg: Any) -> list[str]:
    """The evaluations the pipeline runs for ``cfg``, in registration order."""
    return [name for name, ev in EVALUATIONS.items() if ev.enabled is None or ev.enabled(cfg)]


def check_evaluations(cfg: Any, train: Any, test: Any, names: list[str]) -> None:
    """Every named evaluation's ``check`` on these splits, before any of them runs: the first setting
    one cannot run with is a UserError."""
    for name in names:
        ev = EVALUATIONS.get(name)
        if ev.check is not None:
            _resolve(ev.check)(cfg, train, test)


def table_rows(results: dict[str, Any], method_results: dict[str, Any]) -> list[tuple[str, str, float | None]]:
    """Every evaluation's rows for one method's results (missing evaluations give empty cells)."""
    rows = []
    for ev in EVALUATIONS.values():
        rows += ev.rows(method_results.get(ev.name), results)
    return rows
