"""Whether the engine's hot path runs compiled (the optional mypyc build) or as pure Python.

``make compiled`` (``mypyc_build.py``) compiles these modules in place: an extension module next to
each ``.py``, which Python imports first; ``make pure`` removes them. Both run the same code and the
same tests (docs/operations/compiled.md). ``herald --version`` reports what this says.
"""

from __future__ import annotations

import importlib

__all__ = ["HOT_MODULES", "compiled_modules", "build_description"]

#: The modules the compiled build compiles (``mypyc_build.MODULES``, as module names).
HOT_MODULES = (
    "engine._actor",
    "engine._clock",
    "engine._timers",
    "engine._event",
    "engine._engine",
    "plugins.fitness.rules",
)


def compiled_modules() -> list[str]:
    """Those of :data:`HOT_MODULES` that were imported from a compiled extension (importing them;
    one that cannot be imported, such as a plugin left out of an installation, is not counted)."""
    found = []
    for name in HOT_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if not str(getattr(module, "__file__", "")).endswith(".py"):
            found.append(name)
    return found


def build_description() -> str:
    """``pure Python``, ``compiled with mypyc (all 6 hot modules)``, or which ones when only some are."""
    found = compiled_modules()
    if not found:
        return "pure Python"
    if len(found) == len(HOT_MODULES):
        return f"compiled with mypyc (all {len(found)} hot modules)"
    return f"partly compiled with mypyc: {', '.join(found)}"
