"""Evaluations of a pretrained encoder: the built-in registrations, in table order (linear probes at
P1/P2/P3, the standard linear protocol, weighted kNN, fine-tuning on a label fraction). Each
implementation lives in its own module and is imported only when it runs (see
:mod:`gsimclr.evaluation.registry`).

Two linear protocols, chosen by ``--linear-protocol`` (``features``, ``standard`` or ``both``); the
table names the protocol in each row title: "(ours)" for Adam on standardised, unaugmented features,
"(standard)" for solo-learn's and lightly's SGD on the frozen backbone with crop and flip.

``--eval-protocol notebook`` runs the G-SimCLR notebooks' linear probes and fine-tuning
(:mod:`gsimclr.evaluation.notebook`) in place of ours.

    >>> EVALUATIONS.names()
    ['linear', 'linear_standard', 'knn', 'finetune', 'linear_notebook', 'finetune_notebook']
"""

from gsimclr.evaluation.registry import EVALUATIONS, Evaluation, check_evaluations, enabled_evaluations, table_rows


def _eval_protocol(cfg) -> str:
    return getattr(cfg, "eval_protocol", "gsimclr")


def _protocols(results_or_cfg) -> str:
    value = results_or_cfg.get("linear_protocol") if isinstance(results_or_cfg, dict) else \
        getattr(results_or_cfg, "linear_protocol", None)
    return value or "features"  # runs from before the option had only ours


EVALUATIONS.register("linear", Evaluation(
    name="linear", command="linear-eval", help="linear classifiers on frozen features at P1, P2 and P3",
    sections=("linear",), run="gsimclr.evaluation.linear:run_linear",
    rows=lambda value, results: [(p, f"Linear {p} (ours)", (value or {}).get(p)) for p in ("P1", "P2", "P3")]
    if _protocols(results) != "standard" else [],
    enabled=lambda cfg: _protocols(cfg) != "standard" and _eval_protocol(cfg) == "gsimclr"))
EVALUATIONS.register("linear_standard", Evaluation(
    name="linear_standard", command="linear-standard",
    help="the standard linear protocol (SGD on the frozen backbone, crop + flip, as solo-learn and lightly)",
    sections=("linear",), run="gsimclr.evaluation.standard_linear:run_standard_linear",
    rows=lambda value, results: [("linear_standard", "Linear P3 (standard)", (value or {}).get("top1"))]
    if _protocols(results) != "features" else [],
    enabled=lambda cfg: _protocols(cfg) != "features"))
EVALUATIONS.register("knn", Evaluation(
    name="knn", command="knn", help="weighted kNN accuracy on frozen backbone features (P3)", sections=("knn",),
    run="gsimclr.evaluation.knn:run_knn", check="gsimclr.evaluation.knn:check_knn",
    rows=lambda value, results: [("knn", f"kNN (k={results.get('knn_k', 200)})", value)]))
EVALUATIONS.register("finetune", Evaluation(
    name="finetune", command="finetune", help="fine-tune the pretrained backbone on a fraction of the labels",
    sections=("finetune",), run="gsimclr.evaluation.classifier:run_finetune",
    enabled=lambda cfg: _eval_protocol(cfg) == "gsimclr",
    rows=lambda value, results: [("finetune", f"Fine-tune ({results.get('label_fraction', 0.1) * 100:g}% labels)",
                                  value)]))

EVALUATIONS.register("linear_notebook", Evaluation(
    name="linear_notebook", command="linear-eval-notebook",
    help="the notebooks' linear evaluation: a Dense softmax on raw frozen features at P1, P2 and P3, Adam, early "
         "stopping", sections=("linear", "protocol"), run="gsimclr.evaluation.notebook:run_linear_notebook",
    check="gsimclr.evaluation.notebook:check_linear_notebook",
    enabled=lambda cfg: _eval_protocol(cfg) == "notebook",
    rows=lambda value, results: [(p, f"Linear {p} (notebook protocol)", ((value or {}).get(p) or {}).get("top1"))
                                 for p in ("P1", "P2", "P3")]))
EVALUATIONS.register("finetune_notebook", Evaluation(
    name="finetune_notebook", command="finetune-notebook",
    help="the notebooks' fine-tuning: a Dense head on the frozen encoder, then every layer at a low rate, early "
         "stopping", sections=("finetune", "protocol"), run="gsimclr.evaluation.notebook:run_finetune_notebook",
    check="gsimclr.evaluation.notebook:check_finetune_notebook",
    enabled=lambda cfg: _eval_protocol(cfg) == "notebook",
    rows=lambda value, results: [("finetune", f"Fine-tune ({results.get('label_fraction', 0.1) * 100:g}% labels, "
                                  "notebook protocol)", (value or {}).get("top1"))]))

__all__ = ["EVALUATIONS", "Evaluation", "check_evaluations", "enabled_evaluations", "table_rows"]
