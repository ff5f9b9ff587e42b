"""A Griffe extension for the API pages: gsimclr's docstrings are written in reST-flavoured Google style
(``code``, :class:`Name`, ``Example:`` sections with doctests, ``::`` literal blocks); this turns them
into the Markdown mkdocstrings renders, without changing the source.

The examples run in their module's namespace under ``pytest --doctest-modules``, so they use its names
without importing them; on the site each docstring's examples open with the imports they need
(:func:`example_imports`), so that every example runs as shown, pasted into a fresh interpreter."""

from __future__ import annotations

import ast
import builtins
import doctest
import importlib
import re
import types

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


def _free_names(sources: list[str]) -> list[str]:
    """The names the example ``sources`` read without binding them anywhere, in order of first use
    (builtins left out)."""
    used, bound = [], set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                if isinstance(node.ctx, ast.Load):
                    used.append(node.id)
                else:
                    bound.add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                bound.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, ast.arg):
                bound.add(node.arg)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                bound.add(node.name)
    return [n for n in dict.fromkeys(used) if n not in bound and not hasattr(builtins, n)]


def example_imports(text: str, module: str) -> list[str]:
    """The import statements the doctests of docstring ``text``, written in module ``module``'s namespace,
    need to run on their own: ``import numpy as np`` for a module, ``from gsimclr.plots import
    context_line`` for a name of the module (``from pathlib import Path`` for one it imports from outside
    gsimclr).

    >>> example_imports(">>> context_line(data=Path('x').name)", "gsimclr.plots")
    ['from gsimclr.plots import context_line', 'from pathlib import Path']
    """
    sources = [example.source for example in doctest.DocTestParser().get_examples(text)]
    names = _free_names(sources)
    if not names:
        return []
    namespace = vars(importlib.import_module(module))
    modules, by_module = [], {}
    for name in names:
        if name not in namespace:
            continue  # not the module's: the test of the examples reports it
        value = namespace[name]
        if isinstance(value, types.ModuleType):
            modules.append(f"import {value.__name__}" + (f" as {name}" if value.__name__ != name else ""))
            continue
        home = getattr(value, "__module__", None)
        outside = (isinstance(home, str) and not home.startswith("gsimclr") and getattr(value, "__name__", None) == name
                   and getattr(importlib.import_module(home), name, None) is value)
        by_module.setdefault(home if outside else module, []).append(name)
    return modules + [f"from {home} import {', '.join(found)}" for home, found in by_module.items()]


def with_imports(text: str, module: str) -> str:
    """``text`` with :func:`example_imports` as ``>>>`` lines before its first example."""
    imports = example_imports(text, module)
    match = re.search(r"^([ \t]*)>>> ", text, flags=re.MULTILINE)
    if not imports or not match:
        return text
    lines = "".join(f"{match[1]}>>> {line}\n" for line in imports)
    return text[:match.start()] + lines + text[match.start():]


class RstToMarkdown(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:  # noqa: ARG002
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(with_imports(obj.docstring.value, obj.module.path))
