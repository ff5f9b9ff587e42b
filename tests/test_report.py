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


def _summarize_error(capsys, runs):
    assert main(["summarize", *map(str, runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("gsimclr: error:") and "Traceback" not in err, err
    return err


def test_summarize_refuses_what_it_cannot_average(capsys, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    (good / "results.json").write_text(json.dumps(_result(10.0, 70.0)))
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "results.json").write_text("{not json")
    not_mapping = tmp_path / "list"
    not_mapping.mkdir()
    (not_mapping / "results.json").write_text("[1]")
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "run.json").write_text("{}")
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps({**_result(10.0, 70.0), "knn_k": 20}))
    assert "cannot read" in _summarize_error(capsys, [damaged])
    assert "not a gsimclr results file" in _summarize_error(capsys, [not_mapping])
    # a folder without results is named, not silently left out of "n runs"
    assert "incomplete has no results.json (the run is incomplete" in _summarize_error(capsys, [good, incomplete])
    assert "not a gsimclr run folder" in _summarize_error(capsys, [good, unrelated])
    assert "is not a folder" in _summarize_error(capsys, [good, tmp_path / "missing"])
    assert "different experiments (knn_k: 200 vs 20)" in _summarize_error(capsys, [good, other])


def test_summarize_refuses_runs_of_different_configs(capsys, tmp_path):
    runs = []
    for name, lr, seed in (("a", 0.1, 0), ("b", 0.1, 1), ("c", 0.5, 2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(_result(10.0, 70.0)))
        (tmp_path / name / "config.yaml").write_text(f"lr: {lr}\nseed: {seed}\n")
        runs.append(tmp_path / name)
    assert main(["summarize", str(runs[0]), str(runs[1])]) == 0  # seeds may differ
    capsys.readouterr()
    assert "(--lr: 0.1 vs 0.5)" in _summarize_error(capsys, [runs[0], runs[2]])
