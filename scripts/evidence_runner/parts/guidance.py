"""Stage e: SimCLR against the guidance variants with the strong recipe (``pretrain`` + ``knn`` +
``linear-eval`` per variant and seed)."""

from __future__ import annotations

import json
from typing import Any, Callable

from evidence_runner.context import SMOKE_OPTIONS, Ctx, Part, Skip, Stage, accepts, mean_sd, read_jsonl, run_gsimclr

GUIDANCE_PRESET, GUIDANCE_EPOCHS = "cifar10-resnet18", 100
# The guidance variants of stage e: name -> (method, extra `gsimclr pretrain` options). Edit freely; a
# variant whose options this checkout's CLI does not accept is skipped with the CLI's message.
GUIDANCE_VARIANTS: dict[str, tuple[str, list[str]]] = {
    "simclr": ("simclr", []),
    "paper-batches": ("gsimclr", ["--sampler", "paper", "--guidance", "none"]),
    "spread": ("gsimclr", ["--sampler", "spread", "--guidance", "none"]),
    "encoder": ("gsimclr", ["--sampler", "spread", "--guidance", "none", "--pseudo-labels", "encoder"]),
    "mask": ("gsimclr", ["--sampler", "random", "--guidance", "mask"]),
    "attract": ("gsimclr", ["--sampler", "random", "--guidance", "attract"]),
}


def run_guidance(variant: str, seed: int) -> Callable[[Ctx, Part], dict | None]:
    def run(ctx: Ctx, part: Part) -> dict | None:
        if variant not in GUIDANCE_VARIANTS:
            raise Skip(f"variant {variant} is no longer in GUIDANCE_VARIANTS")
        method, extra = GUIDANCE_VARIANTS[variant]
        problem = accepts("pretrain", ["--method", method, *extra])
        if problem:
            raise Skip(f"variant {variant}: this checkout does not accept {' '.join(extra)} ({problem})")
        out = ctx.runs / f"guidance-{variant}-seed{seed}"
        base = ["--preset", GUIDANCE_PRESET, "--data", ctx.data["cifar10"], "--out", str(out)]
        epochs = {"epochs": GUIDANCE_EPOCHS} if not ctx.smoke else {}
        resume = ["--resume"] if (out / method).exists() else []
        commands = [run_gsimclr(ctx, ["pretrain", *base, "--seed", str(seed), "--method", method, *extra,
                                 *ctx.options("pretrain", epochs), *resume,
                                 "--max-minutes", f"{ctx.minutes_left():.2f}"])]
        from gsimclr.checkpoint import read_meta

        ckpt = out / method / "checkpoint.safetensors"
        want = SMOKE_OPTIONS["epochs"] if ctx.smoke else GUIDANCE_EPOCHS
        if int(read_meta(ckpt).get("epoch", 0)) < want:
            return None
        results: dict[str, Any] = {"variant": variant, "method": method, "options": extra, "epochs": want, "seed": seed}
        for command, key in (("knn", "knn"), ("linear-eval", "linear")):
            commands.append(run_gsimclr(ctx, [command, "--out", str(out), "--method", method, *ctx.options(command)]))
            value = json.loads((out / method / f"{key}.json").read_text())
            results[key] = value.get(key, value) if isinstance(value, dict) else value
        metrics = read_jsonl(out / method / "metrics.jsonl")
        results["pretrain_s"] = metrics[-1]["train_s"] if metrics else None
        part.command = " && ".join(commands)
        return results

    return run


def report_guidance(ctx: Ctx, stage: Stage) -> str:
    rows = ["| variant | method and options | seeds | kNN % | linear P3 % | pretraining s | JSON |",
            "|---|---|---:|---:|---:|---:|---|"]
    variants = dict.fromkeys(p.name.rsplit("-seed", 1)[0].removeprefix("guidance-") for p in stage.parts)
    for variant in variants:
        parts = [p for p in stage.parts if p.name.startswith(f"guidance-{variant}-seed")]
        done = [(p, d["result"]) for p in parts if (d := p.load(ctx))]
        if not done:
            continue
        knn = [r["knn"] for _, r in done]
        p3 = [(r["linear"] or {}).get("P3") if isinstance(r["linear"], dict) else None for _, r in done]
        secs = [r["pretrain_s"] for _, r in done if r.get("pretrain_s") is not None]
        r0 = done[0][1]
        links = ", ".join(f"[{r['seed']}]({p.path})" for p, r in done)
        rows.append(f"| {variant} | {r0['method']} {' '.join(r0['options'])} | {len(done)} | {mean_sd(knn)} | "
                    f"{mean_sd(p3)} | {mean_sd(secs)} | {links} |")
    return "\n".join(rows) if len(rows) > 2 else ""


