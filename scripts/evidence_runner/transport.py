"""What travels between this checkout and the GPU machine, in both directions.

**Out** (``--export $OUT``): per invocation, under names no other invocation uses (so two invocations in one
command never overwrite each other):

    evidence-<id>.tar      every result file the invocation wrote (JSON, tables, plots, partial progress,
                           timings), rewritten after every part and every ``--export-every`` seconds
    state-<id>-<k>.tgz     the resumable state of each unfinished part (its run folder: checkpoints,
                           metrics, finished stages), split into files of at most :data:`CHUNK_MIB` MiB

A call killed at any second leaves the last complete version of each (each file is replaced atomically).
A part whose state exceeds what may come back (:data:`STATE_OUT_MIB`, a file larger than a chunk) is
named in the log and the tar's ``state-skipped.json``; it resumes only on the same warm machine.

**Back here** (``--import FILE_OR_FOLDER ...``): result files go into the checkout (``timings.json`` merged),
state chunks into one packed file, ``.evidence/state.tar``, which the next call carries (``carry`` it beside
the data) and :func:`unpack_state` puts in place at its start, on any machine.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import threading
import time
from pathlib import Path

from evidence_runner.context import STATE_OUT_MIB, Ctx, Part, log

CHUNK_MIB = 15
STATE_TAR = Path(".evidence") / "state.tar"
STATE_MANIFEST = "__state__.json"
RESULT_PREFIXES = ("results/", "benchmarks/results/")
_lock = threading.Lock()


def _results_members(ctx: Ctx) -> list[Path]:
    return [p for p in dict.fromkeys(list(ctx.written)) if p.exists()]


def _state_files(ctx: Ctx, part: Part) -> list[Path]:
    files = []
    for folder in part.state_dirs(ctx):
        if folder.is_dir():
            files += [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")
                      and not p.name.endswith(".tmp")]
    return files


def _add_file(tar: tarfile.TarFile, path: Path, arcname: str) -> None:
    """Add a file as it is now; a JSON-lines file only up to its last complete line (a write in flight)."""
    data = path.read_bytes()
    if path.suffix == ".jsonl" and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
    info = tarfile.TarInfo(arcname)
    info.size, info.mtime, info.mode = len(data), int(path.stat().st_mtime), 0o644
    tar.addfile(info, io.BytesIO(data))


def _write_atomic_tar(target: Path, mode: str, fill) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    with tarfile.open(tmp, mode, **({"compresslevel": 1} if mode == "w:gz" else {})) as tar:
        fill(tar)
    os.replace(tmp, target)


def export(ctx: Ctx, folder: Path, unfinished: list[Part] = ()) -> list[Path]:
    """Write this invocation's results tar and the state of ``unfinished`` parts into ``folder``."""
    with _lock:
        folder.mkdir(parents=True, exist_ok=True)
        skipped: dict[str, str] = {}
        chunks: list[list[tuple[Path, str, str]]] = []
        limit, budget = CHUNK_MIB * 2**20, STATE_OUT_MIB * 2**20
        for part in unfinished:
            files = _state_files(ctx, part)
            size = sum(p.stat().st_size for p in files)
            big = [p for p in files if p.stat().st_size > limit]
            if big or size > budget:
                skipped[part.name] = (f"state of {size / 2**20:.0f} MiB" + (f" ({big[0].name} alone is "
                                      f"{big[0].stat().st_size / 2**20:.0f} MiB)" if big else "")
                                      + f" exceeds what a call brings back ({CHUNK_MIB} MiB a file, "
                                      f"{STATE_OUT_MIB} MiB in all): it resumes only on the same warm machine")
                continue
            budget -= size
            for path in files:
                if not chunks or sum(p.stat().st_size for p, _, _ in chunks[-1]) + path.stat().st_size > limit:
                    chunks.append([])
                chunks[-1].append((path, os.path.relpath(path, ctx.runs), part.name))
        skip_note = ctx.root / "results" / "evidence" / "partial" / "state-skipped.json"
        if skipped:
            from evidence_runner.context import write_json

            write_json(ctx, skip_note, skipped)
        results = folder / f"evidence-{ctx.invocation}.tar"

        def fill_results(tar):
            for path in _results_members(ctx):
                _add_file(tar, path, os.path.relpath(path, ctx.root))

        _write_atomic_tar(results, "w", fill_results)
        written = [results]
        for k, chunk in enumerate(chunks):
            manifest = {"invocation": ctx.invocation, "exported": time.time(), "commit": ctx.commit,
                        "files": {arc: part for _, arc, part in chunk}}

            def fill_state(tar, chunk=chunk, manifest=manifest):
                for path, arc, _ in chunk:
                    _add_file(tar, path, arc)
                data = json.dumps(manifest).encode()
                info = tarfile.TarInfo(STATE_MANIFEST)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

            target = folder / f"state-{ctx.invocation}-{k}.tgz"
            _write_atomic_tar(target, "w:gz", fill_state)
            written.append(target)
        for stale in folder.glob(f"state-{ctx.invocation}-*.tgz"):
            if stale not in written:
                stale.unlink()
        return written


