"""A griffe extension for the site's API pages: the docstrings are written with reST roles and literal
blocks (``:class:`Config```, ``example::``), which Markdown would show as typed; render them as code."""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"(\S)::$", re.M)  # "in tests::" -> "in tests:" (the indented block after it stays code)


class RstRoles(griffe.Extension):
    """Rewrite ``:role:`target``` as ``target`` in code, and a paragraph's closing ``::`` as ``:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _LITERAL.sub(r"\1:", _ROLE.sub(r"`\1`", obj.docstring.value))
