"""``herald new-plugin NAME``: a package whose tests pass as generated, using only the public API; clear refusals.

(docs/tutorial.md runs it too, step by step: ``test_examples.test_the_tutorial_runs_step_by_step``.)
"""

from __future__ import annotations

import ast
import contextlib
import io
import tomllib
from pathlib import Path

import pytest

import server

from . import tutorial

PUBLIC = {"engine", "engine.testing", "web", "web.hookspecs", "web.testing"}  # docs/plugins.md


def herald(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = server.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_a_generated_plugin_passes_its_own_tests_once_installed(pytester, monkeypatch):
    code, out, err = herald("new-plugin", "shop_visits")
    assert code == 0, err
    assert "shop_visits/shop_visits/hooks.py" in out and out.rstrip().endswith(
        "Next: cd shop_visits && python -m pip install -e '.[test]' && python -m pytest")
    shell = tutorial.InProcessShell(pytester, monkeypatch)
    monkeypatch.chdir("shop_visits")
    assert shell.command("python -m pip install -e '.[test]'") == "Successfully installed shop_visits-0.1.0\n"
    output = shell.command("python -m pytest")
    # The simulation, the route, and the entry point (`herald plugins` listing it: the tutorial's test).
    assert output.splitlines()[-1].startswith("3 passed"), output
    assert "class ShopVisitsState:" in Path("shop_visits/hooks.py").read_text()


def test_the_generated_package_declares_its_entry_point_and_trio_mode(tmp_path):
    assert herald("new-plugin", "greeter", "--dir", str(tmp_path / "g"))[0] == 0
    pyproject = tomllib.loads((tmp_path / "g" / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["herald"] == {"greeter": "greeter.hooks"}
    assert pyproject["tool"]["pytest"]["ini_options"]["trio_mode"] is True
    assert sorted(str(p.relative_to(tmp_path / "g")) for p in (tmp_path / "g").rglob("*") if p.is_file()) == [
        "README.md", "greeter/__init__.py", "greeter/hooks.py", "pyproject.toml", "tests/test_greeter.py"]


def test_the_generated_code_uses_only_the_public_plugin_api(tmp_path):
    assert herald("new-plugin", "greeter", "--dir", str(tmp_path / "g"))[0] == 0
    offences = []
    for path in (tmp_path / "g").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split(".")[0]
                if (top in ("engine", "web") and name not in PUBLIC) or top in ("server", "plugins", "tests"):
                    offences.append(f"{path.name}: {name}")
    assert offences == []
    hooks = (tmp_path / "g" / "greeter" / "hooks.py").read_text()
    assert "Notify(payload=" in hooks and "url" not in hooks.split("Notify(", 1)[1].split(")")[0]  # the sink


@pytest.mark.parametrize("name, problem", [
    ("my-plugin", "must be an identifier"),
    ("9lives", "must be an identifier"),
    ("class", "not a keyword"),
    ("Greeter", "lowercase, e.g. greeter"),
    ("json", "already importable"),
    ("engine", "already importable"),
])
def test_a_bad_name_is_refused_in_one_line_and_nothing_is_written(tmp_path, name, problem):
    code, out, err = herald("new-plugin", name, "--dir", str(tmp_path / "p"))
    assert (code, out) == (2, "")
    assert err.startswith(f"herald: invalid plugin name {name!r}: ") and problem in err and err.count("\n") == 1
    assert not (tmp_path / "p").exists()


def test_an_existing_target_is_refused_and_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "greeter").mkdir()
    (tmp_path / "greeter" / "notes.txt").write_text("mine")
    code, out, err = herald("new-plugin", "greeter")
    assert (code, out) == (2, "")
    assert err == "herald: greeter already exists: choose another directory (--dir) or remove it\n"
    assert [p.name for p in (tmp_path / "greeter").iterdir()] == ["notes.txt"]