class PeriodicExport:
    """A thread that exports every ``every`` seconds while parts run (and refreshes the running part's
    progress file first), so a call killed at any second has brought back what it measured until then."""

    def __init__(self, ctx: Ctx, folder: Path, every: float, unfinished):
        self.ctx, self.folder, self.every, self.unfinished = ctx, folder, every, unfinished
        self.running = None  # evidence_runner.runner.Running
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="evidence-export", daemon=True)

    def __enter__(self) -> "PeriodicExport":
        if self.every > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                running = self.running
                if running is not None:
                    running.refresh(self.ctx)
                export(self.ctx, self.folder, self.unfinished())
            except Exception as exc:  # an export that fails must not stop the measurement
                log(f"periodic export failed: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------------- import


def _safe(name: str) -> bool:
    return not name.startswith("/") and ".." not in Path(name).parts


def import_results(tar_path: Path, root: Path) -> list[str]:
    """Unpack a results tar into ``root``: only regular files under results/ or benchmarks/results/, and
    RESULTS.md; ``results/evidence/timings.json`` is merged with the one here, not replaced."""
    from evidence_runner.plan import TIMINGS, merge_timings

    names = []
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            name = member.name
            if not (member.isfile() and _safe(name) and (name == "RESULTS.md" or name.startswith(RESULT_PREFIXES))):
                log(f"import: ignored {name}")
                continue
            dest = root / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            data = tar.extractfile(member).read()
            if name == TIMINGS and dest.exists():
                data = (json.dumps(merge_timings(json.loads(dest.read_text()), json.loads(data)), indent=2) + "\n").encode()
            tmp = dest.with_name(f".{dest.name}.import.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, dest)
            names.append(name)
    return names


def import_paths(paths: list[Path], root: Path) -> list[str]:
    """Import what device calls brought back (files, or the folders holding them: ``files_at``): results
    tars into the checkout, state chunks into ``.evidence/state.tar`` (the newest state of each part)."""
    files = []
    for path in paths:
        files += sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    names = []
    for f in files:
        if f.name.startswith("evidence") and f.name.endswith(".tar"):
            names += import_results(f, root)
    chunks = [f for f in files if f.name.startswith("state-") and f.name.endswith(".tgz")]
    if chunks:
        names += merge_state(chunks, root)
    return names


def _read_state(path: Path) -> dict[str, dict]:
    """``{part: {arcname: bytes}}`` and the export time of a state tar (chunk or packed)."""
    out: dict[str, dict] = {}
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile() and _safe(m.name)}
        manifest = json.loads(tar.extractfile(members.pop(STATE_MANIFEST)).read()) if STATE_MANIFEST in members else None
        if manifest is None:
            return out
        for name, member in members.items():
            part = manifest["files"].get(name)
            if part is not None:
                entry = out.setdefault(part, {"exported": manifest["exported"], "files": {}})
                entry["files"][name] = tar.extractfile(member).read()
    return out


def merge_state(chunks: list[Path], root: Path) -> list[str]:
    """Fold state chunks (and the packed state already here) into one ``.evidence/state.tar``: per part
    the newest export wins whole; parts whose result JSON now exists here are dropped."""
    target = root / STATE_TAR
    parts: dict[str, dict] = _read_state(target) if target.exists() else {}
    fresh: dict[str, dict] = {}
    for chunk in chunks:
        for part, entry in _read_state(chunk).items():
            mine = fresh.setdefault(part, {"exported": entry["exported"], "files": {}})
            if entry["exported"] > mine["exported"]:
                mine.update(exported=entry["exported"], files={})
            if entry["exported"] == mine["exported"]:
                mine["files"].update(entry["files"])
    for part, entry in fresh.items():
        if part not in parts or entry["exported"] >= parts[part]["exported"]:
            parts[part] = entry
    from evidence_runner.stages import build_stages

    done = {p.name for s in build_stages() for p in s.parts if p.done(Ctx(root=root, runs=root, data={}))}
    parts = {k: v for k, v in parts.items() if k not in done}
    target.parent.mkdir(parents=True, exist_ok=True)
    if not parts:
        target.unlink(missing_ok=True)
        return []

    def fill(tar):
        files = {}
        for part, entry in parts.items():
            for name, data in entry["files"].items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                files[name] = part
        manifest = json.dumps({"exported": max(e["exported"] for e in parts.values()), "files": files,
                               "parts": {k: v["exported"] for k, v in parts.items()}}).encode()
        info = tarfile.TarInfo(STATE_MANIFEST)
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))

    _write_atomic_tar(target, "w", fill)
    log(f"state of {', '.join(sorted(parts))} -> {target} ({target.stat().st_size / 2**20:.1f} MiB; carry it)")
    return [str(STATE_TAR)]


def unpack_state(ctx: Ctx, parts: list[Part]) -> list[str]:
    """At the start of a call: put the carried ``.evidence/state.tar`` in place for each unfinished part
    whose state folders are not here yet (a fresh machine); a warm machine's own newer state is kept."""
    path = ctx.root / STATE_TAR
    if not path.exists():
        return []
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile() and _safe(m.name)}
        manifest = json.loads(tar.extractfile(members.pop(STATE_MANIFEST)).read()) if STATE_MANIFEST in members else {}
        restored = []
        for part in parts:
            if part.done(ctx) or any(d.exists() for d in part.state_dirs(ctx)):
                continue
            names = [n for n, p in manifest.get("files", {}).items() if p == part.name and n in members]
            for name in names:
                dest = ctx.runs / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(members[name]) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
            if names:
                restored.append(part.name)
    if restored:
        log(f"state carried back for {', '.join(restored)} (from {path})")
    return restored
