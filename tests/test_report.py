import json

from gsimclr.cli import main
from gsimclr.report import markdown_table, summarize


def _result(p1, sup):
    return {"knn_k": 200, "label_fraction": 0.1, "supervised": sup,
            "methods": {m: {"linear": {"P1": p1 + i, "P2": 1.0, "P3": 2.0}, "knn": 3.0, "finetune": 4.0}
                        for i, m in enumerate(("simclr", "gsimclr"))}}


def test_summarize_mean_and_std_beside_the_paper(tmp_path):
    for seed, p1 in enumerate((10.0, 12.0, 14.0)):
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "results.json").write_text(json.dumps(_result(p1, 70.0 + seed)))
    table = summarize(sorted(tmp_path.iterdir()), paper="cifar10")
    assert "| Linear P1 (ours) | 12.00 ± 2.00 | 13.00 ± 2.00 | 37.69 | 38.15 |" in table
    assert "| Fully supervised | 71.00 ± 1.00 |  | 73.62 |  |" in table
    out = tmp_path / "table.md"
    assert main(["summarize", *map(str, sorted(tmp_path.glob("s*"))), "--output", str(out)]) == 0
    assert out.read_text().startswith("| top-1 % (n=3 runs)")


def test_table_rows():
    table = markdown_table(_result(10.0, 70.0))
    assert table.splitlines()[0] == "| top-1 % | SimCLR | G-SimCLR |"
    assert "| Linear P1 (ours) | 10.00 | 11.00 |" in table and "| Fully supervised (all labels) | 70.00 |  |" in table


def test_table_shows_false_negative_diagnostics():
    result = _result(10.0, 70.0)
    result["methods"]["simclr"].update(class_pairs_per_batch=201.5, class_pairs_in_loss=201.5,
                                       class_pairs_random=201.4, class_pairs_floor=173.6)
    result["methods"]["gsimclr"].update(class_pairs_per_batch=180.25, class_pairs_in_loss=150.0,
                                        class_pairs_random=201.4, class_pairs_floor=173.6, pseudo_pairs_per_batch=12.3)
    table = markdown_table(result)
    assert "| Same-class pairs / batch (random 201.4, floor 173.6) | 201.5 | 180.2 |" in table
    assert "| Same-class pairs left as negatives / batch | 201.5 | 150.0 |" in table
    assert "| Same-pseudo-label pairs / batch |  | 12.3 |" in table
    assert "pairs" not in markdown_table(_result(10.0, 70.0))
