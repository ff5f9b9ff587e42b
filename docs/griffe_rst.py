"""A Griffe extension for the API pages: gsimclr's docstrings are written in reST-flavoured Google style
(``code``, :class:`Name`, ``Example:`` sections with doctests, ``::`` literal blocks); this turns them
into the Markdown mkdocstrings renders, without changing the source."""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|obj|exc|ref):`~?([^`]+)`")


def to_markdown(text: str) -> str:
    """The docstring ``text`` with reST roles as code, ``Example:`` as a Google ``Examples:`` section and
    ``::`` literal-block introductions as a colon.

    >>> to_markdown("See :class:`Config`.\\n\\nExample:\\n    >>> 1\\n    1")
    'See `Config`.\\n\\nExamples:\\n    >>> 1\\n    1'
    """
    text = _ROLE.sub(r"`\1`", text)
    text = re.sub(r"^(\s*)Example:\s*$", r"\1Examples:", text, flags=re.MULTILINE)
    return re.sub(r"(\S)::$", r"\1:", text, flags=re.MULTILINE)


class RstToMarkdown(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:  # noqa: ARG002
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
