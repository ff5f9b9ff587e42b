#!/usr/bin/env python
"""Time to kNN accuracy on the CPU: ``gsimclr pretrain`` against the lightly recipe, side by side.

Two child processes train at the same time, from the same model initialisation, with the same
batch, optimizer, learning-rate schedule and training subset, each with one torch thread:

- gsimclr: the real command, ``gsimclr.cli.main(["pretrain", ...])`` (what ``python -m gsimclr
  pretrain`` runs), with the kNN monitor on every epoch (``--monitor-every 1``). The child only
  wraps ``Pretrainer.train_epoch`` and ``monitor_knn`` with clocks (CPU and wall), to write one
  progress line per epoch and to stop the run at the budget; the training itself is untouched.
- lightly: the lightly recipe (benchmarks/throughput.py's ``LightlyPipeline``): lightly's
  ``SimCLRTransform`` on PIL images in a ``DataLoader`` with ``--lightly-workers`` worker processes,
  lightly's ``NTXentLoss``, one eager forward per view; the same ``SimCLRModel``, SGD and per-step
  learning-rate schedule (``gsimclr.training.optim.lr_multiplier``) as gsimclr's trainer.

Both sides are measured by the same monitor (``gsimclr.training.pretrain.monitor_knn``: weighted kNN
on backbone features, the training subset as the bank, the test split as queries) after every epoch.

The budget is CPU time, since the machine is shared and wall time is noisy: each side's training
CPU seconds (its process and its DataLoader worker processes, kNN checks excluded) are counted, and
a side stops after the last epoch expected to end within ``--budget-cpu-minutes`` (as ``--max-minutes``
does with wall time), or when its schedule ends. Every check records the training CPU seconds, the
kNN CPU seconds, the wall seconds since the child started (with and without kNN checks) and the load
average, so the curves can be read against either clock.

Writes, atomically, after every kNN check: ``OUT/NAME.json`` (command, git commit, machine, versions,
date, configuration and every check), ``OUT/NAME.md`` (the table) and ``OUT/NAME.png`` (kNN against
training CPU time and against wall time).

Usage:
    python benchmarks/tta_cpu.py --data ../shared/data/cifar10 --budget-cpu-minutes 20
    python benchmarks/tta_cpu.py --data digits --train-limit 256 --epochs 2 --batch-size 64 \\
        --set model=paper_resnet --set n_blocks=0 --out /tmp/tta --budget-cpu-minutes 1
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("gsimclr", "lightly")
LABELS = {"gsimclr": "gsimclr pretrain", "lightly": "lightly recipe"}

# The run's configuration on top of --preset (same for both sides); the command line overrides these.
# The paper's CIFAR ResNet with no identity blocks (3 bottleneck groups) and the paper's head, as the
# CPU configs of benchmarks/throughput.py; the preset's SGD recipe with the learning rate scaled
# linearly to the batch (0.6 at 512 -> 0.15 at 128) and a one-epoch warm-up.
DEFAULT_OVERRIDES = {
    "model": "paper_resnet", "n_blocks": 0, "head_dims": [256, 128, 50], "head_batch_norm": False,
    "batch_size": 128, "lr": 0.15, "warmup_epochs": 1.0, "schedule": "cosine", "epochs": 15,
    "train_limit": 5000, "test_limit": 0, "monitor_every": 1, "checkpoint_every": 0,
    "device": "cpu", "precision": "fp32", "compile": "off", "seed": 0,
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ clocks

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a live process from /proc, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid ... utime stime
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def descendants_cpu_s(pid: int | None = None) -> float:
    """CPU seconds of the live descendants of ``pid`` (default: this process), e.g. DataLoader workers."""
    pid = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry))
                cpu[int(entry)] = stat[1]
    total, todo = 0.0, list(children.get(pid, []))
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0.0)
        todo += children.get(p, [])
    return total


def process_cpu_s() -> float:
    """CPU seconds of this process (all threads), its finished children and its live descendants."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + descendants_cpu_s()


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


