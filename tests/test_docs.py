"""The documentation: the site builds strictly, the command-line reference is current, the tutorial
notebook runs, and the README stays a front door whose links land on pages."""

import copy
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from gsimclr import docs_cli

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "tutorials" / "gsimclr-digits.ipynb"


def test_cli_reference_is_current():
    committed = (ROOT / "docs" / "reference" / "cli.md").read_text()
    assert committed == docs_cli.cli_reference(), (
        f"docs/reference/cli.md is stale (an option, subcommand or help text changed): regenerate it with "
        f"`{docs_cli.REGENERATE}` and commit it")


def test_cli_reference_follows_an_option_help_change(monkeypatch):
    from gsimclr.config import FIELDS

    before = docs_cli.cli_reference()
    field = copy.copy(FIELDS["lr"])
    field.metadata = types.MappingProxyType({**FIELDS["lr"].metadata, "help": "a changed help text"})
    monkeypatch.setitem(FIELDS, "lr", field)
    after = docs_cli.cli_reference()
    assert after != before and "a changed help text" in after


def test_cli_reference_lists_every_subcommand_option_and_choice():
    from gsimclr.cli import COMMANDS, command_options
    from gsimclr.config import choices_of, flag

    page = docs_cli.cli_reference()
    sections = dict(re.findall(r"^## gsimclr (\S+)\n(.*?)(?=^## |\Z)", page, re.MULTILINE | re.DOTALL))
    assert set(COMMANDS) | {"presets", "export", "summarize"} <= set(sections)
    for command in COMMANDS:
        for name in command_options(command):
            row = next((line for line in sections[command].splitlines() if line.startswith(f"| `{flag(name)}` |")),
                       None)
            assert row is not None, f"{flag(name)} missing under gsimclr {command}"
            for choice in choices_of(name) or []:
                assert f"`{choice}`" in row


def test_check_mode_reports_a_stale_page(tmp_path, capsys):
    page = tmp_path / "cli.md"
    page.write_text("old\n")
    assert docs_cli.main(["--output", str(page), "--check"]) == 1
    assert docs_cli.REGENERATE in capsys.readouterr().err
    assert docs_cli.main(["--output", str(page)]) == 0
    assert docs_cli.main(["--output", str(page), "--check"]) == 0


def _mkdocs() -> str:
    exe = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert exe, "mkdocs is not installed: pip install -e '.[docs]' (make install does)"
    return exe


def test_site_builds_strictly(tmp_path):
    """`make docs`: warnings (broken links, missing pages, unresolvable API references) fail the build."""
    site = tmp_path / "site"
    proc = subprocess.run([_mkdocs(), "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    for page in ("index.html", "quickstart.html", "reference/cli.html", "tutorials/gsimclr-digits.html",
                 "concepts/diagnostics.html", "reference/api/guidance.html"):
        assert (site / page).exists(), page
    tutorial = (site / "tutorials/gsimclr-digits.html").read_text()
    assert "data:image/png;base64" in tutorial, "the notebook is rendered without its plots"


def test_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 10_000
    assert "make demo" in readme and "make test" in readme
    for target in re.findall(r"\]\(([^)#\s]+)", readme):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to a missing file: {target}"


def test_committed_notebook_has_outputs():
    """The site renders the committed notebook as it is: it must hold its outputs and plots."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), "run the notebook before committing it"
    images = sum(1 for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images >= 3


@pytest.mark.slow
def test_tutorial_notebook_runs(tmp_path):
    """The tutorial notebook end to end (G-SimCLR on digits, about a minute or two on a CPU)."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                 if "image/png" in o.get("data", {}))
    assert images >= 3


def _documented_commands():
    """Every `gsimclr ...` command line in the README and the docs pages' code blocks (continuations joined,
    comments dropped; `torchrun ... -m gsimclr ...` included), with where it is."""
    import shlex

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        if page.name == "cli.md":
            continue
        for block in re.findall(r"```(?:bash|text|console)?\n(.*?)```", page.read_text(), re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"^\$ ", "", line.strip())
                match = re.search(r"(?:^|-m |^\.venv/bin/)gsimclr (\S.*)$", line)
                if not match or line.startswith("#"):
                    continue
                words = shlex.split(match[1], comments=True)
                # shell variables: an array expansion is dropped, any other stands for a value
                words = [w if not w.startswith("$") else "shell-variable" for w in words if not w.endswith("[@]}")]
                yield page.relative_to(ROOT), words


def test_documented_commands_parse_and_validate():
    """Every documented command names real subcommands and options with valid values (the configuration is
    checked as `gsimclr` checks it before any work), so the pages cannot drift from the command line."""
    from gsimclr import cli
    from gsimclr.errors import UserError

    checked = 0
    for page, words in _documented_commands():
        if any(w in ("...", "NAME", "PRESET") or w.endswith((".yaml", "...")) for w in words):
            continue  # a placeholder, not a command
        parser = cli.build_parser()
        try:
            args, extra = parser.parse_known_args(words)
            assert not extra, f"{page}: gsimclr {' '.join(words)}: unknown {extra}"
            if args.command in cli.COMMANDS:
                cli._check_stage_flags(args, cli._config(args))
        except (UserError, SystemExit) as exc:
            raise AssertionError(f"{page}: gsimclr {' '.join(words)}: {exc}") from None
        checked += 1
    assert checked >= 30


def test_api_docstrings_become_markdown():
    """docs/griffe_rst.py: reST roles, `Example:` sections, `::` and simple tables as Markdown."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("griffe_rst", ROOT / "docs" / "griffe_rst.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = "See :func:`run` here::\n\nExample:\n    >>> 1\n\n====  =====\na     b\n====  =====\nx     one\n      two\n====  =====\n"
    assert module.to_markdown(text) == ("See `run` here:\n\nExamples:\n    >>> 1\n\n| a | b |\n|---|---|\n"
                                        "| x | one two |\n")
    # a doctest outside an Example section is a code block: its output is no Markdown link
    assert module.to_markdown("Chunks.\n\n>>> f()\n[[0, 1], [2]]\n\nMore.") == (
        "Chunks.\n\n```pycon\n>>> f()\n[[0, 1], [2]]\n```\n\nMore.")
    # an Args entry naming several parameters becomes one entry each
    assert module.to_markdown("Args:\n    size: side.\n    mean, std: normalisation.") == (
        "Args:\n    size: side.\n    mean: normalisation.\n    std: normalisation.")


def test_documented_python_compiles():
    """Every Python block of the README and the pages is valid Python (the ones that need a trained run or
    optional packages are not run here; the notebook is)."""
    blocks = 0
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL):
            compile(block, f"{page.relative_to(ROOT)}", "exec")
            blocks += 1
    assert blocks >= 5
