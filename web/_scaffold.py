"""``herald new-plugin NAME``: a plugin package to start from, whose tests pass as written.

The package (pyproject with the ``herald`` entry point, a hooks module, tests) comes from the
templates in ``web/scaffold/`` (``string.Template``: ``${name}``, ``${state}``). It lives in the
web layer because the plugin it writes has a route; it writes files and imports nothing of the app.
"""

from __future__ import annotations

import importlib.util
import keyword
import sys
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Any

__all__ = ["ScaffoldError", "add_command", "layout", "write_plugin"]


class ScaffoldError(Exception):
    """The plugin cannot be written (a bad name, a target that exists): the message says why."""


def layout(name: str) -> dict[str, str]:
    """Where each template goes in the package directory, and what it is for (shown when written)."""
    return {
        "pyproject.toml": "pyproject.toml",
        "README.md": "README.md",
        f"{name}/__init__.py": "__init__.py",
        f"{name}/hooks.py": "hooks.py",
        f"tests/test_{name}.py": "test_plugin.py",
    }


_PURPOSE = {
    "pyproject.toml": "the package: its `herald` entry point, pytest's trio_mode",
    "hooks.py": "the plugin: a state, an event type, a timer, a notification, a route",
    "test_plugin.py": "its tests: a simulation and HTTP tests (app_client)",
}


def check_name(name: str) -> None:
    """A plugin's name is its package's: a Python identifier, lowercase by convention, that
    shadows nothing importable (``json``, ``engine``...)."""
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ScaffoldError(f"invalid plugin name {name!r}: it names the Python package, so it must be an "
                            f"identifier (letters, digits, underscores; not starting with a digit; not a keyword), "
                            f"e.g. {_suggest(name)}")
    if name != name.lower():
        raise ScaffoldError(f"invalid plugin name {name!r}: package names are lowercase, e.g. {name.lower()}")


def check_unshadowed(name: str) -> None:
    """The plugin's package would shadow a module of the same name, or be shadowed by it."""
    try:
        taken = name in sys.stdlib_module_names or importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module that is there but cannot say where from
        taken = True
    if taken:
        raise ScaffoldError(f"invalid plugin name {name!r}: a module of that name is already importable here "
                            f"(the plugin's package and it would shadow each other)")


def _suggest(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name.lower()).strip("_") or "my_plugin"
    return cleaned if cleaned.isidentifier() and not keyword.iskeyword(cleaned) else f"my_{cleaned}"


def write_plugin(name: str, target: Path) -> list[Path]:
    """Write the package ``name`` into ``target`` (a directory that must not exist); return the files."""
    check_name(name)
    if target.exists():
        raise ScaffoldError(f"{target} already exists: choose another directory (--dir) or remove it")
    check_unshadowed(name)
    values = {"name": name, "state": "".join(part.capitalize() for part in name.split("_") if part) + "State"}
    templates = files(__package__) / "scaffold"
    written = []
    for relative, template in layout(name).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(templates.joinpath(template + ".tmpl").read_text()).substitute(values))
        written.append(path)
    return written


def add_command(commands: Any) -> None:
    """Add ``herald new-plugin`` to the ``herald`` command's sub-parsers."""
    parser = commands.add_parser(
        "new-plugin", help="write a new plugin package to start from",
        description="Write a plugin package: pyproject.toml (the herald entry point, pytest settings), NAME/hooks.py "
        "(a state, an event type, a timer, a notification, a route) and tests that pass as written. Then: "
        "cd NAME && python -m pip install -e '.[test]' && python -m pytest (docs/tutorial.md walks through it).")
    parser.add_argument("name", metavar="NAME", help="the plugin's name: its package, entry point and event types' prefix")
    parser.add_argument("--dir", dest="directory", help="the directory to write (default ./NAME); it must not exist")
    parser.set_defaults(run=_run)


def _run(args: Any) -> int:
    target = Path(args.directory if args.directory else args.name)
    try:
        written = write_plugin(args.name, target)
    except ScaffoldError as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return 2
    print(f"Wrote the plugin {args.name} in {target}/:")
    width = max(len(str(path)) for path in written)
    for path, template in zip(written, layout(args.name).values()):
        purpose = _PURPOSE.get(template, "")
        print(f"  {str(path):<{width}}  {purpose}".rstrip())
    print(f"Next: cd {target} && python -m pip install -e '.[test]' && python -m pytest")
    return 0