class Clock:
    """Training CPU/wall time of one side, kNN checks excluded, and the stopping rule of the budget."""

    def __init__(self, side: str, progress: Path, budget_cpu_s: float, epochs: int):
        self.side, self.progress, self.budget, self.epochs = side, progress, budget_cpu_s, epochs
        self.wall0, self.cpu0 = time.perf_counter(), process_cpu_s()
        self.knn_cpu = self.knn_wall = 0.0
        self.epoch_cpu0 = self.epoch_wall0 = None
        self.last_train_cpu = 0.0
        self.write({"event": "start", "pid": os.getpid(), "loadavg": loadavg()})

    def now(self) -> tuple[float, float]:
        return process_cpu_s() - self.cpu0, time.perf_counter() - self.wall0

    def write(self, record: dict) -> None:
        with open(self.progress, "a") as f:
            f.write(json.dumps(record) + "\n")

    def epoch_start(self) -> None:
        self.epoch_cpu0, self.epoch_wall0 = self.now()
        if not hasattr(self, "setup"):  # the set-up (imports, data, model) ends where training begins
            self.setup = {"cpu_s": self.epoch_cpu0, "wall_s": self.epoch_wall0}
            self.write({"event": "setup", **self.setup})

    def initial_check(self, knn_fn) -> None:
        """The kNN accuracy of the initial weights (epoch 0), before any training."""
        self.epoch_start()
        with self.knn_check():
            knn = knn_fn()
        self.epoch_end(0, knn, None, 0)

    @contextlib.contextmanager
    def knn_check(self):
        c0, w0 = self.now()
        yield
        c1, w1 = self.now()
        self.knn_cpu += c1 - c0
        self.knn_wall += w1 - w0

    def train_s(self) -> tuple[float, float]:
        """(CPU, wall) seconds of training so far: since the first epoch began, kNN checks excluded."""
        cpu, wall = self.now()
        return (cpu - self.setup["cpu_s"] - self.knn_cpu, wall - self.setup["wall_s"] - self.knn_wall)

    def epoch_end(self, epoch: int, knn: float | None, loss: float, images: int) -> bool:
        """Record one epoch; True when the side must stop (schedule done, or the budget would be passed)."""
        cpu, wall = self.now()
        train_cpu, train_wall = self.train_s()
        epoch_cpu = train_cpu - self.last_train_cpu
        self.last_train_cpu = train_cpu
        done = epoch >= self.epochs
        over = epoch > 0 and not done and train_cpu + epoch_cpu > self.budget
        self.write({"event": "check", "epoch": epoch, "knn": knn, "loss": loss, "images": images,
                    "train_cpu_s": train_cpu, "train_wall_s": train_wall, "knn_cpu_s": self.knn_cpu,
                    "knn_wall_s": self.knn_wall, "cpu_s": cpu, "wall_s": wall, "epoch_cpu_s": epoch_cpu,
                    "loadavg": loadavg()})
        if epoch > 0 and (done or over):
            self.write({"event": "stop", "reason": "schedule done" if done else
                        "budget: one more epoch would end past it", "train_cpu_s": train_cpu})
        return epoch > 0 and (done or over)


class BudgetReached(Exception):
    pass


# ------------------------------------------------------------------------------ the two sides


def cli_args(overrides: dict) -> list[str]:
    """``--key value`` options of ``gsimclr pretrain`` for a dict of config fields."""
    argv = []
    for key, value in overrides.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        elif isinstance(value, bool):
            value = str(value).lower()
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def gsimclr_argv(spec: dict) -> list[str]:
    return ["pretrain", "--preset", spec["preset"], "--data", spec["data"], "--out", spec["run_dir"],
            "--method", "simclr", *cli_args(spec["overrides"])]


