"""Does bf16 autocast move the paper recipe's results on the CPU beyond seed noise? (issue 24, item 1)

Short real CIFAR-10 pretrainings of the exact preset (``paper-cifar10``, SimCLR) in fp32 and in bf16, for
several seeds, one torch thread each, two at a time: the loss and the kNN monitor (weighted kNN, k 200)
after every epoch. The difference of the precisions' means is set beside the seeds' spread within each
precision. The presets stay fp32 unless this shows no move beyond seed noise at this scale; a short run
cannot show that a full one does not move, so the verdict is stated for this scale only.

    python benchmarks/bf16_check.py --data ../shared/data/cifar10 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command(data: str, out: Path, seed: int, precision: str, args) -> list[str]:
    return [sys.executable, "-m", "gsimclr", "pretrain", "--preset", "paper-cifar10", "--data", data,
            "--train-limit", str(args.train_limit), "--test-limit", str(args.test_limit), "--epochs", str(args.epochs),
            "--monitor-every", "1", "--seed", str(seed), "--precision", precision, "--device", "cpu",
            "--tsne-points", "0", "--out", str(out)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 (the Hugging Face parquet folder)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-limit", type=int, default=8192)
    parser.add_argument("--test-limit", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each (default 2)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", default="paper-cpu-bf16-check")
    args = parser.parse_args(argv)

    from gsimclr.provenance import cpu_name, git_commit, versions

    work = Path(tempfile.mkdtemp(prefix="gsimclr-bf16-check-"))
    runs = [(p, s) for s in args.seeds for p in ("fp32", "bf16")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    started, load_start = time.time(), os.getloadavg()
    pending, running, records = list(runs), {}, {}
    while pending or running:
        while pending and len(running) < args.jobs:
            precision, seed = pending.pop(0)
            out = work / f"{precision}-s{seed}"
            log = open(work / f"{precision}-s{seed}.log", "w")
            running[(precision, seed)] = (subprocess.Popen(command(args.data, out, seed, precision, args), env=env,
                                                           stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), out, log)
        time.sleep(2)
        for key, (proc, out, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[key]
            if proc.returncode != 0:
                raise SystemExit(f"{key}: exit {proc.returncode}; see {work}/{key[0]}-s{key[1]}.log")
            metrics = [json.loads(line) for line in (out / "simclr" / "metrics.jsonl").read_text().splitlines() if line]
            records[f"{key[0]}-s{key[1]}"] = [{k: m.get(k) for k in ("epoch", "loss", "knn", "images_per_s")}
                                              for m in metrics]
            print(f"{key[0]} seed {key[1]}: " + ", ".join(f"epoch {m['epoch']} loss {m['loss']:.4f} kNN {m.get('knn')}"
                                                         for m in metrics), flush=True)

    def final(precision, field):
        return [records[f"{precision}-s{s}"][-1][field] for s in args.seeds]

    summary = {}
    for field in ("loss", "knn", "images_per_s"):
        fp, bf = final("fp32", field), final("bf16", field)
        sd = statistics.pstdev(fp + bf) if len(fp) < 2 else max(statistics.stdev(fp), statistics.stdev(bf))
        paired = [b - f for b, f in zip(bf, fp)]
        summary[field] = {"fp32": fp, "bf16": bf, "fp32_mean": statistics.mean(fp), "bf16_mean": statistics.mean(bf),
                          "fp32_sd": statistics.stdev(fp) if len(fp) > 1 else None,
                          "bf16_sd": statistics.stdev(bf) if len(bf) > 1 else None,
                          "difference_of_means": statistics.mean(bf) - statistics.mean(fp),
                          "paired_differences": paired, "larger_seed_sd": sd}
    within = {f: abs(summary[f]["difference_of_means"]) <= summary[f]["larger_seed_sd"] for f in ("loss", "knn")}
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": "python " + " ".join(
        [os.path.relpath(__file__, Path.cwd()), *(argv or sys.argv[1:])]), "run_command": " ".join(
        command(args.data, Path("OUT"), 0, "P", args)[1:]).replace("--seed 0", "--seed S"),
        "commit": git_commit(), "cpu": cpu_name(), "cpu_cores": os.cpu_count(), "versions": versions(),
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "wall_s": round(time.time() - started, 1), "runs": records, "summary": summary,
        "within_seed_noise": within}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# bf16 autocast against fp32 on the CPU: the paper recipe, short real CIFAR-10 runs", "",
             f"{result['date']} - {result['cpu']} ({result['cpu_cores']} cores) - torch {result['versions'].get('torch')}"
             f" - commit {result['commit']}", "", f"Command: `{result['command']}`", "",
             f"Each run: `{result['run_command']}` with `OMP_NUM_THREADS=1`, {args.jobs} at a time; load average "
             f"{result['load_average']['start']} at start, {result['load_average']['end']} at end; wall "
             f"{result['wall_s']:.0f} s.", "",
             "| after epoch " + str(args.epochs) + " | fp32 (seeds " + ", ".join(map(str, args.seeds)) + ") | bf16 | "
             "fp32 mean ± sd | bf16 mean ± sd | bf16 - fp32 | within the larger seed sd |", "|---|---|---|---:|---:|---:|---|"]
    for field, label in (("loss", "NT-Xent loss"), ("knn", "kNN top-1 %"), ("images_per_s", "images/s (1 thread)")):
        s = summary[field]
        lines.append(f"| {label} | {', '.join(f'{v:.4g}' for v in s['fp32'])} | {', '.join(f'{v:.4g}' for v in s['bf16'])} | "
                     f"{s['fp32_mean']:.4g} ± {s['fp32_sd'] or 0:.2g} | {s['bf16_mean']:.4g} ± {s['bf16_sd'] or 0:.2g} | "
                     f"{s['difference_of_means']:+.4g} | {('yes' if within[field] else 'no') if field in within else '-'} |")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / args.name}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
