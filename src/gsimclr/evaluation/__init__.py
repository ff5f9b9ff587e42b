"""Evaluations of a pretrained encoder: the built-in registrations, in table order (linear probes at
P1/P2/P3, weighted kNN, fine-tuning on a label fraction). Each implementation lives in its own module
and is imported only when it runs (see :mod:`gsimclr.evaluation.registry`).

    >>> EVALUATIONS.names()
    ['linear', 'knn', 'finetune']
"""

from gsimclr.evaluation.registry import EVALUATIONS, Evaluation, table_rows

EVALUATIONS.register("linear", Evaluation(
    name="linear", command="linear-eval", help="linear classifiers on frozen features at P1, P2 and P3",
    sections=("linear",), run="gsimclr.evaluation.linear:run_linear",
    rows=lambda value, results: [(p, f"Linear {p}", (value or {}).get(p)) for p in ("P1", "P2", "P3")]))
EVALUATIONS.register("knn", Evaluation(
    name="knn", command="knn", help="weighted kNN accuracy on frozen backbone features (P3)", sections=("knn",),
    run="gsimclr.evaluation.knn:run_knn",
    rows=lambda value, results: [("knn", f"kNN (k={results.get('knn_k', 200)})", value)]))
EVALUATIONS.register("finetune", Evaluation(
    name="finetune", command="finetune", help="fine-tune the pretrained backbone on a fraction of the labels",
    sections=("finetune",), run="gsimclr.evaluation.classifier:run_finetune",
    rows=lambda value, results: [("finetune", f"Fine-tune ({results.get('label_fraction', 0.1) * 100:g}% labels)",
                                  value)]))

__all__ = ["EVALUATIONS", "Evaluation", "table_rows"]
