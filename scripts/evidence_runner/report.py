"""The Markdown of the results: each stage's table (written by the stage's own report function, beside
its parts) under a provenance header, and ``RESULTS.md`` generated from every part's JSON."""

from __future__ import annotations

from evidence_runner.context import Ctx, Stage, write_text


def header(stage: Stage, payloads: list[dict]) -> str:
    """Provenance of a stage's table: every part's command, commit, device, versions and date."""
    lines = [f"# {stage.title}", ""]
    for p in payloads:
        v = p.get("versions", {})
        timing = f"{p['wall_s']:.0f} s" + (f" (compile {p['compile_s']:.0f} s)" if p.get("compile_s") else "")
        lines.append(f"- {p['part']}: {p['date']}, {p['device']}, commit {p.get('commit')}, torch {v.get('torch')}, "
                     f"torchvision {v.get('torchvision')}, lightly {v.get('lightly')}, {timing}: "
                     f"`{p['command']}`")
    return "\n".join(lines) + "\n\n"



RESULTS_INTRO = """# Results

Every number here comes from a JSON file under `results/evidence/` or `benchmarks/results/` (linked beside
it), written by `scripts/evidence.py` together with its command, git commit, device, versions and date.
This file is generated: `python scripts/evidence.py --report` rewrites it from those files. The README
quotes only what is here.

How a lent GPU produces them: see "GPU evidence" in [benchmarks/README.md](benchmarks/README.md). A lease is
15 minutes of device time in all (start, every call and idle wait; one command at most 10 minutes), so the
parts run in a fixed order, the most valuable numbers first, after a preflight in every call: {order}. An
unfinished part continues in the next call. `python scripts/evidence.py --list` shows the order with each
part's measured (or compile-aware) estimate. Tables with seeds give mean ± sample sd over the seeds present; the paper's numbers are single
runs (Tables 1 and 2 of arXiv 2009.12007).
"""


def paper_table(paper: str) -> str:
    from gsimclr.report import PAPER

    ref = PAPER[paper]
    rows = ["| top-1 % (paper, single run) | SimCLR | G-SimCLR |", "|---|---:|---:|"]
    for key, name in (("P1", "Linear P1"), ("P2", "Linear P2"), ("P3", "Linear P3"), ("finetune", "Fine-tune (10% labels)")):
        rows.append(f"| {name} | {ref['simclr'][key]} | {ref['gsimclr'][key]} |")
    rows.append(f"| Fully supervised | {ref['supervised']} | |")
    return "\n".join(rows)


def cpu_results(ctx: Ctx) -> str:
    """The CPU results quoted beside the GPU tables: time to kNN accuracy on CIFAR-10 against the lightly
    recipe (``benchmarks/tta_cpu.py``), from its JSON when present."""
    import json

    path = ctx.root / "benchmarks" / "results" / "tta-cpu.json"
    if not path.is_file():
        return ""
    d = json.loads(path.read_text())
    cmp, sides, m = d["comparison"], d["sides"], d["machine"]
    rows = ["| pipeline | epochs | training CPU s | kNN % at epoch 0 -> final (best) | CPU s to "
            f"{cmp['target_knn']:.2f}% |", "|---|---:|---:|---|---:|"]
    for key, title in (("gsimclr", "gsimclr pretrain"), ("lightly", "lightly recipe")):
        curve = sides[key]["checks"]
        knn = [c["knn"] for c in curve]
        rows.append(f"| {title} | {curve[-1]['epoch']} | {curve[-1]['train_cpu_s']:.0f} | {knn[0]:.2f} -> {knn[-1]:.2f} "
                    f"({max(knn):.2f}) | {cmp['train_cpu_s'][key]:.0f} |")
    return (f"## CPU: time to kNN accuracy on CIFAR-10, gsimclr against the lightly recipe\n\n"
            f"A CPU result, not a GPU one: {d['date']}, {m['cpu']} ({m['cpu_cores']} cores, shared: mean 1-min load "
            f"{m['load_average_mean']:.1f}), commit {d['git_commit'][:10]}, status {d['status']}. Command: "
            f"`{d['command']}`. Both pipelines ran side by side with one torch thread each, the same model, "
            f"initial weights, batch, optimizer and schedule; the budget is training CPU time (lightly's "
            f"DataLoader worker counted), kNN on the 10,000 test images after every epoch. "
            f"gsimclr reached {cmp['target_knn']:.2f}% in {cmp['train_cpu_s']['speedup']:.2f}x less training CPU time "
            f"({cmp['train_wall_s']['speedup']:.2f}x less training wall time); at the {cmp['at_common_cpu_s']['cpu_s']:.0f} "
            f"training CPU s both reached: {cmp['at_common_cpu_s']['gsimclr']:.2f}% against "
            f"{cmp['at_common_cpu_s']['lightly']:.2f}%. One seed. Table, plot and every check: "
            f"[benchmarks/results/tta-cpu.md](benchmarks/results/tta-cpu.md).\n\n" + "\n".join(rows) + "\n")


def write_reports(ctx: Ctx, stages: list[Stage]) -> None:
    from evidence_runner.plan import lease_order

    sections = [RESULTS_INTRO.format(order=", ".join(f"`{p.name}`" for p in lease_order(stages)[:8]) + ", then the rest")]
    any_gpu = False
    for stage in stages:
        payloads = [d for p in stage.parts if (d := p.load(ctx))]
        any_gpu = any_gpu or any("no GPU" not in d["device"] for d in payloads)
        body = stage.report(ctx, stage) if payloads else ""
        done = len(payloads)
        sections.append(f"## {stage.key}. {stage.title}\n")
        sections.append(f"Command: `{stage.command}`. Parts done: {done} of {len(stage.parts)}"
                        + (f" (missing: {', '.join(p.name for p in stage.parts if not p.done(ctx))})." if done < len(stage.parts) else ".")
                        + "\n")
        if body:
            text = header(stage, payloads) + body + "\n"
            if stage.key in ("a", "b", "e", "f"):
                write_text(ctx, ctx.root / "results" / "evidence" / f"{stage.name}.md", text)
            sections.append(text.split("\n", 2)[2] if text.startswith("# ") else text)
        else:
            sections.append("No GPU number exists yet for this table.\n")
        if stage.key in ("c", "d") and not body:
            sections.append("The paper's numbers for comparison:\n\n" + paper_table("cifar10" if stage.key == "c" else "imagenet5") + "\n")
    cpu = cpu_results(ctx)
    if cpu:
        sections.insert(1, cpu)
    if not any_gpu:
        sections.insert(1, "**No GPU number exists yet**: no session has had a GPU since this was set up. The tables "
                           "below are empty until `scripts/evidence.py` runs on one.\n")
    write_text(ctx, ctx.root / "RESULTS.md", "\n".join(sections))


