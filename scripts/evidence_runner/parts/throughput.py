"""Stage a: throughput of gsimclr against the lightly recipe (``benchmarks/throughput.py``) and the JPEG
store's data path at 224 px (``benchmarks/data_path.py``).

Both scripts write into the part's state folder as they measure (throughput after each config and each
window, the data path after each child run), so a part cut at any second keeps its measurements, and
``--resume`` continues with the configs (rounds) not yet measured."""

from __future__ import annotations

import json
import os
import shlex

from evidence_runner.context import Ctx, Part, ROOT, Skip, Stage, have_lightly, run_bounded

THROUGHPUT_PARTS = {  # part -> (configs, data set); batch 512 first: the number wanted most comes first
    "throughput-cuda-cifar": (["r18-cifar-b512", "r18-cifar-b1024"], "cifar10"),
    "throughput-cuda-r50": (["r50-in5-b128"], "imagenet5"),
}
THROUGHPUT_SMOKE = ["--steps", "1", "--windows", "1", "--warmup", "1", "--subset", "48", "--no-breakdown",
                    "--lightly-workers", "0", "--set", "model=paper_resnet", "--set", "n_blocks=0",
                    "--set", "head_dims=32,16", "--set", "batch_size=16", "--set", "image_size=16",
                    "--set", "cache_size=16"]


def _throughput_json(ctx: Ctx, part: Part):
    return ctx.runs / part.name / f"{part.name}.json"


def run_throughput(ctx: Ctx, part: Part) -> dict | None:
    import throughput

    if not have_lightly():
        raise Skip("lightly is not installed (carry its wheels: scripts/pack_for_device.py)")
    configs, dataset = THROUGHPUT_PARTS[part.name]
    out = ctx.runs / part.name
    argv = ["--configs", *configs, f"--{dataset}", ctx.data[dataset], "--name", part.name, "--out", str(out),
            "--resume", "--device", "cpu" if ctx.smoke else "cuda"] + (THROUGHPUT_SMOKE if ctx.smoke else [])
    script = os.path.relpath(ROOT / "benchmarks" / "throughput.py")
    part.command = run_bounded(ctx, [script, *argv], lambda: throughput.main(argv),
                               f"python {script} " + shlex.join(argv))
    report = json.loads(_throughput_json(ctx, part).read_text())
    if not report.get("complete", True):
        return None
    if not report["results"]:
        raise RuntimeError("throughput: no config ran")
    return report


def throughput_progress(ctx: Ctx, part: Part) -> dict | None:
    path = _throughput_json(ctx, part)
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    configs = THROUGHPUT_PARTS[part.name][0]
    return {"configs_done": [r["config"] for r in report.get("results", [])], "configs": configs,
            "fraction": len(report.get("results", [])) / len(configs), "partial": report}


DATAPATH_GPU = ["--size", "224", "--stored-size", "256", "--batch-size", "128", "--batches", "8", "--warmup", "3",
                "--rounds", "3", "--decoders", "cuda,pil", "--device", "cuda"]
DATAPATH_SMOKE = ["--size", "16", "--stored-size", "32", "--batch-size", "8", "--batches", "1", "--warmup", "1",
                  "--rounds", "1", "--decoders", "pil,torchvision", "--device", "cpu", "--threads", "1"]


def _datapath_json(ctx: Ctx, part: Part):
    return ctx.runs / part.name / f"data-path-{'cpu' if ctx.smoke else 'cuda'}.json"


def run_datapath(ctx: Ctx, part: Part) -> dict | None:
    """The JPEG store's data path at 224 px on the GPU: nvJPEG against the Pillow thread pool as the store
    path's decoder, each with the compiled augmentation on the GPU, against torchvision's DataLoader + PIL
    transforms, on the ImageNet subset's JPEGs. nvJPEG missing (the preflight says so): the CPU decoders."""
    import data_path

    out = ctx.runs / part.name
    options = list(DATAPATH_SMOKE if ctx.smoke else DATAPATH_GPU)
    if not ctx.smoke and ctx.preflight and not ctx.preflight.get("nvjpeg", {}).get("ok", True):
        options[options.index("--decoders") + 1] = "pil,torchvision"  # the preflight's note says why
    threads = ["--threads", str(max(1, (os.cpu_count() or 2) - 1))] if not ctx.smoke else []
    argv = ["path", ctx.data["imagenet5"], *options, *threads, "--cache-dir", str(ctx.runs / "cache"),
            "--out", str(out), "--resume"]
    script = os.path.relpath(ROOT / "benchmarks" / "data_path.py")
    part.command = run_bounded(ctx, [script, *argv], lambda: data_path.main(argv) and 0,
                               f"python {script} " + shlex.join(argv))
    section = json.loads(_datapath_json(ctx, part).read_text())["path"]
    return None if section.get("partial") else section


def datapath_progress(ctx: Ctx, part: Part) -> dict | None:
    path = _datapath_json(ctx, part)
    if not path.exists():
        return None
    section = json.loads(path.read_text()).get("path")
    return {"partial": section} if section else None


def report_datapath(ctx: Ctx, part: Part) -> list[str]:
    data = part.load(ctx)
    if not data:
        return []
    body = data["result"]["result"]  # the payload's result is data_path.py's section, whose result is the table
    rows = ["", "| data path at 224 px (two views) | images/s | peak GPU memory | JSON |", "|---|---:|---:|---|"]
    for key, r in body.items():
        if not key.startswith("ratio"):
            rows.append(f"| {r['pipeline']} | {r['images_per_s']:.0f} | {r.get('peak_gpu_gib', '-')} | [{part.name}]({part.path}) |")
    return rows


def report_throughput(ctx: Ctx, stage: Stage) -> str:
    rows = ["| config | gsimclr images/s | lightly images/s | ratio (paired) | gsimclr % of matmul rate | "
            "lightly % of matmul rate | gsimclr peak memory | lightly peak memory | JSON |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for part in stage.parts:
        data = part.load(ctx) if part.run is run_throughput else None
        if not data:
            continue
        for r in data["result"]["results"]:
            g, l = r["pipelines"]["gsimclr"], r["pipelines"]["lightly"]
            gib = lambda b: "-" if b is None else f"{b / 2**30:.2f} GiB"  # noqa: E731
            rows.append(f"| {r['config']} | {g['images_per_s']:.0f} | {l['images_per_s']:.0f} | "
                        f"{r['ratio_gsimclr_to_lightly']:.2f}x ({r['paired_ratio_gsimclr_to_lightly']:.2f}x) | "
                        f"{100 * g['matmul_fraction']:.1f}% | {100 * l['matmul_fraction']:.1f}% | "
                        f"{gib(g['peak_memory_bytes'])} | {gib(l['peak_memory_bytes'])} | [{part.name}]({part.path}) |")
    extra = [line for part in stage.parts if part.run is run_datapath for line in report_datapath(ctx, part)]
    return "\n".join((rows if len(rows) > 2 else []) + extra)
