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


#: A plugin's code imports these of Herald: the plugin API, its Kafka helpers, the test harness, the web helpers.
PLUGIN_API = {"engine", "engine.kafka", "engine.testing", "web", "web.hookspecs"}
#: Modules of a bundled plugin that are hosts of their own (a command running a process), with what they may add.
OWN_PROCESSES = {"plugins/crm/mock_crm.py": {"engine.host"}}


def _allowed_for_plugins(module: str, plugin: str, path: Path) -> bool:
    top = module.split(".")[0]
    if top in ("engine", "web"):
        return module in PLUGIN_API or module in OWN_PROCESSES.get(str(path.relative_to(ROOT)), ())
    if top in ("server",):
        return False
    if top == "plugins":
        return module.split(".")[1:2] == [plugin] or module.startswith("plugins.") and "tests" in module
    return True  # the standard library and third-party packages


@pytest.mark.parametrize("plugin", sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "hooks.py").exists()))
def test_bundled_plugins_use_only_the_public_api(plugin):
    """Not ``engine.host`` (what runs plugins), not ``engine._*``, not another plugin's internals."""
    offences = []
    for path in _sources(f"plugins/{plugin}"):
        if "tests" in path.parts:
            continue  # tests may drive internals; the plugin itself may not
        for module, line in _imports(path):
            if not _allowed_for_plugins(module, plugin, path):
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert offences == []


def test_the_own_process_exceptions_import_the_host_inside_the_command_only():
    """The mock CRM's command is a host: it may use ``engine.host``, in the function that runs it, not at import."""
    for relative, extra in OWN_PROCESSES.items():
        tree = ast.parse((ROOT / relative).read_text())
        top_level = {m for n in tree.body if isinstance(n, ast.ImportFrom) for m in [n.module]}
        assert not top_level & extra, relative
        assert {m for m, _ in _imports(ROOT / relative)} & extra, f"{relative} no longer needs its exception"


def _deprecated_uses(path: Path) -> list[str]:
    """Names that moved out of ``engine`` (to engine.host, engine.kafka) still taken from ``engine``."""
    import engine

    text = path.read_text()
    names = "|".join(engine._MOVED)
    if not re.search(rf"from engine import [^\n]*\b(?:{names})\b|\bengine\.(?:{names})\b", text):
        return []  # most files: no need to parse (no import of engine spans lines here)
    found = []
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.ImportFrom) and node.module == "engine" and not node.level:
            found += [f"{path.relative_to(ROOT)}:{node.lineno} from engine import {a.name}"
                      for a in node.names if a.name in engine._MOVED]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "engine"
              and node.attr in engine._MOVED):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} engine.{node.attr}")
    return found


def test_nothing_here_uses_the_deprecated_engine_names():
    """Herald's own code, tests and benchmarks import hosts' names from engine.host and Kafka's from engine.kafka."""
    paths = _sources("engine", "web", "plugins", "tests", "bench") + [ROOT / "server.py", ROOT / "conftest.py"]
    exercising = {"test_architecture.py", "test_default_handler.py"}  # these use the old names on purpose
    assert [use for path in paths if path.name not in exercising for use in _deprecated_uses(path)] == []


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
    """``engine`` is the plugin API; hosts and Kafka helpers have their own modules; each says who it is for."""
    import engine
    import engine.host
    import engine.kafka

    names = set(engine.__all__)
    assert {"Context", "EventType", "Origin", "Event", "hookimpl", "Notify", "SetTimer", "DefaultHandler",
            "API_VERSION"} <= names
    for internal in ("Journal", "Outbox", "converter", "dumps", "loads", "Metrics", "EngineClock"):
        assert internal not in names
    hosts, kafka = set(engine.host.__all__), set(engine.kafka.__all__)
    assert {"Engine", "Herald", "PluginHost", "tune_gc", "available_plugins", "GUARDED_ROUTE"} == hosts
    assert {"KafkaSource", "KafkaProducer", "KafkaClients", "Refused", "SourceFailed", "ensure_topics",
            "kafka_event_id"} == kafka
    assert not names & hosts and not names & kafka  # each name has one home
    # ... and what 0.2 exported from engine still resolves there (with a warning); names new since are not there
    assert set(engine._MOVED) == (hosts | kafka) - {"KafkaClients", "SourceFailed"}
    for module in (engine, engine.host, engine.kafka):
        assert module.__doc__ and all(getattr(module, name) is not None for name in module.__all__)
    assert all(p.name.startswith("_") or p.name in ("__init__.py", "hookspecs.py", "testing.py", "cli.py",
                                                    "host.py", "kafka.py")
               for p in (ROOT / "engine").glob("*.py"))


def test_importing_the_plugin_api_starts_no_host():
    """What ``import engine`` may load (every import of those modules, even inside functions, followed)
    holds neither the server (Herald, the cluster) nor the Kafka helpers."""
    modules = {_module_name(p): p for p in _sources("engine")}
    reached, todo = set(), ["engine"]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        todo += [m for m, _ in _imports(modules[name]) if m in modules and m not in reached]
    assert "engine._default" in reached  # the bundled default handler is part of the plugin API's closure
    assert not reached & {"engine._herald", "engine._cluster", "engine._kafka", "engine.host", "engine.kafka"}


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
    assert declared == {"slow", "kafka", "browser", "postgres"}
    ci = _markers_after_the_default_run((ROOT / ".ci" / "run").read_text())
    make = _markers_after_the_default_run((ROOT / "Makefile").read_text().split("\ntest-all:")[1].split("\n\n")[0])
    assert make == ci == {" or ".join(sorted(declared, key=["slow", "kafka", "browser", "postgres"].index))}