def run_gsimclr(spec: dict, clock: Clock) -> int:
    """``gsimclr pretrain`` in this process, its epochs and kNN monitor wrapped with the clock."""
    from gsimclr import cli
    from gsimclr.training import pretrain as trainer

    train_epoch, monitor = trainer.Pretrainer.train_epoch, trainer.monitor_knn

    def timed_monitor(*args, **kwargs):
        with clock.knn_check():
            return monitor(*args, **kwargs)

    def timed_epoch(self, epoch):
        if not hasattr(clock, "setup"):
            knn = self.monitor  # the trainer's KnnMonitor: its settings, the original (untimed-wrapper) monitor function
            clock.initial_check(lambda: monitor(knn.cfg, self.model, knn.train, knn.test, knn.device))
        clock.epoch_start()
        record = train_epoch(self, epoch)
        if clock.epoch_end(epoch + 1, record.get("knn"), record["loss"], len(self.data)):
            raise BudgetReached
        return record

    trainer.monitor_knn, trainer.Pretrainer.train_epoch = timed_monitor, timed_epoch
    try:
        return cli.main(gsimclr_argv(spec))
    except BudgetReached:
        return 0


def run_lightly(spec: dict, clock: Clock) -> int:
    """The lightly recipe with the same model, optimizer, schedule and monitor as gsimclr's trainer."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from throughput import LightlyPipeline

    from gsimclr.config import load_config
    from gsimclr.pipeline import load_data
    from gsimclr.runtime import seed_everything
    from gsimclr.training.optim import lr_multiplier
    from gsimclr.training.pretrain import monitor_knn

    cfg = load_config(spec["preset"], {"data": spec["data"], **spec["overrides"]})
    Path(spec["run_dir"]).mkdir(parents=True, exist_ok=True)
    (Path(spec["run_dir"]) / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1, default=str))
    device = torch.device("cpu")
    train, test = load_data(cfg)
    seed_everything(cfg.seed)  # as gsimclr's Pretrainer before build_model: the same initial weights
    pipe = LightlyPipeline(cfg, device, train.images, spec["workers"])
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size) if not cfg.drop_last else len(train) // cfg.batch_size
    schedule = lr_multiplier(cfg.schedule, cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch),
                             cfg.restart_steps or round(cfg.restart_epochs * steps_per_epoch),
                             cfg.restart_t_mul, cfg.restart_m_mul, cfg.decay_steps)
    workers = spec["workers"]
    loader = torch.utils.data.DataLoader(
        pipe.dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=cfg.drop_last, num_workers=workers,
        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(cfg.seed))
    def check():
        knn = monitor_knn(cfg, pipe.model, train, test, device)
        # the monitor's feature extraction turns the model channels_last; the recipe trains in the default layout
        pipe.model.to(memory_format=torch.contiguous_format)
        return knn

    clock.initial_check(check)
    for epoch in range(cfg.epochs):
        clock.epoch_start()
        pipe.model.train()
        pipe.total.zero_()
        seen = 0
        for i, ((x0, x1), _) in enumerate(loader):
            for group in pipe.optimizer.param_groups:
                group["lr"] = cfg.lr * schedule(epoch * steps_per_epoch + i)
            pipe.train_step(x0, x1)
            seen += len(x0)
        loss = float(pipe.total) / max(seen, 1)
        if not np.isfinite(loss):
            raise RuntimeError(f"lightly: the loss is not finite at epoch {epoch + 1}")
        knn = None
        if cfg.monitor_every and (epoch + 1) % cfg.monitor_every == 0:
            with clock.knn_check():
                knn = check()
        if clock.epoch_end(epoch + 1, knn, loss, len(train)):
            break
    return 0


def child_main(args) -> int:
    """One side, in its own process (``--side``): the spec comes as JSON from the parent."""
    import torch

    spec = json.loads(Path(args.spec).read_text())
    torch.set_num_threads(spec["threads"])
    clock = Clock(args.side, Path(spec["progress"]), spec["budget_cpu_s"], spec["overrides"]["epochs"])
    code = (run_gsimclr if args.side == "gsimclr" else run_lightly)(spec, clock)
    clock.write({"event": "exit", "returncode": code})
    return code


# ------------------------------------------------------------------------------ the report


def read_progress(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))  # a line being written is read at the next poll
    return records


def side_summary(records: list[dict]) -> dict:
    checks = [r for r in records if r.get("event") == "check"]
    setup = next((r for r in records if r.get("event") == "setup"), None)
    stop = next((r for r in records if r.get("event") == "stop"), None)
    out = {"setup": setup, "checks": checks, "stop": stop}
    if checks:
        last = checks[-1]
        images = sum(c["images"] for c in checks)
        out.update(epochs=last["epoch"], final_knn=last["knn"], images_per_cpu_s=None, images_per_wall_s=None,
                   best_knn=max((c["knn"] for c in checks if c["knn"] is not None), default=None),
                   train_cpu_s=last["train_cpu_s"], train_wall_s=last["train_wall_s"], knn_cpu_s=last["knn_cpu_s"])
    if checks and last["epoch"] > 0:
        out.update(images_per_cpu_s=images / last["train_cpu_s"], images_per_wall_s=images / last["train_wall_s"])
    return out


def time_to(checks: list[dict], target: float, key: str) -> float | None:
    """``key`` (a clock) at the first check that reached ``target`` kNN accuracy."""
    return next((c[key] for c in checks if c["knn"] is not None and c["knn"] >= target), None)


def compare(sides: dict) -> dict | None:
    """Time to the accuracy both sides reached after training (the lower of their best kNN after
    epoch 1 on), on each clock, and each side's best kNN within the training CPU time both reached."""
    g, l = sides["gsimclr"], sides["lightly"]
    if not g.get("images_per_cpu_s") or not l.get("images_per_cpu_s"):  # both trained an epoch
        return None
    trained = {name: [c for c in s["checks"] if c["epoch"] > 0 and c["knn"] is not None]
               for name, s in (("gsimclr", g), ("lightly", l))}
    target = min(max(c["knn"] for c in trained["gsimclr"]), max(c["knn"] for c in trained["lightly"]))
    out = {"target_knn": target}
    for key in ("train_cpu_s", "train_wall_s", "wall_s"):
        tg, tl = time_to(trained["gsimclr"], target, key), time_to(trained["lightly"], target, key)
        out[key] = {"gsimclr": tg, "lightly": tl, "speedup": tl / tg if tg and tl else None}
    common = min(g["train_cpu_s"], l["train_cpu_s"])
    out["at_common_cpu_s"] = {"cpu_s": common, **{
        name: max((c["knn"] for c in s["checks"] if c["train_cpu_s"] <= common + 1e-9 and c["knn"] is not None),
                  default=None)  # the initial weights' check counts: the accuracy at 0 s
        for name, s in (("gsimclr", g), ("lightly", l))}}
    return out


