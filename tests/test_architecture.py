"""The layers hold: the engine knows no web app, plugins use only the public API, no import circles.

Read from the source (every import statement, those under ``TYPE_CHECKING`` and
inside functions included), so a violation fails here before anyone notices it
in a stack trace.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEB_FRAMEWORKS = {"quart", "quart_trio", "hypercorn", "werkzeug", "server", "web"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module ``path`` imports (absolute names), with its line."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                if not node.module:  # from . import x
                    found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
                    continue
            else:
                module = node.module or ""
            found.append((module, node.lineno))
    return found


def _sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def test_the_engine_imports_no_web_framework_and_nothing_above_it():
    offences = []
    for path in _sources("engine"):
        for module, line in _imports(path):
            top = module.split(".")[0]
            if top in WEB_FRAMEWORKS or top == "plugins":
                if path.name == "testing.py" and top == "hypercorn":
                    continue  # the harness serves mock services (lazily, inside a function); never Herald's app
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert offences == []


def test_the_testing_harnesses_start_servers_lazily():
    """engine.testing imports hypercorn only inside a function; web.testing the server's app factory."""
    for path, words in ((ROOT / "engine" / "testing.py", ("hypercorn", "server", "web")),
                        (ROOT / "web" / "testing.py", ("hypercorn", "server", "quart"))):
        tree = ast.parse(path.read_text())
        top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not any(word in ast.unparse(n) for n in top_level for word in words), path


def test_only_the_http_harness_imports_the_server():
    """``server`` is the top: nothing in engine/ or web/ imports it, even inside a function, but
    web/testing.py (which builds the app for a test)."""
    offences = [f"{path.relative_to(ROOT)}:{line}" for path in _sources("engine", "web", "plugins")
                for module, line in _imports(path) if module.split(".")[0] == "server"]
    assert offences == ["web/testing.py:" + str(next(line for m, line in _imports(ROOT / "web" / "testing.py")
                                                         if m == "server"))]


def test_bundled_plugins_tests_use_only_public_fixtures():
    """A bundled plugin's tests import what a third-party plugin's can: not the project's ``tests``."""
    offences = [f"{path.relative_to(ROOT)}:{line} imports {module}" for path in _sources("plugins")
                if "tests" in path.parts for module, line in _imports(path) if module.split(".")[0] == "tests"]
    assert offences == []


def _allowed_for_plugins(module: str, plugin: str) -> bool:
    top = module.split(".")[0]
    if top == "engine":
        return module in ("engine", "engine.testing")
    if top == "web":
        return module in ("web", "web.hookspecs")
    if top in ("server",):
        return False
    if top == "plugins":
        return module.split(".")[1:2] == [plugin] or module.startswith("plugins.") and "tests" in module
    return True  # the standard library and third-party packages


@pytest.mark.parametrize("plugin", sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "hooks.py").exists()))
def test_bundled_plugins_use_only_the_public_api(plugin):
    offences = []
    for path in _sources(f"plugins/{plugin}"):
        if "tests" in path.parts:
            continue  # tests may drive internals; the plugin itself may not
        for module, line in _imports(path):
            if not _allowed_for_plugins(module, plugin):
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert offences == []


def test_there_is_no_import_circle():
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p): p for p in _sources("engine", "web")} | {"server": ROOT / "server.py"}
    for name, path in modules.items():
        graph[name] = {m for m, _ in _imports(path) if m in modules and m != name}
        # "from engine import x" where x is a module of the package counts as that module
    visiting, done, cycles = set(), set(), []

    def visit(node: str, trail: list[str]) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append(trail[trail.index(node):] + [node])
            return
        visiting.add(node)
        for nxt in sorted(graph[node]):
            visit(nxt, trail + [nxt])
        visiting.discard(node)
        done.add(node)

    for node in sorted(graph):
        visit(node, [node])
    assert cycles == []


def test_the_public_api_is_curated():
    import engine

    names = set(engine.__all__)
    assert {"Context", "EventType", "Origin", "Event", "hookimpl", "Notify", "SetTimer"} <= names
    for internal in ("Journal", "Outbox", "converter", "dumps", "loads", "Metrics", "EngineClock"):
        assert internal not in names
    assert all(getattr(engine, name) is not None for name in names)
    assert all(p.name.startswith("_") or p.name in ("__init__.py", "hookspecs.py", "testing.py", "cli.py")
               for p in (ROOT / "engine").glob("*.py"))


def test_herald_is_a_pytest_plugin_for_any_plugins_tests(pytestconfig, request):
    import tomllib

    import engine.testing
    import web.testing

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["pytest11"]
    assert declared == {"herald": "engine.testing", "herald-web": "web.testing"}
    registered = pytestconfig.pluginmanager.get_plugins()
    assert engine.testing in registered and web.testing in registered
    # The fixtures a third-party plugin's tests use, from those two modules.
    assert request.getfixturevalue("app_client") is web.testing.app_client
    [definition] = request._fixturemanager.getfixturedefs("kafka_bootstrap", request.node)
    assert definition.func.__module__ == "engine.testing"
    assert callable(engine.testing.herald_process) and not hasattr(engine.testing, "app_client")


def _markers_after_the_default_run(text: str) -> set[str]:
    """The marker expressions of the ``pytest -m ...`` commands in a script or a Makefile."""
    return {m.strip("'\"") for m in re.findall(r"pytest -m ('[^']*'|\"[^\"]*\"|\S+)", text)}


def test_make_test_all_runs_what_ci_runs():
    declared = set(re.findall(r'^\s*"(\w+):', (ROOT / "pyproject.toml").read_text(), re.M))  # pytest's markers
    assert declared == {"slow", "kafka", "browser"}
    ci = _markers_after_the_default_run((ROOT / ".ci" / "run").read_text())
    make = _markers_after_the_default_run((ROOT / "Makefile").read_text().split("\ntest-all:")[1].split("\n\n")[0])
    assert make == ci == {" or ".join(sorted(declared, key=["slow", "kafka", "browser"].index))}
