"""The Markdown of the results: each stage's table (written by the stage's own report function, beside
its parts) under a provenance header, and ``RESULTS.md`` generated from every part's JSON."""

from __future__ import annotations

from pathlib import Path

from evidence_runner.context import Ctx, Stage, header, write_text





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


DIAGNOSTIC_ROWS = (("Same-class pairs / batch", "class_pairs_per_batch"),
                   ("Same-class pairs / batch if shuffled at random (expected)", "class_pairs_random"),
                   ("Same-class pairs / batch at the least any batching allows", "class_pairs_floor"),
                   ("Same-pseudo-label pairs / batch", "pseudo_pairs_per_batch"))
"""The false-negative diagnostics shown under the evaluations' rows (means over the pretraining epochs)."""


def part_header(preset: str, part_json: Path) -> dict:
    """The results header a part's table rows are titled by (kNN k, label fraction, linear protocol): the
    finished part's own, else its preset's."""
    import json

    from gsimclr.config import load_config
    from gsimclr.pipeline import results_header

    if part_json.is_file():
        result = json.loads(part_json.read_text()).get("result") or {}
        if "knn_k" in result:
            return result
    return results_header(load_config(preset, {}))


def _dig(obj, keys):
    for k in keys:
        obj = obj.get(k) if isinstance(obj, dict) else None
    return obj if isinstance(obj, (int, float)) else None


