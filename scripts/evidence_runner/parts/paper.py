"""Stages c and d: the paper presets (``gsimclr run``: autoencoder and pseudo labels, SimCLR and G-SimCLR
pretraining, every evaluation, the supervised baseline) per seed, beside the paper's single runs.

A seed's run is resumable in pieces: each call runs ``gsimclr run --resume`` bounded by the call's deadline
(:func:`evidence_runner.context.run_bounded` stops any stage; ``--max-minutes`` ends pretraining with a
checkpoint), and the next call continues from the stages its run folder holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from evidence_runner.context import Ctx, Part, Skip, Stage, header, read_jsonl, run_gsimclr, write_text


def run_preset_seed(preset: str, dataset: str, seed: int) -> Callable[[Ctx, Part], dict | None]:
    def run(ctx: Ctx, part: Part) -> dict | None:
        from gsimclr.config import preset_names

        if preset not in preset_names():
            raise Skip(f"preset {preset} does not exist in this checkout yet")
        out = ctx.runs / f"{preset}-seed{seed}"
        resume = ["--resume"] if out.exists() else []
        argv = ["run", "--preset", preset, "--data", ctx.data[dataset], "--seed", str(seed), "--out", str(out),
                *ctx.options("run"), *resume, "--max-minutes", f"{ctx.minutes_left():.2f}"]
        part.command = run_gsimclr(ctx, argv)
        path = out / "results.json"
        return json.loads(path.read_text()) if path.exists() else None

    return run


def report_presets(presets: tuple[str, ...], paper: str):
    def report(ctx: Ctx, stage: Stage) -> str:
        from gsimclr.report import summarize_results

        sections = []
        for preset in presets:
            parts = [p for p in stage.parts if p.name.startswith(f"{preset}-seed")]
            done = [(p, p.load(ctx)) for p in parts]
            done = [(p, d) for p, d in done if d]
            if not done:
                continue
            table = summarize_results([d["result"] for _, d in done], paper)
            seeds = ", ".join(f"[seed {d['seed']}]({p.path})" for p, d in done)
            text = f"**{preset}** ({len(done)} of {len(parts)} seeds: {seeds})\n\n{table}"
            write_text(ctx, ctx.root / "results" / "evidence" / f"{preset}.md", header(stage, [d for _, d in done]) + text + "\n")
            sections.append(text)
        return "\n\n".join(sections)

    return report




def run_folder_progress(folder_of: Callable[[Ctx, Part], Path], methods: tuple[str, ...]):
    """What a run folder holds so far: pseudo labels, each method's epochs and evaluation, the supervised
    baseline (the stages a resumed ``gsimclr run`` reuses)."""
    def progress(ctx: Ctx, part: Part) -> dict | None:
        from gsimclr.checkpoint import read_meta
        from gsimclr.run_folder import RunFolder

        root = folder_of(ctx, part)
        if not root.exists():
            return None
        folder = RunFolder(root)
        out: dict[str, Any] = {"pseudo_labels": folder.pseudo_labels.exists(), "methods": {}}
        for method in methods:
            ckpt = folder.checkpoint(method)
            out["methods"][method] = {
                "epochs": int(read_meta(ckpt).get("epoch", 0)) if ckpt.exists() else 0,
                "evaluated": folder.eval(method).exists(),
                "metrics": read_jsonl(folder.metrics(method))[-1:] if folder.metrics(method).exists() else []}
        out["supervised"] = folder.supervised.exists()
        stages = [out["pseudo_labels"], *(m["evaluated"] for m in out["methods"].values()), out["supervised"]]
        out["fraction"] = sum(map(bool, stages)) / len(stages)
        return out

    return progress
