"""The run folder: its layout, its lock and the provenance of its stages (the one owner of all three).

Layout (every path the pipeline, the CLI and the report use comes from :class:`RunFolder`)::

    .lock                            held (fcntl.flock) by the command writing here; holds its pid
    run.json, config.yaml            what produced it (command, versions, device, the full config);
                                     written only once a command is accepted
    pseudo_labels/                   autoencoder.safetensors, pseudo_labels.npy/.json, metrics.jsonl,
                                     tsne_autoencoder.png, provenance.json
    <method>/  (simclr/, gsimclr/)   checkpoint.safetensors, metrics.jsonl, timing.json, tensorboard/,
                                     provenance.json; eval.json + eval.provenance.json, tsne_encoder.png;
                                     with encoder pseudo labels pseudo_labels.npy/.json (the latest
                                     re-clustering) and checkpoint_pseudo_labels.npy (the checkpoint's)
    supervised.json                  the supervised baseline, with supervised.provenance.json
    results.json, results.md         the table; loss_curves.png, knn_curves.png

**Lock.** :meth:`RunFolder.lock` takes an exclusive, non-blocking ``flock`` on ``.lock`` for the
duration of a command that writes into the folder (every stage command, ``run``, the evaluation
commands, ``export`` into the run); a second writer gets a one-line error. Commands that only read
a run (``export`` elsewhere, ``embed``, ``summarize``) take a shared lock: several readers at once,
refused while a writer holds the folder. In a torchrun process group only rank 0 locks (the other
processes never write); the rank is the initialised group's, not the ``RANK`` variable's. On
acquisition, temporary files (``.*.tmp``) a killed writer left behind are removed. A command refused
while it holds the lock leaves nothing behind: no folder it created, no lock file it created.

**Provenance.** Each stage records beside its outputs what it was made from (:func:`provenance`):
the content of its data (:func:`gsimclr.data.identity.content_id`), the config fields it depends on (:func:`stage_fields`), the identity
of its inputs (e.g. the pseudo labels' digest for a guided method, the checkpoint's checksum for
an evaluation) and the code version. ``--resume`` reuses a stage only when the recorded provenance
equals the current one, and otherwise refuses, naming what differs (:meth:`RunFolder.reusable`).

Example:
    >>> import tempfile
    >>> folder = RunFolder(tempfile.mkdtemp())
    >>> folder.checkpoint("simclr").relative_to(folder.root).as_posix()
    'simclr/checkpoint.safetensors'
    >>> with folder.lock():
    ...     with folder.lock():
    ...         pass
    Traceback (most recent call last):
    ...
    gsimclr.errors.UserError: ...is in use by another gsimclr command (pid ...); wait for it to finish or choose another --out
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gsimclr import __version__
from gsimclr.errors import UserError
from gsimclr.io import TEMP_GLOB, ensure_folder, remove_stale_temporaries, write_error, write_json

LOCK = ".lock"
CHECKPOINT = "checkpoint.safetensors"
#: G-SimCLR with encoder pseudo labels: the labels its checkpoint trained with (what --resume uses)
CHECKPOINT_PSEUDO_LABELS = "checkpoint_pseudo_labels.npy"
METRICS = "metrics.jsonl"
PROVENANCE = "provenance.json"
TSNE_ENCODER = "tsne_encoder.png"

# The config fields each kind of stage depends on (beyond its data fingerprints and inputs). Fields
# that change only how a stage is watched or stored (checkpoint_every, monitor_every, tsne_points)
# or where it runs (device, precision, compile) are left out, so a run may be resumed elsewhere;
# so is ``epochs``, so that --resume with a larger --epochs trains an existing checkpoint longer
# (its evaluations, which depend on the checkpoint's checksum, are then redone).
# The config each stage depends on, by option section (so a new option joins its stage by itself),
# plus single fields from other sections; excluded: what may change between parts of one run.
STAGE_SECTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # stage: (sections, extra fields, excluded fields)
    "pseudo_labels": (("pseudo_labels",), ("image_size", "cache_size", "resize", "defaults", "seed"), ()),
    "pretrain": (("model", "augment", "pretrain"), ("image_size", "cache_size", "resize", "seed"),
                 ("epochs", "checkpoint_every", "checkpoint_minutes", "monitor_every")),
    "guidance": (("guidance",), (), ()),
    "evaluation": (("linear", "knn", "finetune", "protocol"), ("image_size", "seed"), ()),
    "supervised": (("supervised", "protocol"), ("image_size", "model", "n_blocks", "batch_size", "seed"), ()),
}


def stage_fields(kind: str) -> list[str]:
    """The config fields a stage of ``kind`` depends on (:data:`STAGE_SECTIONS`), in declaration order."""
    from gsimclr.config import FIELDS, option_readers, section_fields

    sections, extra, excluded = STAGE_SECTIONS[kind]
    wanted = (set(section_fields(*sections)) | set(extra)) - set(excluded)
    # an entry's options count only where the run uses the entry (provenance adds them): a plug-in
    # installed later leaves the records of earlier runs valid
    return [f for f in FIELDS if f in wanted and not option_readers(f)]


def _main_process() -> bool:
    """Rank 0 of an initialised process group, or a process in no group (a world of one).

    The rank comes from ``torch.distributed`` once a group is initialised, never from ``RANK`` alone:
    ``RANK=1 gsimclr pretrain`` without torchrun is one process and takes the lock like any other.
    Only read when PyTorch's distributed module is already imported (no import here)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not getattr(dist, "is_available", lambda: False)() or not dist.is_initialized():
        return True
    return dist.get_rank() == 0