def cpu_lane_results(ctx: Ctx) -> str:
    """The CPU lane's tables (``scripts/evidence.py --lane cpu``): each preset's seeds from the finished pieces'
    JSON under ``results/evidence/cpu/``, beside the paper's single runs; mean ± sd once two seeds exist."""
    import json
    import statistics

    from evidence_runner.cpu_lane import LANE_PARTS, RESULTS_DIR, REPO_LANE_JSON, part_name
    from gsimclr.evaluation import table_rows
    from gsimclr.report import PAPER

    base = ctx.root / RESULTS_DIR
    if not base.is_dir() and not (ctx.root / REPO_LANE_JSON).is_file():
        return ""
    out = ["## CPU lane: the paper's CIFAR-10 recipe on this CPU\n",
           "CPU runs of the exact presets (`paper-cifar10`: the notebooks' recipe, quirks included; `paper-cifar10-clean`: "
           "the same without them), fp32, one torch thread per stage (since 2026-12-07 15:08 UTC two stages of a part side by side, `gsimclr run --jobs 2`; a stage left alone may be given both cores, `--lane-stage-jobs 1 --lane-threads 2`, as recorded in lane.json), on this project's shared 2-core development machine, run by the CPU lane "
           "in the background at the lowest priority and carried from one working period to the next "
           "(`make evidence-cpu`; see \"The CPU lane\" in [benchmarks/README.md](benchmarks/README.md)). Each cell "
           "comes from a JSON file under `results/evidence/cpu/<part>/` with its command, commit, CPU, versions, date, "
           "and wall and CPU seconds. The paper's numbers are single runs (Table 1 of arXiv 2009.12007); ours are "
           "on JPEG re-encoded CIFAR-10. An empty cell: that piece has not finished yet.\n"]
    lane = None
    if (ctx.root / REPO_LANE_JSON).is_file():
        lane = json.loads((ctx.root / REPO_LANE_JSON).read_text())
    paper = PAPER["cifar10"]
    for preset in dict.fromkeys(p for p, _ in LANE_PARTS):
        seeds = [s for p, s in LANE_PARTS if p == preset]
        cols: list[tuple[int, dict]] = []
        for seed in seeds:
            folder = base / part_name(preset, seed)
            pieces = {f.stem: json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))} if folder.is_dir() else {}
            if pieces:
                cols.append((seed, pieces))
        if not cols:
            started = [part_name(preset, s) for s in seeds if (ctx.root / "results/evidence/cpu-lane/state/runs" /
                                                              part_name(preset, s)).is_dir()]
            out.append(f"**{preset}**: no piece finished yet"
                       + (f" ({', '.join(started)} in progress: see its lane.json below)" if started else "") + ".\n")
            continue
        methods = ("simclr", "gsimclr")
        head = "| top-1 % | " + " | ".join(f"{t} seed {s}" for s, _ in cols for t in ("SimCLR", "G-SimCLR"))
        many = len(cols) >= 2
        if many:
            head += f" | SimCLR mean ± sd (n={len(cols)}) | G-SimCLR mean ± sd (n={len(cols)})"
        head += " | SimCLR (paper) | G-SimCLR (paper) |"
        lines = [f"**{preset}**\n", head, "|---" * (head.count("|") - 1) + "|"]
        header = part_header(preset, base / f"{part_name(preset, cols[0][0])}.json")
        cols_by_seed = dict(cols)
        evaluated = {(s, m): table_rows(header, (pieces.get(f"{m}-eval") or {}).get("result") or {})
                     for s, pieces in cols for m in methods}
        rows = [(title, key, lambda s, m, i=i: evaluated[s, m][i][2])
                for i, (key, title, _) in enumerate(table_rows(header, {}))]
        rows += [(title, key, lambda s, m, key=key: _dig((cols_by_seed[s].get(f"{m}-eval") or {}).get("result") or {},
                                                          (key,)))
                 for title, key in DIAGNOSTIC_ROWS]
        rows.sort(key=lambda row: row[1] not in paper["simclr"])   # the paper's rows first, in registry order
        for name, key, value_of in rows:
            cells, per_method = [], {m: [] for m in methods}
            for seed, _ in cols:
                for m in methods:
                    v = value_of(seed, m)
                    cells.append("" if v is None else f"{v:.2f}")
                    if v is not None:
                        per_method[m].append(v)
            if not any(cells):
                continue
            if many:
                for m in methods:
                    vals = per_method[m]
                    cells.append(f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}" if len(vals) >= 2 else "")
            cells += [str(paper[m].get(key, "")) for m in methods]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        sup = [(s, _dig((p.get("supervised") or {}).get("result") or {}, ("top1",))) for s, p in cols]
        if any(v is not None for _, v in sup):
            cells = [c for _, v in sup for c in (("" if v is None else f"{v:.2f}"), "")]
            if many:
                vals = [v for _, v in sup if v is not None]
                cells += [f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}" if len(vals) >= 2 else "", ""]
            lines.append("| Fully supervised (all labels) | " + " | ".join(cells) + f" | {paper['supervised']} | |")
        if len(lines) == 3:   # a header and no row: no evaluation or baseline has finished yet
            lines = [f"**{preset}**: no evaluation has finished yet (the table's rows appear as they do)."]
        lines.append("")
        for seed, pieces in cols:
            pl = (pieces.get("pseudo_labels") or {}).get("result") or {}
            done = ", ".join(f"{k} ({v['cpu_s'] / 3600:.2f} CPU h, {v['wall_s'] / 3600:.2f} h wall, {v['date'][:10]}, "
                             f"commit {str(v['commit'])[:10]})" for k, v in pieces.items())
            scores = f"; pseudo labels k={pl.get('k')}, NMI {pl['nmi']:.3f}, ARI {pl['ari']:.3f}" if "nmi" in pl else ""
            lines.append(f"- seed {seed}: finished pieces: {done}{scores}. Files: "
                         f"[results/evidence/cpu/{part_name(preset, seed)}/](results/evidence/cpu/{part_name(preset, seed)}/)")
        out.append("\n".join(lines) + "\n")
    if lane:
        sessions = lane.get("sessions", [])
        periods = sorted({s.get("period", 1) for s in sessions})
        crossings = [s for prev, s in zip(sessions, sessions[1:]) if s.get("period", 1) != prev.get("period", 1)]
        out.append(f"The lane's progress (committed copy, [{REPO_LANE_JSON}]({REPO_LANE_JSON})): "
                   f"{lane.get('work_s', 0) / 3600:.2f} CPU hours over {len(sessions)} lane call(s) in "
                   f"{len(periods)} working period(s) on {len({s.get('boot_id') for s in sessions})} machine boot(s)"
                   + (": it resumed across " + "; ".join(
                       f"the boundary before period {s.get('period')} ({(s.get('gap_s') or 0) / 3600:.1f} h after the "
                       f"last call, data mounted {s.get('data_mounted') or '?'}; resumed from {s.get('resumed_from')})"
                       for s in crossings) if crossings else "") + ". Calls: "
                   + "; ".join(f"{s.get('started', '')[:16]} on {s.get('host')} (boot {str(s.get('boot_id'))[:8]}, "
                               f"period {s.get('period', 1)}), resumed from {s.get('resumed_from')}, "
                               f"{s.get('cpu_s', 0) / 3600:.2f} CPU h"
                               + (f", {len(s['parts'])} parts at once" if len(s.get("parts") or []) > 1
                                  and s.get("jobs", 2) > 1 else "")
                               + (f", {s['stage_jobs']} stages at once" if (s.get("stage_jobs") or 1) > 1 else "")
                               + (f", {s['threads']} threads per stage" if (s.get("threads") or 1) > 1 else "")
                               for s in sessions) + ".\n")
        notes = [n for s in sessions for n in (s.get("notes") or [])]
        if notes:
            out.append("Notes recorded in the lane's JSON: " + " ".join(f"({i}) {n}." for i, n in enumerate(notes, 1)) + "\n")
    return "\n".join(out)


