"""The release: one version, named by the changelog, and a wheel that installs and trains without the source
tree (built offline with `python -m build --no-isolation`, installed into a fresh virtual environment whose
only other packages are this interpreter's, so nothing is downloaded)."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import gsimclr

ROOT = Path(__file__).resolve().parent.parent
RELEASE = re.compile(r"^## \[(?P<version>\d+\.\d+\.\d+)\] - (?P<date>\d{4}-\d{2}-\d{2})$", re.MULTILINE)
SECTIONS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_the_changelog_names_the_version():
    """CHANGELOG.md in Keep a Changelog form: an Unreleased section, then releases newest first, each with
    its date and only the usual sections; the newest is gsimclr.__version__ (what the package metadata and
    `gsimclr --version` say)."""
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n") and "\n## [Unreleased]\n" in text
    assert text.index("## [Unreleased]") < text.index("\n## [0")
    releases = [m["version"] for m in RELEASE.finditer(text)]
    assert releases and releases[0] == gsimclr.__version__
    as_tuples = [tuple(map(int, v.split("."))) for v in releases]
    assert as_tuples == sorted(as_tuples, reverse=True) and len(set(as_tuples)) == len(as_tuples)
    assert set(re.findall(r"^### (.+)$", text, re.MULTILINE)) <= SECTIONS
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"], "the version is written once: src/gsimclr/__init__.py"
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "gsimclr.__version__"}


def test_cli_version_is_the_package_version(capsys):
    from gsimclr.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"gsimclr {gsimclr.__version__}"


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would put the source tree on the path or reach a network."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", **extra}


def _run(args, cwd, timeout=600, **env) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=_clean_env(**env))
    assert proc.returncode == 0, f"{' '.join(map(str, args))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_the_wheel_installs_and_trains_in_a_clean_environment(tmp_path):
    pytest.importorskip("build")
    # the source tree as a clone has it (no build outputs, no caches), so that the build never writes into it
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "CHANGELOG.md"):
        shutil.copy2(ROOT / name, source / name)

    # sdist, then the wheel from the unpacked sdist (what `python -m build` does): the sdist must be whole
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, source], cwd=tmp_path)
    version = gsimclr.__version__
    wheel, sdist = dist / f"gsimclr-{version}-py3-none-any.whl", dist / f"gsimclr-{version}.tar.gz"
    assert wheel.exists() and sdist.exists(), sorted(p.name for p in dist.iterdir())
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        metadata = whl.read(f"gsimclr-{version}.dist-info/METADATA").decode()
        entry_points = whl.read(f"gsimclr-{version}.dist-info/entry_points.txt").decode()
    assert {"gsimclr/__init__.py", "gsimclr/cli.py", "gsimclr/presets/digits-quick.yaml"} <= names
    assert not any(n.startswith(("tests/", "docs/")) for n in names)
    assert f"\nVersion: {version}\n" in metadata and "gsimclr = gsimclr.cli:main" in entry_points
    with tarfile.open(sdist) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    assert {"pyproject.toml", "README.md", "src/gsimclr/presets/digits-quick.yaml"} <= members

    # a fresh environment: the wheel installed into it, its dependencies (torch, ...) seen from this
    # interpreter's site-packages through a .pth file (whose own .pth files, e.g. an editable gsimclr, are not run)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).stdout.strip())
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_dependencies_from_the_test_interpreter.pth").write_text("\n".join(ours) + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--no-compile",
          wheel], cwd=tmp_path)

    where = tmp_path / "elsewhere"  # neither the source tree nor its copy
    where.mkdir()
    found = _run([python, "-c", "import gsimclr; print(gsimclr.__file__); print(gsimclr.__version__)"], cwd=where)
    module_file, module_version = found.stdout.split()
    assert Path(module_file).is_relative_to(site) and module_version == version
    gsimclr_exe = venv / "bin" / "gsimclr"
    helped = _run([gsimclr_exe, "--help"], cwd=where)
    assert "pretrain" in helped.stdout and "run" in helped.stdout
    assert _run([gsimclr_exe, "--version"], cwd=where).stdout.strip() == f"gsimclr {version}"

    # one tiny pretraining from the installed package (its bundled preset, digits shipped with scikit-learn)
    _run([gsimclr_exe, "pretrain", "--preset", "digits-quick", "--method", "simclr", "--train-limit", "128",
          "--batch-size", "64", "--epochs", "1", "--n-blocks", "0", "--head-dims", "32,16,8", "--device", "cpu",
          "--out", where / "run"], cwd=where, timeout=900, GSIMCLR_CACHE=str(tmp_path / "cache"))
    checkpoint = where / "run" / "simclr" / "checkpoint.safetensors"
    assert checkpoint.stat().st_size > 0
    metrics = (where / "run" / "simclr" / "metrics.jsonl").read_text().splitlines()
    assert any('"epoch": 1' in line for line in metrics)