@dataclass(frozen=True, init=False)
class RunFolder:
    """One run folder: where each file lives, the lock, and each stage's provenance."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    # ------------------------------------------------------------------------------------ layout
    @property
    def lock_file(self) -> Path:
        return self.root / LOCK

    @property
    def run_info(self) -> Path:
        return self.root / "run.json"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def pseudo_dir(self) -> Path:
        return self.root / "pseudo_labels"

    @property
    def pseudo_labels(self) -> Path:
        return self.pseudo_dir / "pseudo_labels.npy"

    @property
    def pseudo_meta(self) -> Path:
        return self.pseudo_dir / "pseudo_labels.json"

    @property
    def tsne_autoencoder(self) -> Path:
        return self.pseudo_dir / "tsne_autoencoder.png"

    def stage_dir(self, method: str) -> Path:
        return self.root / method

    def checkpoint(self, method: str) -> Path:
        return self.stage_dir(method) / CHECKPOINT

    def metrics(self, stage: str) -> Path:
        return self.root / stage / METRICS

    def timing(self, method: str) -> Path:
        return self.stage_dir(method) / "timing.json"

    def eval(self, method: str) -> Path:
        return self.stage_dir(method) / "eval.json"

    @property
    def supervised(self) -> Path:
        return self.root / "supervised.json"

    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    @property
    def results_md(self) -> Path:
        return self.root / "results.md"

    @property
    def loss_curves(self) -> Path:
        return self.root / "loss_curves.png"

    @property
    def knn_curves(self) -> Path:
        return self.root / "knn_curves.png"

    def provenance_file(self, stage: str) -> Path:
        """Where a stage's provenance is stored: beside its outputs.

        ``pseudo_labels`` and a method name: ``<stage>/provenance.json``; ``<method>/eval``:
        ``<method>/eval.provenance.json``; ``supervised``: ``supervised.provenance.json``."""
        if stage == "supervised":
            return self.root / "supervised.provenance.json"
        if stage.endswith("/eval"):
            return self.root / stage.rsplit("/", 1)[0] / "eval.provenance.json"
        return self.root / stage / PROVENANCE

    def is_empty(self) -> bool:
        """No files but the lock and stale temporaries (a new or refused run's folder)."""
        if not self.root.is_dir():
            return True
        return all(p.name == LOCK or p.match(TEMP_GLOB) for p in self.root.iterdir())

    def check_stage_target(self) -> None:
        """A stage command (pseudo-label, pretrain, supervised) writes into a new or empty folder, or into a
        gsimclr run folder (one holding run.json); never among another program's files."""
        if self.is_empty() or self.run_info.is_file():
            return
        others = sorted(p.name for p in self.root.iterdir() if p.name != LOCK and not p.match(TEMP_GLOB))
        raise UserError(f"--out {self.root} is not empty and is not a gsimclr run folder (it holds {others[0]}"
                        f"{' and more' if len(others) > 1 else ''}, but no run.json); choose another --out")

    # -------------------------------------------------------------------------------------- lock
    @contextmanager
    def lock(self, shared: bool = False, transient: bool = False) -> Iterator["RunFolder"]:
        """Hold the folder's lock for the duration of the ``with`` block.

        Exclusive (the default) for a command that writes here: rank 0 of a process group (or a process
        in none) takes it, creating the folder; the other ranks of the group never write. ``shared``
        for a command that only reads the folder (export elsewhere, embed, summarize): any number of
        readers at once, refused while a writer holds it; it creates nothing (a folder without a lock
        file was never written by a running command). ``transient`` for a folder that is not a run folder
        (a loose checkpoint's, where an evaluation writes its result): a lock file this command created is
        removed again when it ends, while still held, so no stray ``.lock`` is left among the user's files."""
        if shared:
            with self._shared_lock():
                yield self
            return
        if not _main_process():
            yield self
            return
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"--out {self.root} is a file, not a folder")
        created = not self.root.exists()
        ensure_folder(self.root, "run folder")
        new_lock = not self.lock_file.exists()
        try:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            if created:
                shutil.rmtree(self.root, ignore_errors=True)
            raise write_error(self.lock_file, exc, "cannot create the lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"run folder {self.root} is in use by another gsimclr command (pid {holder}); "
                                "wait for it to finish or choose another --out") from None
            raise write_error(self.lock_file, exc, "cannot lock") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            remove_stale_temporaries(self.root)
            yield self
        except BaseException:
            if self.is_empty():  # a refused command leaves nothing behind: not even its lock file
                if created:
                    shutil.rmtree(self.root, ignore_errors=True)
                elif new_lock:
                    self.lock_file.unlink(missing_ok=True)
            raise
        finally:
            try:
                if transient and new_lock:
                    with contextlib.suppress(OSError):
                        self.lock_file.unlink()
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    @contextmanager
    def _shared_lock(self) -> Iterator[None]:
        try:
            fd = os.open(self.lock_file, os.O_RDONLY)
        except FileNotFoundError:
            yield  # never locked by a writer (e.g. a copied run): nothing to respect
            return
        except OSError as exc:
            raise UserError(f"cannot read the lock file {self.lock_file}: {exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UserError(f"cannot lock {self.lock_file}: {exc.strerror or exc}") from None
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise UserError(f"run folder {self.root} is being written by another gsimclr command (pid {holder}); "
                                "wait for it to finish") from None
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -------------------------------------------------------------------------------- provenance
    def recorded(self, stage: str) -> dict[str, Any] | None:
        """The provenance recorded for ``stage``, or None."""
        path = self.provenance_file(stage)
        if not path.is_file():
            return None
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None
        # every reader looks keys up in the record and in its parts: [] or {"config": 5} is damage, not a difference
        parts = ("data", "inputs", "config", "files")
        bad = (type(recorded).__name__ if not isinstance(recorded, dict) else
               next((f"{p!r}: a JSON {type(recorded[p]).__name__}" for p in parts
                     if p in recorded and not isinstance(recorded[p], dict)), None))
        if bad:
            raise UserError(f"{path} is damaged: it holds {'a JSON ' if ':' not in bad else ''}{bad}, not a provenance "
                            "record; restore the file, or start a new run with another --out")
        return recorded

    def record(self, stage: str, prov: dict[str, Any]) -> None:
        """Store ``stage``'s provenance beside it (before its outputs, so they are never unlabelled)."""
        write_json(self.provenance_file(stage), prov)

    def reusable(self, stage: str, expected: dict[str, Any], outputs: Iterable[Path]) -> bool:
        """Whether ``stage``'s outputs may be reused on ``--resume``: True when they all exist and were
        made from ``expected``; False when some do not exist (the stage runs); a UserError naming the
        differences when they exist but were made from something else."""
        outputs = list(outputs)
        if not outputs or not all(p.exists() for p in outputs):
            return False
        self.check(stage, expected)
        return True

    def check(self, stage: str, expected: dict[str, Any]) -> None:
        """A UserError naming what differs when ``stage``'s recorded provenance is not ``expected``."""
        recorded = self.recorded(stage)
        if recorded is None:
            raise UserError(f"--resume: {self.root / stage.split('/')[0]} has no provenance record (made by an "
                            "older gsimclr or damaged); start a new run with another --out")
        diffs = differences(recorded, expected)
        if recorded.get("code") != expected.get("code") and not diffs:  # same inputs and options: reused, said once
            print(f"note: --resume: stage {stage} was made by gsimclr {recorded.get('code')}, this is "
                  f"{expected.get('code')}; its data, inputs and options match, so it is reused", file=sys.stderr)
        if diffs:
            shown = "; ".join(diffs[:4]) + ("; ..." if len(diffs) > 4 else "")
            raise UserError(f"--resume: stage {stage} in {self.root} was made from other inputs ({shown}); "
                            "rerun with the same options or choose another --out")


def provenance(kind: str, cfg: Any, data: dict[str, Any], inputs: dict[str, Any] | None = None,
               extra_fields: Iterable[str] = ()) -> dict[str, Any]:
    """What a stage of ``kind`` (a :data:`STAGE_SECTIONS` key) is made from: ``data`` (name -> image
    set, or None), the config fields it depends on, ``inputs`` (name -> digest) and the code version.

    Each image set is recorded by its content (:func:`gsimclr.data.identity.content_id`), which is what
    resume compares, and by its files' fingerprint under ``files`` (where it was read from, for the
    reader; not compared: the same images moved, copied or mounted anew continue)."""
    from gsimclr.config import entry_fields
    from gsimclr.data.identity import content_id

    values = cfg.to_dict()
    fields = stage_fields(kind) + [f for f in extra_fields if f not in stage_fields(kind)]
    fields += [f for f in entry_fields(cfg, fields) if f not in fields]  # of the entries these options pick
    ids = {k: v if v is None or isinstance(v, str) else content_id(v) for k, v in data.items()}
    files = {k: v if v is None or isinstance(v, str) else getattr(v, "fingerprint", None) for k, v in data.items()}
    return {"data": ids, "config": {f: values[f] for f in fields if f in values}, "inputs": dict(inputs or {}),
            "files": files, "code": __version__}


def provenance_key(record: dict[str, Any]) -> str:
    """A digest of what decides a provenance record's reuse (its data, inputs and options; not its files'
    places and times, nor the code version), e.g. to key a stage's partial progress."""
    decisive = {part: record.get(part, {}) for part in ("data", "inputs", "config")}
    return hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()


def read_output(path: Path, keys: tuple[str, ...] = (),
                fix: str = "restore it, or delete it and --resume redoes what made it") -> dict[str, Any]:
    """A stage's JSON output (``eval.json``, ``supervised.json``, ``pseudo_labels.json``, ``timing.json``) as
    a dict holding ``keys``; a damaged one (not JSON, another shape, a key missing) is a one-line UserError
    naming it and ``fix``, where it was a traceback on ``--resume``."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        problem = " ".join(str(exc).split())[:200]
    else:
        if isinstance(value, dict) and all(k in value for k in keys):
            return value
        problem = (f"a JSON {type(value).__name__}, not an object" if not isinstance(value, dict) else
                   f"no {next(k for k in keys if k not in value)!r}")
    raise UserError(f"{path} is damaged ({problem}); {fix}")


def differences(recorded: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Human-readable differences between two provenance records (``what: recorded -> now``).

    What the stage was made from decides: its data (by content), inputs and options. An option the record does not
    name (added to gsimclr after the stage was made) differs only when its value now is not its default:
    a new option's default keeps the behaviour that came before it. The gsimclr version alone is no
    difference (:meth:`RunFolder.check` notes it), so a long run continues across releases."""
    from gsimclr.config import option_default

    out = []
    for part, label in (("data", "data"), ("inputs", "input"), ("config", "option")):
        old, new = recorded.get(part, {}), expected.get(part, {})
        for key in sorted(set(old) | set(new)):
            if part == "config" and key not in old and key in new and _is_default(option_default, key, new[key]):
                continue
            if part == "data" and "files" not in recorded and old.get(key) == expected.get("files", {}).get(key):
                continue  # a record from before content ids (0.2.0 and older) names its data by its files
            if old.get(key) != new.get(key):
                name = f"--{key.replace('_', '-')}" if part == "config" else f"{label} {key}"
                out.append(f"{name}: {_short(old.get(key))} -> {_short(new.get(key))}")
    return out


def _is_default(option_default, key: str, value: Any) -> bool:
    try:
        default = option_default(key)
    except KeyError:
        return False
    return json.loads(json.dumps(default)) == value


def _short(value: Any) -> str:
    text = "unset" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def array_digest(array: np.ndarray) -> str:
    """A short SHA-256 of an array's dtype, shape and bytes (e.g. pseudo labels, as a stage input)."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype}|{array.shape}|".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:24]
