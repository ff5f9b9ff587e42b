"""Where a number came from: the code's commit, the package versions and the device, one helper for run
folders (``run.json``), benchmarks and the GPU evidence runner.

**Commit.** :func:`git_commit` names the code that runs: ``<HEAD>`` when the code files are those of the
commit, else ``<HEAD>+dirty.<digest>`` where the digest covers every code file as it is now (so two
different uncommitted states never share a name). The code files are those under
:data:`CODE_PATHS`; each is identified by its git blob id, which Python computes without git, so a copy
of the tree that has no ``.git`` (the GPU machine) still gets the same answer: there the HEAD and its
code digest come from the stamp ``.evidence/COMMIT`` written here by :func:`write_stamp`
(``scripts/pack_for_device.py``), and the digest of the files as they are is recomputed at every call:
code changed after packing reads as ``+dirty``, never as the packed commit.

Example:
    >>> blob_id(b"")
    'e69de29bb2d1d6434b8b29ae775ad8c2e48c5391'
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

CODE_PATHS = ("src", "scripts", "benchmarks", "pyproject.toml", "Makefile", "requirements-pinned.txt")
"""Files and folders whose content is "the code" of a result (results and data excluded)."""
_SKIP_PARTS = {"__pycache__", "results", ".evidence", ".whl", "runs", ".pytest_cache", ".hypothesis", "build",
               "dist", "site", ".venv"}
_CODE_SUFFIXES = {".py", ".yaml", ".yml", ".toml", ".txt", ".sh", ".cfg", ".json", ""}
STAMP = Path(".evidence") / "COMMIT"


def repo_root() -> Path:
    """The checkout this package runs from (``src/gsimclr/`` -> the folder above ``src``)."""
    return Path(__file__).resolve().parents[2]


def blob_id(data: bytes) -> str:
    """Git's blob id of ``data`` (what ``git hash-object`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_code(rel: str) -> bool:
    parts = rel.split("/")
    if not (rel in CODE_PATHS or parts[0] in CODE_PATHS) or _SKIP_PARTS & set(parts):
        return False
    if any(part.endswith(".egg-info") for part in parts):  # written by `pip install -e` (src/gsimclr.egg-info)
        return False
    return Path(rel).suffix in _CODE_SUFFIXES and not parts[-1].startswith(".")


def code_files(root: Path) -> dict[str, str]:
    """``{path relative to root: blob id}`` of the code files present under ``root``."""
    out = {}
    for top in CODE_PATHS:
        base = root / top
        files = [base] if base.is_file() else sorted(base.rglob("*")) if base.is_dir() else []
        for path in files:
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not path.is_symlink() and _is_code(rel):
                out[rel] = blob_id(path.read_bytes())
    return out


def digest(files: dict[str, str]) -> str:
    """A short digest of a set of code files (their paths and blob ids)."""
    text = "".join(f"{path} {blob}\n" for path, blob in sorted(files.items()))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def head_state(root: Path) -> tuple[str, str] | None:
    """``(HEAD, digest of HEAD's code files)`` from git, or None where ``root`` is no git checkout."""
    head = _git(root, "rev-parse", "HEAD")
    listing = _git(root, "ls-tree", "-r", "HEAD") if head else None
    if not head or listing is None:
        return None
    files = {}
    for line in listing.splitlines():
        meta, _, path = line.partition("\t")
        kind, blob = meta.split()[1:3]
        if kind == "blob" and _is_code(path):
            files[path] = blob
    return head.strip(), digest(files)


def read_stamp(root: Path) -> dict | None:
    path = root / STAMP
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and data.get("head"):
            return data
    return None


def write_stamp(root: Path, dest: Path | None = None) -> dict:
    """Write ``.evidence/COMMIT`` (HEAD and the digest of its code files) into ``dest`` (default ``root``),
    for a copy of ``root`` without ``.git``."""
    state = head_state(root)
    if state is None:
        raise RuntimeError(f"{root} is not a git checkout: no commit to stamp")
    stamp = {"head": state[0], "head_digest": state[1], "commit": git_commit(root)}
    path = Path(dest or root) / STAMP
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".COMMIT.tmp")
    tmp.write_text(json.dumps(stamp) + "\n")
    os.replace(tmp, path)
    return stamp


def git_commit(root: Path | None = None) -> str | None:
    """The code's name: ``HEAD``, or ``HEAD+dirty.<digest of the code as it is>``; None when neither git
    nor a stamp says which commit this is (an installed package)."""
    if root is None:
        root = repo_root()
        if not (root / "src" / "gsimclr").is_dir():  # an installed package, not a checkout: no commit to name
            return None
    root = Path(root)
    state = head_state(root)
    if state is None:
        stamp = read_stamp(root)
        if stamp is None:
            return None
        state = (stamp["head"], stamp.get("head_digest", ""))
    now = digest(code_files(root))
    return state[0] if now == state[1] else f"{state[0]}+dirty.{now}"


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Python, torch, torchvision, triton, lightly, gsimclr and CUDA versions (None where absent)."""
    import torch

    from gsimclr import __version__

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": package_version("torchvision"), "triton": package_version("triton"),
            "lightly": package_version("lightly"), "gsimclr": __version__, "cuda": torch.version.cuda}


def cpu_name() -> str:
    name = platform.processor() or platform.machine() or "CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return name


def device_name(device: str = "auto") -> str:
    """The GPU's name when ``device`` uses one, else the CPU's with its core count."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        index = torch.device(device).index if device.startswith("cuda") else None
        return torch.cuda.get_device_name(index or 0)
    return f"{cpu_name()} ({os.cpu_count()} cores, no GPU used)"


def device_kind(name: str) -> str:
    """A short key of a device name for per-device timings: ``h100``, ``h200``, ``a100``..., or ``cpu``.

    Example:
        >>> device_kind("NVIDIA H100 80GB HBM3"), device_kind("AMD EPYC (2 cores, no GPU used)")
        ('h100', 'cpu')
    """
    if "no GPU" in name or "cpu" in name.lower() and "nvidia" not in name.lower():
        return "cpu"
    for token in name.replace("-", " ").split():
        t = token.lower()
        if t[:1] in "ahlvtb" and t[1:].isdigit():
            return t
    return "".join(c for c in name.lower() if c.isalnum())[:24] or "gpu"
