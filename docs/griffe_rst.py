"""A Griffe extension for the API pages: gsimclr's docstrings are written in reST-flavoured Google style
(``code``, :class:`Name`, ``Example:`` sections with doctests, ``::`` literal blocks); this turns them
into the Markdown mkdocstrings renders, without changing the source."""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|obj|exc|ref):`~?([^`]+)`")


_RULE = re.compile(r"^(\s*)(=+)((?:\s+=+)+)\s*$")


def _simple_tables(text: str) -> str:
    """reST simple tables (``====  ====`` rules) as Markdown tables; a row whose first cell is empty
    continues the row above."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        match = _RULE.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = len(match[1])
        starts = [m.start() for m in re.finditer(r"=+", lines[i])]
        rows, rules, i = [], 1, i + 1
        while i < len(lines) and rules < 3:
            if _RULE.match(lines[i]):
                rules += 1
            elif lines[i].strip():
                cells = [lines[i][a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
                if rows and not cells[0]:
                    rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells)]
                else:
                    rows.append(cells)
            i += 1
        if rows:
            pad = " " * indent
            out.append(pad + "| " + " | ".join(rows[0]) + " |")
            out.append(pad + "|" + "---|" * len(rows[0]))
            out += [pad + "| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def _bare_doctests(text: str) -> str:
    """A doctest paragraph outside an ``Example:`` section (``>>>`` at the docstring's own indentation)
    as a fenced code block, so that its output (``[[0, 1], [2]]``) is not read as Markdown links."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        if not lines[i].startswith(">>>"):
            out.append(lines[i])
            i += 1
            continue
        out.append("```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append("```")
    return "\n".join(out)


_SHARED_ARG = re.compile(r"^(\s+)(\w+(?:, \w+)+): (.*)$")


def _shared_args(text: str) -> str:
    """An ``Args:`` entry naming several parameters (``mean, std: normalisation``) as one entry each, the
    description repeated (Google style documents one parameter per entry)."""
    lines, out, section = text.split("\n"), [], None
    for line in lines:
        if re.match(r"^\s*(Args|Arguments|Parameters):\s*$", line):
            section = len(line) - len(line.lstrip())
        elif section is not None and line.strip() and len(line) - len(line.lstrip()) <= section:
            section = None
        match = _SHARED_ARG.match(line) if section is not None else None
        if match:
            out += [f"{match[1]}{name}: {match[3]}" for name in match[2].split(", ")]
        else:
            out.append(line)
    return "\n".join(out)


def to_markdown(text: str) -> str:
    """The docstring ``text`` with reST roles as code, ``Example:`` as a Google ``Examples:`` section and
    ``::`` literal-block introductions as a colon.

    >>> to_markdown("See :class:`Config`.\\n\\nExample:\\n    >>> 1\\n    1")
    'See `Config`.\\n\\nExamples:\\n    >>> 1\\n    1'
    """
    text = _shared_args(_bare_doctests(_simple_tables(_ROLE.sub(r"`\1`", text))))
    text = re.sub(r"^(\s*)Example:\s*$", r"\1Examples:", text, flags=re.MULTILINE)
    return re.sub(r"(\S)::$", r"\1:", text, flags=re.MULTILINE)


class RstToMarkdown(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:  # noqa: ARG002
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
