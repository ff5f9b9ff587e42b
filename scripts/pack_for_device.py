#!/usr/bin/env python
"""Prepare what a GPU device call carries for ``scripts/evidence.py`` (run it in the checkout the device
tool sends: the session's repository root).

Writes, all ignored by git (``.gitignore``: ``/.evidence/``, ``.whl/``):

    .evidence/cifar10/{train,test}-00000-of-00001.parquet    copies of the CIFAR-10 parquet files
    .evidence/imagenet5/{train,test}-00000-of-00001.parquet  the ImageNet subset packed into the Hugging Face
                                                             parquet layout (the JPEG bytes unchanged, ClassLabel
                                                             names in the schema), read by gsimclr's parquet source
    .evidence/COMMIT                                         HEAD and the digest of its code files (the device copy
                                                             has no .git; scripts/evidence.py recomputes the code's
                                                             name from it at the start of every call)
    .evidence/state.tar                                      (made by ``scripts/evidence.py --import``, not here) the
                                                             unfinished parts' state, carried by the next call
    .whl/*.whl                                               the wheels the GPU machine lacks (lightly and what it
                                                             needs beyond that machine's packages), Python 3.12

and prints the size of each call's load against the device's 64 MiB limit (the working tree travels too).
CIFAR-10 (55 MB) and the ImageNet subset (47 MB) do not fit together, so each data set has its own call.

    python scripts/pack_for_device.py                        # data from ../shared/data
    python scripts/pack_for_device.py --data /path/to/data --no-wheels
    python scripts/pack_for_device.py --verify               # also decode both imagenet5 forms and compare
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

LIMIT = 64 * 2**20
# What the GPU machine lacks for the lightly side of the benchmarks (its image has torch 2.11,
# torchvision 0.26, pytorch-lightning, numpy, tqdm, PyYAML, packaging: /work/.library/device/KINDS.md).
# lightly 1.6.0 needs hydra-core, which needs omegaconf and antlr4-python3-runtime 4.9.*.
WHEELS = ["lightly==1.6.0", "hydra-core==1.3.8", "omegaconf==2.3.1", "antlr4-python3-runtime==4.9.3"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]


def log(msg: str) -> None:
    print(f"[pack] {msg}", flush=True)


def size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def copy_cifar(src: Path, dest: Path) -> None:
    files = sorted(src.glob("*.parquet"))
    if not files:
        raise SystemExit(f"pack: no CIFAR-10 parquet files in {src}")
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = dest / f.name
        if target.exists() and target.stat().st_size == f.stat().st_size:
            continue
        shutil.copyfile(f, target.with_name(f".{f.name}.tmp"))
        os.replace(target.with_name(f".{f.name}.tmp"), target)
    log(f"cifar10: {len(files)} files, {size(dest) / 2**20:.1f} MiB -> {dest.relative_to(ROOT)}")


def pack_imagenet5(src: Path, dest: Path) -> None:
    """Each split folder (train/, test/) of class folders becomes one parquet file; the label order is
    gsimclr's image-folder order (sorted class names), so both forms give the same labels."""
    from evidence_runner.smoke_data import write_parquet

    from gsimclr.data.sources import IMAGE_EXTENSIONS

    for split in ("train", "test"):
        folder = src / split
        if not folder.is_dir():
            raise SystemExit(f"pack: {folder} is not a folder")
        classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        blobs, labels, paths = [], [], []
        for label, name in enumerate(classes):
            for f in sorted((folder / name).iterdir()):
                if f.name.startswith(".") or not f.name.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                blobs.append(f.read_bytes())
                labels.append(label)
                paths.append(f"{name}/{f.name}")
        write_parquet(dest / f"{split}-00000-of-00001.parquet", blobs, labels, classes, paths)
        log(f"imagenet5 {split}: {len(blobs)} images, {len(classes)} classes")
    log(f"imagenet5: {size(dest) / 2**20:.1f} MiB -> {dest.relative_to(ROOT)}")


def verify_imagenet5(src: Path, dest: Path) -> None:
    import numpy as np

    from gsimclr.data.sources import load_split

    with tempfile.TemporaryDirectory() as cache:
        for split in ("train", "test"):
            a = load_split(str(src), split, image_size=64, cache_dir=cache)
            b = load_split(str(dest), split, image_size=64, cache_dir=cache)
            same = np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels) and a.classes == b.classes
            log(f"verify imagenet5 {split}: folder and parquet decode {'identically' if same else 'DIFFERENTLY'} "
                f"({len(a)} images)")
            if not same:
                raise SystemExit("pack: the packed imagenet5 differs from the folder")


def download_wheels(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for spec in WHEELS:
        name = spec.split("==")[0].replace("-", "_").lower()
        if any(w.name.lower().startswith(name + "-") for w in dest.glob("*.whl")):
            continue
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(dest), spec]
        if subprocess.run(cmd).returncode != 0:
            # a pure-Python project published only as a source archive (antlr4-python3-runtime 4.9.3):
            # build its py3-none-any wheel here, which installs on any Python 3
            log(f"{spec}: no binary wheel on the index; building a pure-Python wheel")
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), spec], check=True)
    for w in sorted(dest.glob("*.whl")):
        log(f"wheel {w.name} ({w.stat().st_size / 2**10:.0f} KiB)")


def tree_bytes() -> int:
    """What travels besides the carried paths: tracked files and untracked files git does not ignore."""
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout.decode().split("\0")
    return sum((ROOT / f).stat().st_size for f in out if f and (ROOT / f).is_file())


def commit_stamp() -> None:
    from gsimclr.provenance import write_stamp

    stamp = write_stamp(ROOT)
    log(f"commit {stamp['commit']} (HEAD {stamp['head']}, code digest {stamp['head_digest']}) -> .evidence/COMMIT")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"),
                        help="folder holding cifar10/ (parquet) and imagenet5/ (train/ and test/ class folders)")
    parser.add_argument("--no-wheels", dest="wheels", action="store_false", help="skip the wheel download")
    parser.add_argument("--verify", action="store_true", help="check that the packed imagenet5 decodes as the folder")
    args = parser.parse_args(argv)
    data, out = Path(args.data), ROOT / ".evidence"
    copy_cifar(data / "cifar10", out / "cifar10")
    pack_imagenet5(data / "imagenet5", out / "imagenet5")
    if args.verify:
        verify_imagenet5(data / "imagenet5", out / "imagenet5")
    commit_stamp()
    if args.wheels:
        download_wheels(ROOT / ".whl")
    tree = tree_bytes()
    state = [".evidence/state.tar"] if (ROOT / ".evidence" / "state.tar").exists() else []
    calls = {"cifar10": [".evidence/cifar10", ".evidence/COMMIT", ".whl", *state],
             "imagenet5": [".evidence/imagenet5", ".evidence/COMMIT", ".whl", *state]}
    report = {}
    for name, carry in calls.items():
        total = tree + sum(size(ROOT / c) for c in carry if (ROOT / c).exists())
        report[name] = {"carry": carry, "MiB": round(total / 2**20, 1), "fits": total <= LIMIT}
        log(f"call {name}: tree {tree / 2**20:.1f} MiB + carried {(total - tree) / 2**20:.1f} MiB = "
            f"{total / 2**20:.1f} MiB of 64 MiB: {'fits' if total <= LIMIT else 'TOO LARGE'}")
    print(json.dumps(report))
    return 0 if all(r["fits"] for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
