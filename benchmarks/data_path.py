#!/usr/bin/env python
"""Data path beyond memory, measured on this machine: the encoded store against torchvision's loader.

Sub-commands (each runs its measurements in fresh child processes, so peak memory is per pipeline,
and merges its section into ``OUT/data-path-<device>.json`` and ``.md``, written atomically):

``store FOLDER``
    Build the encoded store of an image folder (``--stored-size``, default 256): time, images, bytes.
``path FOLDER``
    Images/s of the data path alone (decode, random resized crop, flip, colour jitter, grayscale; two
    views of ``--size`` px per image, batches of ``--batch-size`` drawn at random from the whole set):
    gsimclr's store path (:func:`gsimclr.data.store_batches.store_views` with the PIL decoder, then
    the batched ``Augment`` with ``crop=False``; ``--threads`` decoding threads, ``--torch-threads``
    (default 1) for the augmentation, which runs while the next batch decodes) against torchvision's
    ``ImageFolder`` + ``DataLoader`` (``--threads`` worker processes) + PIL transforms
    (``RandomResizedCrop``, ``RandomHorizontalFlip``, ``ColorJitter`` p=0.8, ``RandomGrayscale``,
    ``ToTensor``, ``Normalize``), each for ``--batches`` batches after ``--warmup`` batches. The two run
    one after the other, alternating ``--rounds`` times; the median is reported. ``--decoders`` lists
    the store path's decoders to compare (pil, torchvision, cuda = nvJPEG), each measured whole and
    decoding alone; ``--device cuda`` runs the augmentation on the GPU (compiled, as in training) and
    moves torchvision's batches there, and writes ``data-path-cuda.*`` (``scripts/evidence.py`` part
    ``datapath-cuda-224``). FOLDER may also be a parquet file or folder (torchvision's side then loads
    the images from their bytes with PIL, as ImageFolder's loader does from files). Peak memory: the
    highest total RSS of the process and its children, sampled every 0.2 s from /proc (anonymous and
    file-backed parts, since the store's memory map counts its touched pages as file-backed RSS).
    Why one torch thread: on this shared 2-core machine, with other jobs running, the augmentation of
    256 images at 64 px took 2.0 s per view with 1 thread and 7.8-9.3 s with 2 (OpenMP threads wait
    for a core the decoding threads or other processes hold; measured 2026-11-23, load average 6.6).
``epoch FOLDER``
    One full epoch of the store's data path over every image (no model): time and peak RSS.
``decoders FOLDER``
    The CPU decoders alone (Pillow with DCT-scaled decoding vs torchvision's ``decode_jpeg`` on a list),
    two crops per image, on the same random batches, alternating ``--rounds`` times.
``train FOLDER``
    ``gsimclr pretrain --store jpeg`` (one epoch of ``--model``, default paper_resnet with n_blocks 0, at ``--size`` px) under
    ``/usr/bin/time -v``: its images/s and peak RSS; ``--train-limit`` shortens the epoch.
``memory``
    The in-memory path on CIFAR-10 (``--data``): index a batch from the decoded uint8 array and make
    two views with the pretraining augmentation, images/s, for each ``--src`` (e.g. main's ``src`` in
    a temporary worktree and this branch's), alternating ``--rounds`` times in one run.

Usage (the commands behind benchmarks/results/data-path-cpu.md)::

    nice -n 10 python benchmarks/make_jpeg_set.py /work/gen/jpeg200k --images 200000 --workers 2
    nice -n 10 python benchmarks/data_path.py store /work/gen/jpeg200k --cache-dir /work/gen/cache
    nice -n 10 python benchmarks/data_path.py path /work/gen/jpeg200k --cache-dir /work/gen/cache
    nice -n 10 python benchmarks/data_path.py epoch /work/gen/jpeg200k --cache-dir /work/gen/cache --decode-only
    nice -n 10 python benchmarks/data_path.py train /work/gen/jpeg200k --cache-dir /work/gen/cache --train-limit 4096
    nice -n 10 python benchmarks/data_path.py decoders /work/gen/jpeg200k --cache-dir /work/gen/cache
    git worktree add /tmp/main-before main
    nice -n 10 python benchmarks/data_path.py memory --src /tmp/main-before/src src
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ memory


class PeakRSS:
    """Highest total RSS (anonymous + file-backed) of this process and its children, sampled from /proc."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak, self.peak_anon, self.peak_file = interval, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _status(pid: int) -> tuple[int, int]:
        anon = file = 0
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1]) * 1024
                elif line.startswith(("RssFile:", "RssShmem:")):
                    file += int(line.split()[1]) * 1024
        except OSError:
            pass
        return anon, file

    @staticmethod
    def _children(pid: int) -> list[int]:
        kids = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                kids += [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                pass
        return kids

    def sample(self) -> None:
        pids, anon, file = [os.getpid()], 0, 0
        while pids:
            pid = pids.pop()
            a, f = self._status(pid)
            anon, file = anon + a, file + f
            pids += self._children(pid)
        if anon + file > self.peak:
            self.peak, self.peak_anon, self.peak_file = anon + file, anon, file

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def as_dict(self) -> dict:
        gib = 2**30
        return {"peak_rss_gib": round(self.peak / gib, 3), "anon_gib": round(self.peak_anon / gib, 3),
                "file_gib": round(self.peak_file / gib, 3)}


# ------------------------------------------------------------------------------------- children


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gpu_peak(device) -> dict:
    import torch

    if device.type != "cuda":
        return {}
    return {"peak_gpu_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3)}


def run_store_path(args) -> dict:
    """Child: gsimclr's store path, ``args.batches`` random batches: ``args.decoder`` decodes and crops
    (a thread pool of ``--threads``, or nvJPEG), the batched augmentation runs on ``args.device``
    (compiled there on a GPU, as in training)."""
    import dataclasses

    import numpy as np
    import torch

    from gsimclr.data.decode import BatchDecoder
    from gsimclr.data.sources import list_encoded
    from gsimclr.data.store import build_store
    from gsimclr.data.store_batches import store_views
    from gsimclr.runtime import maybe_compile
    from gsimclr.transforms.augment import simclr_augment

    torch.set_num_threads(args.torch_threads)
    device = torch.device(args.device)
    with PeakRSS() as rss:
        store = build_store(list_encoded(args.folder), args.stored_size, cache_dir=args.cache_dir)
        augment = dataclasses.replace(simclr_augment(args.size), crop=False)

        def views(crops):
            return torch.stack([augment(crops[0]), augment(crops[-1])])

        views = maybe_compile(views, device, "auto")
        decoder = BatchDecoder(args.size, views=2, workers=args.threads, backend=args.decoder)
        rng = np.random.default_rng(args.seed)
        n = len(store)
        if args.epoch:
            order = rng.permutation(n)
            batches = [order[i:i + args.batch_size] for i in range(0, n, args.batch_size)]
        else:
            batches = [rng.choice(n, min(args.batch_size, n), replace=False) for _ in range(args.batches + args.warmup)]
        seen, started = 0, None
        pin = device.type == "cuda"
        for step, (idx, crops) in enumerate(store_views(store, decoder, batches, seed=args.seed, epoch=0, pin=pin)):
            crops = crops.to(device, non_blocking=True)
            if not args.decode_only:
                out = views(crops)
                assert out.shape == (2, len(idx), 3, args.size, args.size)
            if not args.epoch and step < args.warmup:  # warm-up batches (compilation on a GPU)
                if step == args.warmup - 1:
                    _sync(device)
                    started = time.perf_counter()
                continue
            started = started or time.perf_counter()
            seen += len(idx)
        _sync(device)
        elapsed = time.perf_counter() - started
    name = "decode + crop only" if args.decode_only else "decode + crop, then batched augment"
    where = f" on {device.type}" if device.type != "cpu" else ""
    return {"pipeline": f"gsimclr store, {args.decoder} decoder ({name}{where})", "images": seen, "seconds": elapsed,
            "images_per_s": seen / elapsed, "store_images": len(store), **rss.as_dict(), **_gpu_peak(device)}


def run_torchvision(args) -> dict:
    """Child: torchvision ImageFolder (or, for a parquet source, the same PIL loading from its bytes) +
    DataLoader (``--threads`` workers) + PIL transforms, two views per image, moved to ``--device``."""
    import io

    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import datasets, transforms as T

    torch.set_num_threads(1)
    device = torch.device(args.device)
    view = T.Compose([
        T.RandomResizedCrop(args.size), T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(0.2),
        *([T.RandomApply([T.GaussianBlur(2 * int(0.05 * args.size) + 1, (0.1, 2.0))], p=0.5)] if args.size >= 96 else []),
        T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    class TwoViews:
        def __call__(self, img):
            return view(img), view(img)

    class Listed(Dataset):
        """The images of a listing (paths or JPEG bytes), loaded as ImageFolder's PIL loader does."""

        def __init__(self, items, labels, transform):
            self.items, self.labels, self.transform = items, labels, transform

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            payload = self.items[i]
            with Image.open(payload if isinstance(payload, str) else io.BytesIO(payload)) as img:
                return self.transform(img.convert("RGB")), int(self.labels[i]) if self.labels is not None else 0

    with PeakRSS() as rss:
        folder = Path(args.folder) / "train"
        if folder.is_dir():
            dataset, kind = datasets.ImageFolder(str(folder), transform=TwoViews()), "ImageFolder"
        else:
            from gsimclr.data.sources import list_encoded

            listing = list_encoded(args.folder)
            items = [payload for chunk in listing.chunks(4096) for _, payload in chunk]
            dataset, kind = Listed(items, listing.labels, TwoViews()), "PIL loading from parquet bytes"
        rng = np.random.default_rng(args.seed)
        size = min(args.batch_size, len(dataset))
        batches = [rng.choice(len(dataset), size, replace=False).tolist() for _ in range(args.batches + args.warmup)]
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=args.threads, prefetch_factor=2 if args.threads else None,
                            pin_memory=device.type == "cuda")
        seen, started = 0, None
        for step, ((v0, v1), _) in enumerate(loader):
            v0, v1 = v0.to(device, non_blocking=True), v1.to(device, non_blocking=True)
            assert v0.shape == (len(v0), 3, args.size, args.size)
            if step < args.warmup:
                if step == args.warmup - 1:
                    _sync(device)
                    started = time.perf_counter()
                continue
            seen += len(v0)
        _sync(device)
        elapsed = time.perf_counter() - started
    return {"pipeline": f"torchvision {kind} + DataLoader ({args.threads} workers) + PIL transforms",
            "images": seen, "seconds": elapsed, "images_per_s": seen / elapsed, **rss.as_dict()}


def run_memory_path(args) -> dict:
    """Child: the in-memory path of the gsimclr found first on sys.path (``--src``)."""
    import numpy as np
    import torch

    import gsimclr
    from gsimclr.config import load_config
    from gsimclr.data.sources import load_split
    from gsimclr.training import pretrain

    torch.set_num_threads(args.threads)
    cfg = load_config("cifar10-resnet18", {"device": "cpu", "image_size": 32})
    data = load_split(args.data, "train", image_size=32, cache_dir=args.cache_dir)
    device = torch.device("cpu")
    images = pretrain.place_images(data.images, device)
    views = pretrain.make_views_fn(cfg, device)
    rng = np.random.default_rng(args.seed)
    batches = [rng.choice(len(data), args.batch_size, replace=False) for _ in range(args.batches + 1)]
    torch.manual_seed(args.seed)
    seen = 0
    for step, idx in enumerate(batches):
        index = torch.from_numpy(idx).to(images.device)
        out = views(images[index].to(device))
        assert out.shape[:2] == (2, len(idx))
        if step == 0:
            started = time.perf_counter()
            continue
        seen += len(idx)
    elapsed = time.perf_counter() - started
    return {"pipeline": "in-memory (index + batched augment)", "src": str(Path(gsimclr.__file__).parents[1]),
            "images": seen, "seconds": elapsed, "images_per_s": seen / elapsed}


CHILDREN = {"store-path": run_store_path, "torchvision": run_torchvision, "memory-path": run_memory_path}


class ChildFailed(RuntimeError):
    """A measurement's child process failed: an error of that measurement, never an exit of the caller
    (the evidence runner runs other parts after it)."""


def child(kind: str, args, src: str | None = None) -> dict:
    """Run ``CHILDREN[kind]`` in a fresh interpreter (with ``src`` first on the path) and return its result;
    a failure raises :class:`ChildFailed` with the end of its error output."""
    paths = [str(Path(src or ROOT / "src").resolve())] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))  # src first, then what the caller had (carried wheels)
    argv = [sys.executable, __file__, "_child", kind, "--json", json.dumps(vars(args), default=str)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode:
        raise ChildFailed(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ sub-commands


def cmd_store(args) -> dict:
    from gsimclr.data.sources import list_encoded
    from gsimclr.data.store import build_store

    started = time.perf_counter()
    with PeakRSS() as rss:
        listing = list_encoded(args.folder)
        listed = time.perf_counter() - started
        store = build_store(listing, args.stored_size, cache_dir=args.cache_dir, rebuild=args.rebuild)
    elapsed = time.perf_counter() - started
    decoded = int((store.sizes[:, 0].astype("int64") * store.sizes[:, 1] * 3).sum())
    return {"images": len(store), "skipped": store.skipped, "stored_size": args.stored_size,
            "store_gib": round(store.encoded_bytes / 2**30, 3), "decoded_at_stored_size_gib": round(decoded / 2**30, 1),
            "decoded_square_gib": round(len(store) * args.stored_size**2 * 3 / 2**30, 1),
            "listing_s": round(listed, 1), "build_s": round(elapsed, 1), "path": str(store.path), **rss.as_dict()}


def _store_kinds(args) -> list[tuple[str, dict]]:
    """``(key, overrides)`` of the store-path children of ``path``: per decoder, the whole path and its
    decoding alone (keys ``store-path`` / ``store-decode`` for the first decoder, then ``-<decoder>``)."""
    kinds = []
    for i, decoder in enumerate(args.decoders.split(",")):
        tail = "" if i == 0 else f"-{decoder}"
        kinds += [(f"store-path{tail}", {"decoder": decoder, "decode_only": False}),
                  (f"store-decode{tail}", {"decoder": decoder, "decode_only": True})]
    return kinds


def cmd_path(args) -> dict:
    """Every store-path decoder and torchvision, ``--rounds`` times interleaved. After each child run the
    rounds so far are written (``args.progress``) so a cut run keeps them; ``--resume`` starts from the
    rounds of a partial section (``args.resume_rounds``)."""
    kinds = _store_kinds(args) + [("torchvision", {})]
    previous = getattr(args, "resume_rounds", None) or {}
    rounds = {key: list(previous.get(key, [])) for key, _ in kinds}
    progress = getattr(args, "progress", None) or (lambda partial: None)
    for r in range(args.rounds):
        for key, overrides in kinds:
            if len(rounds[key]) > r:
                continue  # measured before the cut
            kind = "torchvision" if key == "torchvision" else "store-path"
            rounds[key].append(child(kind, argparse.Namespace(**{**vars(args), **overrides})))
            print(key, json.dumps(rounds[key][-1]), flush=True)
            progress({"partial": True, "rounds_done": rounds})
    summary = {}
    for key, results in rounds.items():
        rates = [r["images_per_s"] for r in results]
        summary[key] = {**results[0], "images_per_s": statistics.median(rates), "rounds": rates,
                        "peak_rss_gib": max(r["peak_rss_gib"] for r in results)}
    summary["ratio"] = summary["store-path"]["images_per_s"] / summary["torchvision"]["images_per_s"]
    for key in list(summary):
        if key.startswith("store-path-"):
            summary[f"ratio-{key[len('store-path-'):]}"] = summary[key]["images_per_s"] / summary["torchvision"]["images_per_s"]
    return summary


def cmd_epoch(args) -> dict:
    args.epoch = True
    return child("store-path", args)


def cmd_decoders(args) -> dict:
    """The CPU decoders of :class:`gsimclr.data.decode.BatchDecoder` side by side on the same random
    batches of the store (two crops of ``--size`` px per image, ``--threads`` threads), alternating."""
    import numpy as np
    import torch

    from gsimclr.data.decode import BatchDecoder
    from gsimclr.data.sources import list_encoded
    from gsimclr.data.store import build_store

    torch.set_num_threads(args.threads)
    store = build_store(list_encoded(args.folder), args.stored_size, cache_dir=args.cache_dir)
    rng = np.random.default_rng(args.seed)
    rates = {"pil": [], "torchvision": []}
    for _ in range(args.rounds):
        idx = rng.choice(len(store), args.batch_size * 2, replace=False)
        for backend in rates:
            decoder = BatchDecoder(args.size, views=2, backend=backend, workers=args.threads)
            decoder(store.payloads(idx[:8]), store.sizes[idx[:8]], rng)  # warm-up
            started = time.perf_counter()
            for part in (idx[:args.batch_size], idx[args.batch_size:]):
                decoder(store.payloads(part), store.sizes[part], rng)
            rates[backend].append(len(idx) / (time.perf_counter() - started))
            decoder.close()
            print(backend, rates[backend][-1], flush=True)
    return {b: {"images_per_s": statistics.median(r), "rounds": r} for b, r in rates.items()}


def cmd_train(args) -> dict:
    """``gsimclr pretrain --store jpeg`` on the folder under ``/usr/bin/time -v``: one epoch of ``--model``
    (paper_resnet with n_blocks 0 unless named) at ``--size`` px; ``--train-limit`` images (0: all)."""
    import re

    with tempfile.TemporaryDirectory(prefix="data-path-train-") as out:
        model = ["--model", args.model] + (["--n-blocks", "0"] if args.model == "paper_resnet" else [])
        argv = [sys.executable, "-m", "gsimclr", "pretrain", "--data", args.folder, "--store", "jpeg",
                "--image-size", str(args.size), "--cache-size", str(args.stored_size), *model, "--epochs", "1", "--batch-size", str(args.batch_size), "--train-limit",
                str(args.train_limit), "--device", "cpu", "--compile", "off", "--out", out]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        if args.cache_dir:
            env["GSIMCLR_CACHE"] = args.cache_dir
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-v", *argv], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode:
            raise ChildFailed(f"gsimclr pretrain failed:\n{done.stderr[-3000:]}")
        peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
        record = json.loads((Path(out) / "simclr" / "metrics.jsonl").read_text().splitlines()[0])
    return {"command": "gsimclr " + " ".join(argv[3:]).replace(out, "OUT"), "train_images": round(record["images_per_s"]
            * record["epoch_s"]), "epoch_s": round(record["epoch_s"], 1), "images_per_s": round(record["images_per_s"], 1),
            "loss": round(record["loss"], 4), "wall_s": round(wall, 1), "peak_rss_gib": round(peak_kb / 2**20, 3)}


def cmd_memory(args) -> dict:
    results = {src: [] for src in args.src}
    for _ in range(args.rounds):
        for src in args.src:
            results[src].append(child("memory-path", args, src)["images_per_s"])
            print(src, results[src][-1], flush=True)
    return {src: {"images_per_s": statistics.median(rates), "rounds": rates} for src, rates in results.items()}


# -------------------------------------------------------------------------------------- reporting


def machine() -> str:
    from gsimclr.provenance import cpu_name

    return f"{cpu_name()} ({os.cpu_count()} cores)"


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def markdown(results: dict, device: str = "cpu") -> str:
    lines = [f"# Data path beyond memory ({device.upper() if device == 'cpu' else 'GPU'})", "",
             "Written by `benchmarks/data_path.py`; each section gives its command, date and machine.", ""]
    for name, section in results.items():
        lines += [f"## {name}", "", f"`{section['command']}`  ", f"{section['date']} - {section['machine']} - "
                  f"load average at start {section['load_start']}, at end {section['load_end']}", ""]
        if section.get("note"):
            lines += [f"Note: {section['note']}.", ""]
        body = section["result"]
        if name == "path":
            gpu = any("peak_gpu_gib" in r for k, r in body.items() if not k.startswith("ratio"))
            lines += ["| pipeline | images/s (median) | rounds | peak RSS GiB (anon + file) |" + (" peak GPU GiB |" if gpu else ""),
                      "|---|---:|---|---:|" + ("---:|" if gpu else "")]
            for kind, r in body.items():
                if kind.startswith("ratio"):
                    continue
                lines.append(f"| {r['pipeline']} | {r['images_per_s']:.0f} | "
                             f"{', '.join(f'{x:.0f}' for x in r['rounds'])} | "
                             f"{r['peak_rss_gib']:.2f} ({r['anon_gib']:.2f} + {r['file_gib']:.2f}) |"
                             + (f" {r.get('peak_gpu_gib', '-')} |" if gpu else ""))
            lines += [""] + [f"Ratio {k.replace('ratio-', 'store (').replace('ratio', 'store')}"
                             f"{')' if k != 'ratio' else ''} / torchvision: {v:.2f}x." for k, v in body.items()
                             if k.startswith("ratio")]
        elif name.startswith("memory") or name == "decoders":
            lines += ["| " + ("gsimclr src" if name.startswith("memory") else "decoder") + " | images/s (median) | rounds |",
                      "|---|---:|---|"]
            lines += [f"| {src} | {r['images_per_s']:.0f} | {', '.join(f'{x:.0f}' for x in r['rounds'])} |"
                      for src, r in body.items()]
        else:
            lines += ["| quantity | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in body.items()]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict | None:
    """Run one sub-command (``argv`` as on the command line); returns its section of the results file."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        args = argparse.Namespace(**json.loads(argv[argv.index("--json") + 1]))
        print(json.dumps(CHILDREN[argv[1]](args)))
        return None
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("store", "path", "epoch", "memory", "decoders", "train"))
    parser.add_argument("folder", nargs="?", help="ImageNet-style folder (FOLDER/train/<class>/*.JPEG), or any source "
                        "gsimclr lists without decoding (a parquet file or folder)")
    parser.add_argument("--device", default="cpu", help="path: where the batched augmentation runs (cpu or cuda); "
                        "results go to data-path-<cpu|cuda>.json")
    parser.add_argument("--decoders", default="pil", help="path: comma-separated decoders of the store path "
                        "(pil, torchvision, cuda = nvJPEG), each measured whole and decoding alone")
    parser.add_argument("--warmup", type=int, default=1, help="path: untimed batches first (compilation on a GPU)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--stored-size", type=int, default=256)
    parser.add_argument("--size", type=int, default=64, help="crop size of the data path")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads of the batched augmentation (the decoder has --threads threads)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--train-limit", type=int, default=0, help="train: images of the epoch (0: all)")
    parser.add_argument("--model", default="paper_resnet",
                        help="train: the backbone (paper_resnet runs with n_blocks 0; e.g. timm:test_resnet)")
    parser.add_argument("--decode-only", action="store_true", help="epoch: decode and crop only, no augmentation")
    parser.add_argument("--data", default="/work/shared/data/cifar10", help="memory: the CIFAR-10 source")
    parser.add_argument("--src", nargs="+", default=[str(ROOT / "src")], help="memory: gsimclr src folders")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--resume", action="store_true", help="path: keep the rounds of a section cut short "
                        "(written after every child run) and measure the rest")
    args = parser.parse_args(argv)
    args.epoch = False
    args.decoder = args.decoders.split(",")[0]
    if args.command != "memory" and not args.folder:
        parser.error(f"{args.command} needs FOLDER")
    sys.path.insert(0, str(ROOT / "src"))
    load_start = [round(x, 2) for x in os.getloadavg()]
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"data-path-{kind}.json"

    def section(result) -> dict:
        return {"command": "python benchmarks/data_path.py " + " ".join(argv),
                "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "machine": machine() + (f", {_gpu_name()}" if kind == "cuda" else ""),
                "load_start": load_start, "load_end": [round(x, 2) for x in os.getloadavg()], "result": result,
                **({"partial": True} if result.get("partial") else {})}

    def write(sec: dict) -> None:
        results = json.loads(json_path.read_text()) if json_path.exists() else {}
        results[args.command] = sec
        write_atomic(json_path, json.dumps(results, indent=1) + "\n")
        if not sec.get("partial"):
            write_atomic(args.out / f"data-path-{kind}.md",
                         markdown({k: v for k, v in results.items() if not v.get("partial")}, kind))

    if args.command == "path":
        args.progress = lambda partial: write(section(partial))
        if args.resume and json_path.exists():
            earlier = json.loads(json_path.read_text()).get("path") or {}
            if earlier.get("partial"):
                args.resume_rounds = earlier["result"]["rounds_done"]
    result = {"store": cmd_store, "path": cmd_path, "epoch": cmd_epoch, "memory": cmd_memory,
              "decoders": cmd_decoders, "train": cmd_train}[args.command](args)
    sec = section(result)
    print(json.dumps(sec, indent=1))
    write(sec)
    return sec


if __name__ == "__main__":
    main()