ZOO_PAGE = "docs/results/zoo.md"


def zoo_page(ctx: Ctx) -> str:
    """``docs/results/zoo.md``: each backbone the CPU lane exported, with its table row and commands."""
    import json

    from evidence_runner.cpu_lane import RESULTS_DIR, ZOO_DIR

    lines = ["# Model zoo: backbones pretrained by the CPU lane", "",
             "Each finished pretraining of seed 0 of the CPU lane's presets (the paper's CIFAR-10 recipe, on this project's "
             "2-core development CPU; see RESULTS.md's \"CPU lane\" section) is kept in "
             "`results/evidence/cpu/zoo/<part>-<method>/`: its checkpoint, byte for byte (`checkpoint.safetensors`: the "
             "backbone, the projection head and the config it was trained with, checksummed), and `zoo.json` (what it "
             "is, its SHA-256, and the two commands below). The project's own loader reads it strictly; `gsimclr export` "
             "turns it into a torchvision, Hugging Face or ONNX backbone:", "",
             "```python", "from gsimclr.training.pretrain import load_encoder", "",
             "model, cfg, meta = load_encoder(\"results/evidence/cpu/zoo/paper-cifar10-seed0-gsimclr\")",
             "features = model.backbone(images)   # raw [0, 1] pixels at 32 px (normalize: none, as the notebooks)",
             "```", "",
             "```bash", "gsimclr export results/evidence/cpu/zoo/paper-cifar10-seed0-gsimclr --format hf --output my-backbone",
             "```", "",
             "`gsimclr pretrain --init my-backbone/hf/model.safetensors` starts a pretraining from one. The checkpoint is "
             "the one the lane's committed state carries once its pretraining has finished, so the repository stores "
             "it once (the lane's repository budget, benchmarks/README.md).", ""]
    zoo = ctx.root / ZOO_DIR
    found = sorted(p for p in zoo.iterdir() if (p / "zoo.json").is_file() or (p / "export.json").is_file()) \
        if zoo.is_dir() else []
    if not found:
        lines.append("No backbone has finished yet: the CPU lane's first pretraining (`paper-cifar10` seed 0, SimCLR) is "
                     "in progress. This page is generated by `python scripts/evidence.py --report`.")
        return "\n".join(lines) + "\n"
    lines += ["| backbone | preset, seed, method | P1 / P2 / P3 % | kNN % | fine-tune % | pretraining | command |",
              "|---|---|---|---|---|---|---|"]
    for folder in found:
        part, method = folder.name.rsplit("-", 1)
        base = ctx.root / RESULTS_DIR / part
        ev = json.loads((base / f"{method}-eval.json").read_text()) if (base / f"{method}-eval.json").is_file() else {}
        pre = json.loads((base / f"{method}-pretrain.json").read_text()) if (base / f"{method}-pretrain.json").is_file() else {}
        r = ev.get("result") or {}
        lin = r.get("linear_notebook") or r.get("linear") or {}
        taps = " / ".join(f"{(lin.get(p) or {}).get('top1', lin.get(p)) or 0:.2f}" if lin.get(p) is not None else "-"
                          for p in ("P1", "P2", "P3"))
        fine = r.get("finetune_notebook") or r.get("finetune")
        fine = fine.get("top1") if isinstance(fine, dict) else fine
        knn = r.get("knn")
        cmd = pre.get("command", "")
        lines.append(f"| `{folder.relative_to(ctx.root).as_posix()}` | {part}, {method} | {taps} | "
                     f"{'' if knn is None else f'{knn:.2f}'} | {'' if fine is None else f'{fine:.2f}'} | "
                     f"{pre.get('cpu_s', 0) / 3600:.1f} CPU h, {str(pre.get('date', ''))[:10]}, commit {str(pre.get('commit'))[:10]} | "
                     f"`{cmd}` |")
    return "\n".join(lines) + "\n"


def write_reports(ctx: Ctx, stages: list[Stage]) -> None:
    from evidence_runner.plan import lease_order

    if not ctx.smoke:
        write_text(ctx, ctx.root / ZOO_PAGE, zoo_page(ctx))

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
    lane = cpu_lane_results(ctx)
    if lane:
        sections.insert(1, lane)
    if not any_gpu:
        sections.insert(1, "**No GPU number exists yet**: no session has had a GPU since this was set up. The tables "
                           "below are empty until `scripts/evidence.py` runs on one.\n")
    write_text(ctx, ctx.root / "RESULTS.md", "\n".join(sections))