def fmt(x, spec=".0f", none="-") -> str:
    return none if x is None else format(x, spec)


def markdown(report: dict) -> str:
    m, cfg = report["machine"], report["config"]
    lines = [
        "# Time to kNN accuracy on the CPU: gsimclr pretrain against the lightly recipe",
        "",
        f"{report['date']} - {m['cpu']} ({m['cpu_cores']} cores, shared), {report['threads']} torch thread per side"
        f" - torch {report['versions']['torch']}, lightly {report['versions']['lightly']}, gsimclr "
        f"{report['versions']['gsimclr']} (commit {report['git_commit'][:10]}{' + changes' if report['git_dirty'] else ''})",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Data: {cfg['data']}, {cfg['overrides']['train_limit'] or 'all'} training images (also the kNN bank), "
        f"{cfg['overrides']['test_limit'] or 'all'} test images as kNN queries (weighted kNN, k {report['knn_k']}). "
        f"Model {cfg['overrides']['model']} (n_blocks {cfg['overrides']['n_blocks']}), head "
        f"{'-'.join(map(str, cfg['overrides']['head_dims']))}, batch {cfg['overrides']['batch_size']}, SGD lr "
        f"{cfg['overrides']['lr']} {cfg['overrides']['schedule']} over {cfg['overrides']['epochs']} epochs "
        f"(warm-up {cfg['overrides']['warmup_epochs']}), fp32; the same initial weights on both sides. "
        f"lightly: {report['lightly_workers']} DataLoader worker(s), their CPU counted. Configurations of the two "
        f"sides equal: {fmt((report.get('same_config') or {}).get('equal'), '')}.",
        "",
        f"Budget: {report['budget_cpu_s'] / 60:.0f} CPU minutes of training per side (kNN checks excluded); a side "
        "stops after the last epoch expected to end within it. Both sides ran at the same time. Load average "
        f"(1/5/15 min) at start {m['load_average_start']}, at end {m.get('load_average_end')}; mean 1-min load "
        f"{fmt(m.get('load_average_mean'), '.2f')}; wall time {fmt(report.get('wall_s'))} s. Status: {report['status']}.",
        "",
        "| pipeline | epochs | training CPU s | training wall s | images / CPU s | kNN CPU s (all checks) | "
        "final kNN % | best kNN % | kNN % by epoch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in SIDES:
        s = report["sides"][name]
        if not s.get("checks"):
            lines.append(f"| {LABELS[name]} | 0 | - | - | - | - | - | - | {s.get('status', '')} |")
            continue
        by_epoch = ", ".join(f"{c['epoch']}: {fmt(c['knn'], '.1f')}" for c in s["checks"])
        lines.append(f"| {LABELS[name]} | {s['epochs']} | {s['train_cpu_s']:.0f} | {s['train_wall_s']:.0f} | "
                     f"{fmt(s['images_per_cpu_s'], '.1f')} | {s['knn_cpu_s']:.0f} | {fmt(s['final_knn'], '.2f')} | "
                     f"{fmt(s['best_knn'], '.2f')} | {by_epoch} |")
    c = report.get("comparison")
    if c:
        cpu, wall, at = c["train_cpu_s"], c["train_wall_s"], c["at_common_cpu_s"]
        lines += ["", f"Time to {c['target_knn']:.2f}% kNN (the accuracy both reached): gsimclr "
                  f"{fmt(cpu['gsimclr'])} CPU s ({fmt(wall['gsimclr'])} wall s), lightly {fmt(cpu['lightly'])} CPU s "
                  f"({fmt(wall['lightly'])} wall s): gsimclr {fmt(cpu['speedup'], '.2f')}x as fast in training CPU "
                  f"time, {fmt(wall['speedup'], '.2f')}x in training wall time. Best kNN within {at['cpu_s']:.0f} "
                  f"training CPU s (what both reached): gsimclr {fmt(at['gsimclr'], '.2f')}%, lightly "
                  f"{fmt(at['lightly'], '.2f')}%."]
    lines += ["", "Every check (epoch 0: the initial weights; CPU and wall s of training, kNN checks excluded; "
              "1-min load average at the check):", "",
              "| epoch | gsimclr kNN % | gsimclr CPU s | gsimclr wall s | lightly kNN % | lightly CPU s | lightly wall s "
              "| load |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by_side = {name: {c["epoch"]: c for c in report["sides"][name].get("checks") or []} for name in SIDES}
    for epoch in sorted(set(by_side["gsimclr"]) | set(by_side["lightly"])):
        cells, loads = [], []
        for name in SIDES:
            c = by_side[name].get(epoch)
            cells += [fmt(c["knn"], ".2f"), fmt(c["train_cpu_s"]), fmt(c["train_wall_s"])] if c else ["-"] * 3
            if c and c.get("loadavg"):
                loads.append(c["loadavg"][0])
        lines.append(f"| {epoch} | " + " | ".join(cells) + f" | {'/'.join(f'{x:.1f}' for x in loads) or '-'} |")
    lines += ["", f"![kNN accuracy against training time]({report['name']}.png)"]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gsimclr.io import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100, sharey=True)
    for name in SIDES:
        checks = [c for c in report["sides"][name].get("checks", []) if c["knn"] is not None]
        for ax, key in zip(axes, ("train_cpu_s", "wall_s")):
            ax.plot([c[key] / 60 for c in checks], [c["knn"] for c in checks], marker="o", markersize=3,
                    label=LABELS[name])
    axes[0].set_xlabel("training CPU minutes (kNN checks excluded)")
    axes[1].set_xlabel("wall minutes since the side started (set-up and kNN checks included)")
    axes[0].set_ylabel("kNN top-1 % (test split)")
    budget = report["budget_cpu_s"] / 60
    reached = max((report["sides"][n].get("train_cpu_s") or 0) / 60 for n in SIDES)
    if reached >= budget / 2:  # a budget far beyond the curves would only squeeze them
        axes[0].axvline(budget, color="grey", linestyle="--", linewidth=1, label="CPU budget")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    o = report["config"]["overrides"]
    threads = report["threads"]
    fig.suptitle(f"{Path(report['config']['data']).name} on a shared CPU: {o['model']} (n_blocks {o['n_blocks']}), "
                 f"batch {o['batch_size']},\n{o['train_limit'] or 'all'} training images, {threads} thread"
                 f"{'s' if threads > 1 else ''} per side; budget {budget:.0f} training CPU min"
                 f"{'' if report['status'] != 'stopped at --max-wall-minutes' else ', cut by the wall limit'}",
                 fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_atomic(path: Path, text: str) -> None:
    from gsimclr.io import write_text

    write_text(path, text)


def same_config(work: Path) -> dict | None:
    """Whether the two sides trained with the same configuration: gsimclr's run folder config.yaml
    (written by ``gsimclr pretrain``) against the lightly side's config.json, field by field."""
    import yaml

    g, l = work / "gsimclr" / "config.yaml", work / "lightly" / "config.json"
    if not (g.exists() and l.exists()):
        return None
    a = json.loads(json.dumps(yaml.safe_load(g.read_text()), default=str))
    b = json.loads(l.read_text())
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return {"equal": not differ, "differing_fields": differ}


def side_status(report: dict, side: str, records: list[dict]) -> str:
    """How a side ended: its stop reason, cut by the parent (a signal it sent), or failed."""
    s = report["sides"][side]
    stop = next((r for r in records if r.get("event") == "stop"), None) or s.get("stop")
    if stop and s["returncode"] == 0:
        return stop["reason"]
    if report["status"] in ("stopped at --max-wall-minutes", "interrupted") and s["returncode"] in (143, -signal.SIGTERM):
        return f"cut ({report['status']})"
    return f"failed (exit {s['returncode']}; see {s['log']})"


def write_report(report: dict, out: Path, name: str) -> None:
    """The JSON, table and plot from the sides' progress files (or, with none left, the checks the
    report already holds)."""
    for side in SIDES:
        records = read_progress(Path(report["sides"][side]["progress"]))
        if records:
            report["sides"][side].update(side_summary(records))
        if "returncode" in report["sides"][side]:
            report["sides"][side]["status"] = side_status(report, side, records)
    report["comparison"] = compare(report["sides"])
    report["same_config"] = same_config(Path(report["work_dir"])) or report.get("same_config")
    write_atomic(out / f"{name}.json", json.dumps(report, indent=1) + "\n")
    write_atomic(out / f"{name}.md", markdown(report))
    if any(report["sides"][s].get("checks") for s in SIDES):
        plot(report, out / f"{name}.png")


# ------------------------------------------------------------------------------ the parent


def versions() -> dict:
    import torch

    def version(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": version("torchvision"),
            "lightly": version("lightly"), "gsimclr": version("gsimclr"), "pillow": version("pillow"),
            "numpy": version("numpy")}


def machine() -> dict:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {"cpu": cpu, "cpu_cores": cores, "platform": platform.platform(), "host": platform.node(),
            "load_average_start": loadavg()}


def git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def parse_overrides(parser, args) -> dict:
    from gsimclr.config import load_config, parse_value
    from gsimclr.errors import UserError

    overrides = dict(DEFAULT_OVERRIDES)
    for key in ("epochs", "batch_size", "lr", "train_limit", "test_limit", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set needs KEY=VALUE, got {item!r}")
        try:
            overrides[key] = parse_value(key, value)
        except UserError as exc:
            parser.error(f"--set {item}: {exc}")
    try:
        load_config(args.preset, {"data": args.data, **overrides})  # the whole configuration, checked first
    except UserError as exc:
        parser.error(str(exc))
    return overrides


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data", help="the training data with a labelled test split (e.g. "
                   "../shared/data/cifar10, a folder of train-*/test-* parquet files); no default")
    p.add_argument("--preset", default="cifar10-resnet18", help="the gsimclr preset under the run's options "
                   "(default cifar10-resnet18: SimCLR augmentations with crop scale 0.08 and jitter 0.5, SGD momentum "
                   "0.9, weight decay 5e-4, temperature 0.2)")
    p.add_argument("--budget-cpu-minutes", type=float, default=20.0, help="training CPU minutes per side, kNN "
                   "checks excluded (default 20)")
    p.add_argument("--max-wall-minutes", type=float, default=150.0, help="stop both sides after this many wall "
                   "minutes whatever their CPU time (a safety limit for an overloaded machine; default 150)")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs of the schedule (default "
                   f"{DEFAULT_OVERRIDES['epochs']}); a side stops earlier at the budget")
    p.add_argument("--batch-size", type=int, default=None, help=f"default {DEFAULT_OVERRIDES['batch_size']}")
    p.add_argument("--lr", type=float, default=None, help=f"default {DEFAULT_OVERRIDES['lr']}")
    p.add_argument("--train-limit", type=int, default=None, help="training images (a random subset; also the kNN "
                   f"bank; 0: all; default {DEFAULT_OVERRIDES['train_limit']})")
    p.add_argument("--test-limit", type=int, default=None, help="test images as kNN queries (0: all, the default)")
    p.add_argument("--seed", type=int, default=None, help="seed of the subset, the initial weights and the "
                   "shuffling (default 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config option for both sides (repeatable), e.g. --set head_batch_norm=true")
    p.add_argument("--lightly-workers", type=int, default=1, help="DataLoader worker processes of the lightly "
                   "side (their CPU time is counted; default 1, what the CPU throughput sweep chose)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per side (default 1)")
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES), help="which sides to run (default both)")
    p.add_argument("--work-dir", default=None, help="folder for the run folders, progress files and logs "
                   "(default: a new temporary folder, kept)")
    p.add_argument("--out", default="benchmarks/results", help="output folder (default benchmarks/results)")
    p.add_argument("--name", default="tta-cpu", help="output file stem (default tta-cpu)")
    p.add_argument("--poll-s", type=float, default=2.0, help="seconds between looks at the sides' progress")
    p.add_argument("--render", metavar="JSON", help="only write the table and plot again from a report JSON "
                   "(and its progress files when they still exist) into --out")
    p.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # internal: run one side
    p.add_argument("--spec", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.side:
        return child_main(args)
    if args.render:
        report = json.loads(Path(args.render).read_text())
        report["rendered"] = {"git_commit": git("rev-parse", "HEAD"),  # the table's code, not the run's
                              "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
        write_report(report, Path(args.out), report["name"])
        print(markdown(report))
        return 0
    if not args.data:
        parser.error("--data is required (e.g. ../shared/data/cifar10)")
    if args.budget_cpu_minutes <= 0 or args.max_wall_minutes <= 0 or args.threads < 1 or args.lightly_workers < 0:
        parser.error("--budget-cpu-minutes and --max-wall-minutes must be positive, --threads at least 1, "
                     "--lightly-workers at least 0")
    overrides = parse_overrides(parser, args)
    from gsimclr.config import load_config

    cfg = load_config(args.preset, {"data": args.data, **overrides})
    if "lightly" in args.sides:
        try:
            import lightly  # noqa: F401
        except ImportError:
            parser.error("lightly is not installed: pip install -c requirements-pinned.txt 'lightly>=1.5'")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="tta-cpu-"))
    work.mkdir(parents=True, exist_ok=True)
    stale = [work / f"{s}.progress.jsonl" for s in SIDES if (work / f"{s}.progress.jsonl").exists()]
    stale += [work / s for s in SIDES if (work / s).exists()]
    if stale:
        parser.error(f"--work-dir {work} holds an earlier run ({stale[0].name}); give a new folder")

    report = {
        "name": args.name, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python " + shlex.join([os.path.relpath(__file__, Path.cwd())] + (argv if argv is not None else sys.argv[1:])),
        "git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "machine": machine(), "versions": versions(), "threads": args.threads, "lightly_workers": args.lightly_workers,
        "budget": "training CPU seconds per side (process + DataLoader workers, kNN checks excluded)",
        "budget_cpu_s": 60 * args.budget_cpu_minutes, "knn_k": cfg.knn_k,
        "config": {"preset": args.preset, "data": args.data, "overrides": overrides}, "status": "running",
        "work_dir": str(work), "sides": {},
    }
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONPATH=os.pathsep.join([str(ROOT / "src")] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    procs = {}
    for side in args.sides:
        spec = {"preset": args.preset, "data": args.data, "overrides": overrides, "run_dir": str(work / side),
                "progress": str(work / f"{side}.progress.jsonl"), "budget_cpu_s": 60 * args.budget_cpu_minutes,
                "workers": args.lightly_workers, "threads": args.threads}
        (work / f"{side}.spec.json").write_text(json.dumps(spec))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--data", args.data, "--side", side,
               "--spec", str(work / f"{side}.spec.json")]
        report["sides"][side] = {"progress": spec["progress"], "log": str(work / f"{side}.log"),
                                 "command": ("python -m gsimclr " + shlex.join(gsimclr_argv(spec)) if side == "gsimclr"
                                             else "lightly recipe in benchmarks/tta_cpu.py (run_lightly)"),
                                 "status": "running"}
        with open(work / f"{side}.log", "w") as logf:
            procs[side] = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=Path.cwd())
    for side in SIDES:
        report["sides"].setdefault(side, {"progress": str(work / f"{side}.progress.jsonl"), "status": "not run"})
    log(f"started {', '.join(f'{s} (pid {p.pid})' for s, p in procs.items())}; work folder {work}")

    started, loads, seen = time.perf_counter(), [], None
    try:
        while any(p.poll() is None for p in procs.values()):
            time.sleep(args.poll_s)
            wall = time.perf_counter() - started
            if not loads or wall - loads[-1][0] >= 30:
                loads.append([round(wall), loadavg()[0] if loadavg() else None])
            sizes = tuple(Path(report["sides"][s]["progress"]).stat().st_size
                          if Path(report["sides"][s]["progress"]).exists() else 0 for s in SIDES)
            if sizes != seen:
                changed = [s for s, a, b in zip(SIDES, sizes, seen or (None,) * len(SIDES)) if a != b]
                seen = sizes
                report["wall_s"] = wall
                report["machine"]["load_average_samples"] = loads
                write_report(report, out, args.name)
                for s in changed:
                    c = report["sides"][s].get("checks")
                    if c:
                        log(f"{s}: epoch {c[-1]['epoch']} kNN {fmt(c[-1]['knn'], '.2f')}% at "
                            f"{c[-1]['train_cpu_s']:.0f} training CPU s, {c[-1]['wall_s']:.0f} wall s")
            if wall > 60 * args.max_wall_minutes:
                log(f"--max-wall-minutes {args.max_wall_minutes} reached: stopping both sides")
                report["status"] = "stopped at --max-wall-minutes"
                for p in procs.values():
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
                for p in procs.values():
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(60)
    except KeyboardInterrupt:
        report["status"] = "interrupted"
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
    for side, p in procs.items():
        report["sides"][side]["returncode"] = p.wait()
    if report["status"] == "running":
        report["status"] = "finished" if all(p.returncode == 0 for p in procs.values()) else "failed"
    report["wall_s"] = time.perf_counter() - started
    m = report["machine"]
    m["load_average_end"], m["load_average_samples"] = loadavg(), loads
    samples = [x for _, x in loads if x is not None]
    m["load_average_mean"] = sum(samples) / len(samples) if samples else None
    write_report(report, out, args.name)
    print(markdown(report))
    log(f"wrote {out / args.name}.json, .md and .png in {report['wall_s']:.0f} s")
    return 0 if report["status"] == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
