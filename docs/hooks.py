"""MkDocs hooks: pages that show a file of the repository (README.md, RESULTS.md, benchmarks/README.md,
CHANGELOG.md)
include it, so the site and the file cannot differ.

A line ``<!-- include: PATH -->`` in a page is replaced by the file at PATH (relative to the repository
root), with its links rewritten for the site: a link into ``docs/`` becomes a link to that page, a link
to a file the site shows (:data:`SITE_PAGES`) a link to its page, any other link to a repository file
plain code text (the site cannot link to it, and ``mkdocs build --strict`` refuses broken links);
``LEVEL_SHIFT`` demotes headings so that the page's own title stays its only top-level heading.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Repository files the site shows, by the docs page that includes them.
SITE_PAGES = {
    "README.md": "index.md",
    "RESULTS.md": "results/gpu-evidence.md",
    "benchmarks/README.md": "results/benchmarks.md",
    "CHANGELOG.md": "changelog.md",
}

_INCLUDE = re.compile(r"^<!-- include: (?P<path>\S+)(?P<shift> shift=\d)? -->$", re.MULTILINE)
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)")
_IMAGE = re.compile(r"!\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")


def _is_external(target: str) -> bool:
    return target.startswith(("http://", "https://", "mailto:", "#"))


def _site_target(repo_target: str, page: str) -> str | None:
    """The link from docs page ``page`` to repository path ``repo_target`` (None: not on the site)."""
    path, _, anchor = repo_target.partition("#")
    path = posixpath.normpath(path)
    if path in SITE_PAGES:
        doc = SITE_PAGES[path]
    elif path.startswith("docs/") and (DOCS / path[5:]).exists():
        doc = path[5:]
    else:
        return None
    rel = posixpath.relpath(doc, posixpath.dirname(page) or ".")
    return rel + (f"#{anchor}" if anchor else "")


def rewrite(text: str, source: str, page: str) -> str:
    """``text`` of repository file ``source`` as Markdown for docs page ``page``."""
    base = posixpath.dirname(source)

    def link(match: re.Match) -> str:
        target = match["target"]
        if _is_external(target):
            return match[0]
        repo_target = posixpath.normpath(posixpath.join(base, target))
        site = _site_target(repo_target, page)
        if site is None:
            return f"{match['text']} (`{repo_target.split('#')[0]}` in the repository)"
        return f"[{match['text']}]({site})"

    def image(match: re.Match) -> str:
        target = match["target"]
        if _is_external(target):
            return match[0]
        site = _site_target(posixpath.normpath(posixpath.join(base, target)), page)
        return f"![{match['text']}]({site})" if site else f"*(picture: `{target}`)*"

    return _LINK.sub(link, _IMAGE.sub(image, text))


def _shift_headings(text: str, levels: int) -> str:
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"#{1,5} ", line):
            line = "#" * levels + line
        out.append(line)
    return "\n".join(out) + "\n"


def include(markdown: str, page: str) -> str:
    """Replace every include line of ``markdown`` (the text of docs page ``page``) by its file."""

    def replace(match: re.Match) -> str:
        source = match["path"]
        text = rewrite((ROOT / source).read_text(), source, page)
        if match["shift"]:
            text = _shift_headings(text, int(match["shift"].split("=")[1]))
        return text

    return _INCLUDE.sub(replace, markdown)


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001 (the MkDocs hook signature)
    return include(markdown, page.file.src_uri)
