#!/usr/bin/env python
"""Guidance on CIFAR-10: how good are the pseudo labels, and how many true false negatives (same-class
pairs in a batch) does each sampler leave?

Pseudo-label sources, each at k = 64 and 512 (NMI and ARI against the true classes):

* **autoencoder**: the paper's shallow denoising autoencoder (32 px), k-means on its pooled codes;
* **SimCLR encoder**: k-means on the L2-normalised backbone features of a short SimCLR run;
* **re-clustered during training**: the same after every epoch of that run (what ``--pseudo-labels
  encoder`` with ``--recluster-every 1`` sees at each refresh).

Then G-SimCLR itself with ``--pseudo-labels encoder`` (warm-up 1 epoch, re-clustered every epoch,
``--sampler spread``, ``--guidance mask``, same encoder recipe), at k = 64 and 512: each refresh's
NMI/ARI and the epoch's diagnostics from its metrics.jsonl, including ``class_pairs_in_loss`` (the
same-class pairs the loss still treats as negatives after masking).

For each labelling and batch size (64 and 512) and each sampler (random, paper, spread, greedy), the
mean number of same-class pairs per batch (``class_pairs_per_batch``, over ``--sampler-epochs``
epochs; ``paper`` repeats one epoch) and same-pseudo-label pairs, beside the two references: the
expectation under random shuffling and the floor that spreading by the true classes reaches.

Affordable on a 2-core CPU: a random subset of the training split (``--train-limit``), a few
autoencoder epochs, a small encoder (paper ResNet without residual blocks, ``--encoder-size`` px)
trained for a few epochs. The pseudo labels are therefore weaker than full-length training would
give; the sampler comparison does not depend on that.

Usage (the data path is passed explicitly):
    nice -n 10 python benchmarks/guidance.py --data ../shared/data/cifar10 --out benchmarks/results

Writes ``OUT/guidance-<device>.json`` and ``.md`` (atomically) and prints the tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gsimclr import __version__
from gsimclr.data.sources import load_split
from gsimclr.guidance.autoencoder import AutoencoderOptions, encode, train_autoencoder
from gsimclr.guidance.diagnostics import epoch_pair_stats, random_pairs, spread_floor_pairs
from gsimclr.guidance.samplers import SAMPLERS, make_batch_sampler
from gsimclr.guidance.sources import cluster_features, describe
from gsimclr.io import save_npy, write_json, write_text

BATCHES = (64, 512)
KS = (64, 512)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="CIFAR-10 in the Hugging Face parquet layout (a folder)")
    p.add_argument("--train-limit", type=int, default=10000, help="random subset of the training split (0: all)")
    p.add_argument("--ae-epochs", type=int, default=3)
    p.add_argument("--encoder-epochs", type=int, default=4)
    p.add_argument("--encoder-size", type=int, default=16, help="image size of the SimCLR run")
    p.add_argument("--encoder-batch", type=int, default=256)
    p.add_argument("--sampler-epochs", type=int, default=3, help="epochs averaged per sampler")
    p.add_argument("--guided-ks", default="64,512",
                   help="k of the G-SimCLR runs with encoder pseudo labels, comma-separated ('' : none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--work", default=None, help="folder for intermediate results, reused when present "
                   "(default: runs/guidance-benchmark)")
    p.add_argument("--out", default="benchmarks/results")
    return p.parse_args(argv)


def subset(data, limit: int, seed: int):
    if not limit or limit >= len(data):
        return data
    return data.subset(np.sort(np.random.default_rng(seed).choice(len(data), limit, replace=False)))


def cached(path: Path, compute):
    """``compute()`` saved to ``path`` (.npy), or read back from there."""
    if path.exists():
        return np.load(path)
    value = compute()
    save_npy(path, value)
    return value


def autoencoder_features(args, work: Path) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()

    def compute():
        data = subset(load_split(args.data, "train", image_size=32), args.train_limit, args.seed)
        opts = AutoencoderOptions(epochs=args.ae_epochs, image_size=32, device=args.device, precision="fp32",
                                  seed=args.seed)
        return encode(train_autoencoder(data, opts, work / "autoencoder"), data, opts)

    return cached(work / "ae_features.npy", compute), time.perf_counter() - t0


def encoder_features(args, work: Path) -> tuple[list[np.ndarray], float]:
    """Backbone features after each epoch of a short SimCLR run (pretrained one epoch per call)."""
    from gsimclr.evaluation.features import extract_features
    from gsimclr.training.pretrain import pretrain

    paths = [work / f"encoder_features_epoch{e}.npy" for e in range(1, args.encoder_epochs + 1)]
    t0 = time.perf_counter()
    if not all(p.exists() for p in paths):
        data = subset(load_split(args.data, "train", image_size=args.encoder_size), args.train_limit, args.seed)
        cfg = encoder_cfg(args)
        for epoch, path in enumerate(paths, 1):
            if path.exists():
                continue
            model = pretrain(cfg, data, work / "simclr", resume=True, stop_after=1)
            device = torch.device(args.device)
            save_npy(path, extract_features(model.to(device), data, args.encoder_size, device, precision="fp32")["P3"].numpy())
    return [np.load(p) for p in paths], time.perf_counter() - t0


def encoder_cfg(args, **extra):
    from gsimclr.config import load_config

    return load_config("digits-quick", {"image_size": args.encoder_size, "epochs": args.encoder_epochs,
                                        "batch_size": args.encoder_batch, "device": args.device, "precision": "fp32",
                                        "compile": "off", "seed": args.seed, "warmup_epochs": 0, **extra})


def guided_encoder_runs(args, work: Path) -> tuple[list[dict], float]:
    """G-SimCLR with encoder pseudo labels re-clustered every epoch: its per-epoch records."""
    from gsimclr.training.pretrain import pretrain

    t0 = time.perf_counter()
    rows = []
    data = None
    for k in [int(x) for x in args.guided_ks.split(",") if x.strip()]:
        out = work / f"gsimclr-encoder-k{k}"
        cfg = encoder_cfg(args, pseudo_labels="encoder", recluster_warmup=1, recluster_every=1, k=k,
                          sampler="spread", guidance="mask")
        if not (out / "metrics.jsonl").exists() or len((out / "metrics.jsonl").read_text().splitlines()) < cfg.epochs:
            if data is None:
                data = subset(load_split(args.data, "train", image_size=args.encoder_size), args.train_limit, args.seed)
            pretrain(cfg, data, out, method="gsimclr", resume=True)
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        rows.append({"k": k, "records": records})
    return rows, time.perf_counter() - t0


def sampler_rows(labels: np.ndarray, classes: np.ndarray, seed: int, epochs: int) -> dict:
    rows = {}
    for batch in BATCHES:
        for name in SAMPLERS:
            sampler = make_batch_sampler(name, len(labels), batch, labels, seed=seed)
            stats = []
            for epoch in range(epochs):
                sampler.set_epoch(epoch)
                stats.append(epoch_pair_stats(sampler.epoch_batches(), labels, classes, guidance="mask"))
            rows[f"{name}@{batch}"] = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
    return rows


def references(classes: np.ndarray) -> dict:
    out = {}
    for batch in BATCHES:
        full, rest = divmod(len(classes), batch)
        sizes = [batch] * full + ([rest] if rest else [])
        out[batch] = {"random": random_pairs(classes, sizes), "floor": spread_floor_pairs(classes, sizes)}
    return out


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [f"# Guidance on CIFAR-10 ({meta['device']})", "",
             f"{meta['date']} - {meta['cpu']} - torch {meta['torch']}, gsimclr {meta['gsimclr']}", "",
             f"Command: `{meta['command']}`", "",
             f"Training subset: {meta['images']} images of CIFAR-10's training split (random, seed {meta['seed']}); "
             f"autoencoder: shallow, 32 px, {meta['ae_epochs']} epochs; SimCLR encoder: paper ResNet without "
             f"residual blocks, {meta['encoder_size']} px, batch {meta['encoder_batch']}, Adam, "
             f"{meta['encoder_epochs']} epochs (the digits-quick recipe). Short runs on a shared 2-core CPU: "
             "the pseudo labels are weaker than full training would give.", "",
             "Same-class pairs per batch (the true false negatives), mean over "
             f"{meta['sampler_epochs']} epochs; in brackets, same-pseudo-label pairs per batch.", ""]
    refs = result["references"]
    header = "| pseudo labels | k | NMI | ARI | " + " | ".join(
        f"{s} @{b}" for b in BATCHES for s in SAMPLERS) + " |"
    lines += [header, "|---" * (header.count("|") - 1) + "|"]
    lines.append("| *references: random / floor* | | | | " + " | ".join(
        f"{refs[str(b)]['random']:.1f} / {refs[str(b)]['floor']:.1f}" if s == "random" else ""
        for b in BATCHES for s in SAMPLERS) + " |")
    for row in result["rows"]:
        cells = [f"{row['samplers'][f'{s}@{b}']['class_pairs_per_batch']:.1f} "
                 f"({row['samplers'][f'{s}@{b}']['pseudo_pairs_per_batch']:.1f})" for b in BATCHES for s in SAMPLERS]
        lines.append(f"| {row['source']} | {row['k']} | {row['nmi']:.3f} | {row['ari']:.3f} | " + " | ".join(cells) + " |")
    if result["guided_encoder"]:
        lines += guided_lines(result)
    lines += ["", "Timings of this invocation: " + ", ".join(
        f"{k} {v:.0f} s" if v >= 1 else f"{k} reused from --work" for k, v in result["seconds"].items()) + "."]
    return "\n".join(lines) + "\n"


def guided_lines(result: dict) -> list[str]:
    meta = result["meta"]
    lines = ["", f"G-SimCLR with `--pseudo-labels encoder` (warm-up 1 epoch, re-clustered after every epoch, "
             f"`--sampler spread --guidance mask`, batch {meta['encoder_batch']}, the encoder recipe above): per "
              "epoch, the NMI/ARI of the clustering made after it, and the diagnostics of the batches it trained on "
              "(the first epoch trains as SimCLR).", "",
              "| k | epoch | NMI | ARI | same-class pairs / batch | left as negatives | same-pseudo-label pairs | "
              "random | floor |", "|---|---|---|---|---|---|---|---|---|"]
    for run in result["guided_encoder"]:
        for r in run["records"]:
            nmi = f"{r['pseudo_nmi']:.3f}" if "pseudo_nmi" in r else ""
            ari = f"{r['pseudo_ari']:.3f}" if "pseudo_ari" in r else ""
            pseudo = f"{r['pseudo_pairs_per_batch']:.1f}" if "pseudo_pairs_per_batch" in r else ""
            lines.append(f"| {run['k']} | {r['epoch']} | {nmi} | {ari} | {r['class_pairs_per_batch']:.1f} | "
                         f"{r['class_pairs_in_loss']:.1f} | {pseudo} | {r['class_pairs_random']:.1f} | "
                         f"{r['class_pairs_floor']:.1f} |")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    work = Path(args.work) if args.work else Path("runs") / "guidance-benchmark"
    torch.manual_seed(args.seed)
    classes = subset(load_split(args.data, "train", image_size=32), args.train_limit, args.seed).labels
    seconds = {}
    ae_feats, seconds["autoencoder"] = autoencoder_features(args, work)
    enc_feats, seconds["simclr encoder"] = encoder_features(args, work)
    sources = [("autoencoder", ae_feats, False)]
    sources += [(f"SimCLR encoder, re-clustered after epoch {e}", f, True) for e, f in enumerate(enc_feats[:-1], 1)]
    sources += [(f"SimCLR encoder (epoch {len(enc_feats)})", enc_feats[-1], True)]
    rows = []
    t0 = time.perf_counter()
    for name, feats, normalize in sources:
        for k in KS:
            labels = cluster_features(feats, k, args.seed, normalize=normalize)
            info = describe(labels, classes)
            rows.append({"source": name, **info, "samplers": sampler_rows(labels, classes, args.seed, args.sampler_epochs)})
            print(f"{name} k={k}: NMI {info['nmi']:.3f} ARI {info['ari']:.3f}", flush=True)
    seconds["k-means and samplers"] = time.perf_counter() - t0
    guided, guided_s = guided_encoder_runs(args, work)
    if guided:
        seconds["G-SimCLR encoder runs"] = guided_s
    device = "cpu" if args.device == "cpu" else torch.cuda.get_device_name(0)
    result = {"meta": {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                       "command": "python " + " ".join(["benchmarks/guidance.py", *(argv if argv is not None else sys.argv[1:])]),
                       "device": args.device, "cpu": f"{platform.processor() or platform.machine()} "
                       f"({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)" if device == "cpu" else device,
                       "torch": torch.__version__, "gsimclr": __version__, "images": int(len(classes)),
                       "seed": args.seed, "ae_epochs": args.ae_epochs, "encoder_epochs": args.encoder_epochs,
                       "encoder_size": args.encoder_size, "encoder_batch": args.encoder_batch,
                       "sampler_epochs": args.sampler_epochs},
              "references": {str(b): v for b, v in references(classes).items()}, "rows": rows,
              "guided_encoder": [{"k": g["k"], "records": [{key: r[key] for key in r if key != "time"} for r in g["records"]]}
                                 for g in guided], "seconds": seconds}
    stem = out / f"guidance-{'cpu' if args.device == 'cpu' else 'cuda'}"
    write_json(stem.with_suffix(".json"), result)
    table = markdown(result)
    write_text(stem.with_suffix(".md"), table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
