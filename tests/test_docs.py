"""The documentation: the site builds strictly, the command-line reference is current, the tutorial
notebook runs, and the README stays a front door whose links land on pages."""

import copy
import html
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from gsimclr import docs_cli

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "tutorials" / "gsimclr-digits.ipynb"


class _MkdocsLoader(yaml.SafeLoader):
    """mkdocs.yml's tags (`!ENV`) read as plain values."""


_MkdocsLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


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


def _build_site(config: Path, site: Path) -> subprocess.CompletedProcess:
    """`make docs` (strict) of ``config`` into ``site``."""
    return subprocess.run([_mkdocs(), "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=site.parent, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    """The site as `make docs` builds it (strict: warnings, broken links, unresolvable API references fail)."""
    site = tmp_path_factory.mktemp("docs") / "site"
    proc = _build_site(ROOT / "mkdocs.yml", site)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return site


def _text(html_fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", html_fragment))


def test_site_builds_strictly(built_site):
    site = built_site
    for page in ("index.html", "quickstart.html", "reference/cli.html", "tutorials/gsimclr-digits.html",
                 "concepts/diagnostics.html", "reference/api/guidance.html", "troubleshooting.html"):
        assert (site / page).exists(), page
    tutorial = (site / "tutorials/gsimclr-digits.html").read_text()
    assert "data:image/png;base64" in tutorial, "the notebook is rendered without its plots"


def test_no_table_renders_as_literal_pipes(built_site):
    """A Markdown table broken by a blank line (or a missing header rule) renders as paragraphs of `|`."""
    broken = [f"{page.relative_to(built_site)}: {_text(p)[:80]}"
              for page in built_site.rglob("*.html")
              for p in re.findall(r"<p>\s*\|.*?</p>", page.read_text(), re.DOTALL)]
    assert not broken, broken


def test_api_signatures_are_formatted_to_the_page(built_site):
    """Signatures are formatted by ruff (the docs extra) to mkdocstrings' line_length, not one long line."""
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_MkdocsLoader)
    options = config["plugins"][-1]["mkdocstrings"]["handlers"]["python"]["options"]
    width = options["line_length"]
    assert options["separate_signature"] and width <= 100
    lines = [line for page in (built_site / "reference" / "api").glob("*.html")
             for block in re.findall(r'<div class="doc-signature highlight"><pre>(.*?)</pre>', page.read_text(),
                                     re.DOTALL)
             for line in _text(block).splitlines()]
    assert len(lines) > 300
    too_wide = [line for line in lines if len(line) > width]
    assert not too_wide, f"{len(too_wide)} signature lines wider than {width}, e.g. {too_wide[0]!r}"


def test_search_is_offline(built_site):
    """Material's offline plugin: the search index is a script (`search_index.js`), so search needs no
    server; every script a page loads is part of the site (no CDN), so it needs no network either."""
    assert (built_site / "search" / "search_index.js").exists()
    for page in built_site.rglob("*.html"):
        external = [src for src in re.findall(r'<script[^>]+src="([^"]+)"', page.read_text())
                    if re.match(r"(https?:)?//", src)]
        assert not external, (page.relative_to(built_site), external)


def test_search_works_over_file_urls_in_a_browser(built_site):
    """What the README says: open site/index.html. Headless Chromium types a query into the search of the
    page opened from the file system and gets results that link to pages of the site."""
    from headless_browser import HeadlessPage, find_chromium

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium to drive (apt-get install chromium)")
    with HeadlessPage(chromium) as page:
        for start in ("index.html", "reference/api/guidance.html"):
            page.open((built_site / start).as_uri() + "?q=pseudo")
            found = page.wait_for("document.querySelectorAll('.md-search-result__item').length", timeout=60)
            assert found, f"{start}: search shows " + repr(page.evaluate(
                "document.querySelector('.md-search-result__meta').textContent.trim()"))
            links = page.evaluate("[...document.querySelectorAll('.md-search-result__link')].map(a => a.href)")
            assert links and all(link.startswith("file://") for link in links), links
            first = links[0].split("#")[0].split("?")[0]
            assert Path(first.removeprefix("file://")).exists(), first


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


def _notebook_builder():
    """notebooks/build_notebook.py as a module: the notebook's cells, how it is executed, what is compared."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_notebook", ROOT / "notebooks" / "build_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_notebook_is_the_builders():
    """The committed notebook holds the cells notebooks/build_notebook.py writes: a cell edited in one place
    only is caught here, before the slow test executes it."""
    nbformat = pytest.importorskip("nbformat")
    committed = nbformat.read(NOTEBOOK, as_version=4)
    built = _notebook_builder().build()
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in built.cells], (
        "docs/tutorials/gsimclr-digits.ipynb differs from notebooks/build_notebook.py: run "
        "python notebooks/build_notebook.py and commit both")


def _docs_sources(into: Path) -> Path:
    """A copy of what `make docs` reads (mkdocs.yml, docs/, the repository files the site includes; src/
    linked), so that a test may execute the notebook where Jupyter would, inside docs/."""
    shutil.copytree(ROOT / "docs", into / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("mkdocs.yml", "README.md", "RESULTS.md", "CHANGELOG.md", "benchmarks/README.md"):
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, into / name)
    (into / "src").symlink_to(ROOT / "src", target_is_directory=True)
    return into


@pytest.mark.slow
def test_tutorial_notebook_executed_in_docs_leaves_the_site_strict_and_its_stored_outputs_current(
        tmp_path, monkeypatch):
    """The tutorial notebook end to end (G-SimCLR on digits, a few minutes on a CPU), executed as a reader
    executes it in Jupyter: its kernel in docs/tutorials/. It writes nothing under docs/ (its run goes to the
    temporary folder), `make docs` is still strict afterwards, and its fresh outputs are the committed
    ones: when the code changes what the notebook prints, this says the stored outputs went stale."""
    nbformat = pytest.importorskip("nbformat")
    builder = _notebook_builder()
    sources = _docs_sources(tmp_path / "repo")
    docs_before = set((sources / "docs").rglob("*"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's temporary folder: runs of parallel tests apart

    committed = nbformat.read(NOTEBOOK, as_version=4)
    fresh = builder.execute(copy.deepcopy(committed), sources / "docs" / "tutorials")
    errors = [o for c in fresh.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors[0].get("traceback", errors[0])
    images = sum(1 for c in fresh.cells if c.cell_type == "code" for o in c.get("outputs", [])
                 if "image/png" in o.get("data", {}))
    assert images >= 3
    assert (tmp_path / "gsimclr-notebook-digits" / "results.md").exists()  # the run went to the temporary folder

    left = sorted(str(p.relative_to(sources)) for p in set((sources / "docs").rglob("*")) - docs_before)
    assert not left, f"executing the notebook wrote under docs/: {left}"
    proc = _build_site(sources / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-4000:]

    assert builder.comparable_outputs(fresh) == builder.comparable_outputs(committed), (
        "the outputs stored in docs/tutorials/gsimclr-digits.ipynb are not those of the code any more: "
        "regenerate them with `python notebooks/build_notebook.py` and commit the notebook")


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


def _griffe_rst():
    import importlib.util

    spec = importlib.util.spec_from_file_location("griffe_rst", ROOT / "docs" / "griffe_rst.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_examples_run_on_their_own(tmp_path, monkeypatch):
    """Every example of the API pages runs as shown, pasted into a fresh interpreter: the page gives the
    imports it needs (docs/griffe_rst.py adds them; `pytest --doctest-modules` runs the same docstrings in
    their module's namespace, where the names need no import)."""
    import doctest
    import importlib
    import pkgutil

    import gsimclr

    griffe_rst = _griffe_rst()
    monkeypatch.chdir(tmp_path)
    failed, ran = [], 0
    for info in pkgutil.walk_packages(gsimclr.__path__, "gsimclr."):
        if info.name.endswith("__main__"):
            continue
        for test in doctest.DocTestFinder(exclude_empty=True).find(importlib.import_module(info.name)):
            if not test.examples:
                continue
            shown = griffe_rst.with_imports(test.docstring, info.name)
            alone = doctest.DocTestParser().get_doctest(shown, {}, test.name, test.filename, test.lineno)
            report = []
            result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(alone, out=report.append)
            ran += 1
            if result.failed:
                failed.append(f"{test.name}: {''.join(report)[-400:]}")
    assert ran >= 50
    assert not failed, f"{len(failed)} examples do not run on their own:\n" + "\n".join(failed[:3])


def test_example_imports_name_the_module_or_the_library():
    griffe_rst = _griffe_rst()
    text = ">>> import numpy as np\n>>> x = np.zeros(2)\n>>> write_json(Path('a'), {'x': int(x[0])})\n"
    assert griffe_rst.example_imports(text, "gsimclr.io") == [
        "from gsimclr.io import write_json", "from pathlib import Path"]
    assert griffe_rst.example_imports(">>> torch.zeros(1).shape\ntorch.Size([1])", "gsimclr.evaluation.fit") == [
        "import torch"]
    assert griffe_rst.with_imports("Text.\n\n    >>> context_line()\n    ''\n", "gsimclr.plots") == (
        "Text.\n\n    >>> from gsimclr.plots import context_line\n    >>> context_line()\n    ''\n")


def _pages():
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_docs_state_the_python_version_and_the_cache_folders_the_code_uses(monkeypatch):
    """One supported Python (pyproject's requires-python) and the cache folders the code really uses."""
    from gsimclr.data.cache import cache_root
    from gsimclr.data.sources.torchvision_sets import DEFAULT_TORCHVISION_ROOT

    minimum = re.search(r'^requires-python = ">=(3\.\d+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)[1]
    for page in (ROOT / "README.md", ROOT / "docs" / "quickstart.md"):
        assert f"Python {minimum} or later" in page.read_text(), page
    monkeypatch.delenv("GSIMCLR_CACHE", raising=False)
    assert cache_root() == Path.home() / ".cache" / "gsimclr" / "decoded"
    assert DEFAULT_TORCHVISION_ROOT == "~/.cache/gsimclr/datasets"
    for page in _pages():
        text = page.read_text()
        for version in re.findall(r"Python (3\.\d+) or later", text):
            assert version == minimum, f"{page.relative_to(ROOT)}: Python {version} or later"
        for match in re.finditer(r"~/\.cache/gsimclr(/[\w<>-]+)?", text):
            assert match[1] in ("/decoded", "/datasets"), f"{page.relative_to(ROOT)}: {match[0]}"


def test_the_notebook_has_one_title():
    """The navigation names the notebook by its own heading."""
    nbformat = pytest.importorskip("nbformat")
    heading = nbformat.read(NOTEBOOK, as_version=4).cells[0].source.splitlines()[0].removeprefix("# ")
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_MkdocsLoader)

    def entries(nav):
        for item in nav:
            for title, target in item.items() if isinstance(item, dict) else ():
                yield from entries(target) if isinstance(target, list) else [(title, target)]

    titles = [title for title, target in entries(config["nav"]) if target == "tutorials/gsimclr-digits.ipynb"]
    assert titles and all(heading in title for title in titles), (heading, titles)
    for page in _pages():
        for text in re.findall(r"\[([^\]]+)\]\([./]*(?:docs/)?tutorials/gsimclr-digits\.ipynb\)", page.read_text()):
            assert text in (heading, *titles) or text.islower(), f"{page.relative_to(ROOT)}: [{text}]"
