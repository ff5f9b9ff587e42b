"""Evaluations of a pretrained encoder: the built-in registrations, in table order (linear probes at
P1/P2/P3, weighted kNN, fine-tuning on a label fraction; then the G-SimCLR notebooks' linear probes
and fine-tuning, run instead of gsimclr's with ``--eval-protocol notebook``). Each implementation
lives in its own module and is imported only when it runs (see :mod:`gsimclr.evaluation.registry`).

    >>> EVALUATIONS.names()
    ['linear', 'knn', 'finetune', 'linear_notebook', 'finetune_notebook']
    >>> protocol_evaluations("notebook")
    ['knn', 'linear_notebook', 'finetune_notebook']
"""

from gsimclr.evaluation.registry import EVALUATIONS, Evaluation, protocol_evaluations, table_rows

EVALUATIONS.register("linear", Evaluation(
    name="linear", command="linear-eval", help="linear classifiers on frozen features at P1, P2 and P3",
    sections=("linear",), run="gsimclr.evaluation.linear:run_linear", protocols=("gsimclr",),
    rows=lambda value, results: [(p, f"Linear {p}", (value or {}).get(p)) for p in ("P1", "P2", "P3")]))
EVALUATIONS.register("knn", Evaluation(
    name="knn", command="knn", help="weighted kNN accuracy on frozen backbone features (P3)", sections=("knn",),
    run="gsimclr.evaluation.knn:run_knn",
    rows=lambda value, results: [("knn", f"kNN (k={results.get('knn_k', 200)})", value)]))
EVALUATIONS.register("finetune", Evaluation(
    name="finetune", command="finetune", help="fine-tune the pretrained backbone on a fraction of the labels",
    sections=("finetune",), run="gsimclr.evaluation.classifier:run_finetune", protocols=("gsimclr",),
    rows=lambda value, results: [("finetune", f"Fine-tune ({results.get('label_fraction', 0.1) * 100:g}% labels)",
                                  value)]))

EVALUATIONS.register("linear_notebook", Evaluation(
    name="linear_notebook", command="linear-eval-notebook",
    help="the notebooks' linear evaluation: a Dense softmax on raw frozen features at P1, P2 and P3, Adam, early "
         "stopping", sections=("linear", "protocol"), run="gsimclr.evaluation.notebook:run_linear_notebook",
    protocols=("notebook",),
    rows=lambda value, results: [(p, f"Linear {p} (notebook protocol)", ((value or {}).get(p) or {}).get("top1"))
                                 for p in ("P1", "P2", "P3")]))
EVALUATIONS.register("finetune_notebook", Evaluation(
    name="finetune_notebook", command="finetune-notebook",
    help="the notebooks' fine-tuning: a Dense head on the frozen encoder, then every layer at a low rate, early "
         "stopping", sections=("finetune", "protocol"), run="gsimclr.evaluation.notebook:run_finetune_notebook",
    protocols=("notebook",),
    rows=lambda value, results: [("finetune", f"Fine-tune ({results.get('label_fraction', 0.1) * 100:g}% labels, "
                                  "notebook protocol)", (value or {}).get("top1"))]))

__all__ = ["EVALUATIONS", "Evaluation", "protocol_evaluations", "table_rows"]
