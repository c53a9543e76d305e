"""Every code example in the README, the documentation site (docs/, pages in folders too) and the docstrings runs, as written.

Examples are collected from the Markdown files (```python blocks) and from
docstrings (the indented block after a line ending in ``::``). Each must be
claimed by a runner below, which supplies what the example leaves to the
reader (a server to talk to, a token, a secret): a new example with no runner
fails :func:`test_every_example_has_a_runner`, so none can quietly rot.
"""

from __future__ import annotations

import ast
import base64
import re
import textwrap
import types
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from . import tutorial

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]  # the README and every page of the site
MODULES = sorted(p for d in ("engine", "web", "plugins") for p in (ROOT / d).rglob("*.py")
                 if "tests" not in p.parts and "__pycache__" not in p.parts) + [ROOT / "server.py"]


def markdown_blocks(path: Path) -> list[tuple[str, str]]:
    """Every fenced block of a Markdown file, in order: ``(language, code)``."""
    return re.findall(r"```(\w*)\n(.*?)```", path.read_text(), re.S)


def _markdown_examples() -> dict[str, str]:
    found = {}
    for path in DOCUMENTS:
        python = [code for language, code in markdown_blocks(path) if language == "python"]
        for i, block in enumerate(python):
            found[f"{path.relative_to(ROOT).as_posix()}#{i}"] = block
    return found


def _docstring_examples() -> dict[str, str]:
    found = {}
    for path in MODULES:
        tree = ast.parse(path.read_text())
        nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
        for node in nodes:
            doc = ast.get_docstring(node)
            if not doc:
                continue
            lines = doc.splitlines()
            for i, line in enumerate(lines):
                if not line.rstrip().endswith("::"):
                    continue
                block = []
                for following in lines[i + 1:]:
                    if following.strip() and not following.startswith((" ", "\t")):
                        break
                    block.append(following)
                code = textwrap.dedent("\n".join(block)).strip()
                if code:
                    found[f"{path.relative_to(ROOT)}:{getattr(node, 'name', 'module')}:{i}"] = code
    return found


EXAMPLES = {**_markdown_examples(), **_docstring_examples()}
#: docs/tutorial.md, a walk-through: its blocks run in order, as steps (tests/tutorial.py), not one by one.
TUTORIAL_STEPS = tutorial.steps(markdown_blocks(tutorial.TUTORIAL))


def _as_coroutine(code: str, namespace: dict) -> types.CoroutineType:
    """The example as the body of an ``async def`` (it may use ``await`` and ``async with`` at its top)."""
    exec(compile("async def __example__():\n" + textwrap.indent(code, "    "), "example", "exec"), namespace)
    return namespace["__example__"]()


# -- runners: (what identifies the example, how to run it) --------------------------------------------------


def _plugin_test(name: str, plugin_src: str, test_src: str, test: str) -> Any:
    """An example plugin as the module ``name``, and the example test ``test`` that imports it."""
    module = types.ModuleType(name)
    exec(compile(plugin_src, f"docs:{name}", "exec"), module.__dict__)
    namespace = {name: module}
    exec(compile(test_src, f"docs:test_{name}", "exec"), namespace)
    return namespace[test]


async def _plugin_and_its_test(code: str, autojump_clock, tmp_path) -> None:
    test_src = next(b for b in EXAMPLES.values() if "async def test_weekly_streak" in b)
    await _plugin_test("streaks", code, test_src, "test_weekly_streak")(autojump_clock)


async def _route_plugin_and_its_tests(code: str, autojump_clock, tmp_path) -> None:
    """docs/plugins.md's streaks plugin with a route, and its tests (the ``app_client`` fixture's factory)."""
    import sys

    from web.testing import app_client

    test_src = next(b for b in EXAMPLES.values() if "async def test_the_streak_route" in b)
    streaks = types.ModuleType("streaks")
    exec(compile(code, "docs:streaks", "exec"), streaks.__dict__)
    sys.modules["streaks"] = streaks  # the test imports it, as a test file beside the module would
    try:
        namespace: dict = {}
        exec(compile(test_src, "docs:test_streaks", "exec"), namespace)
        with trio.fail_after(10):
            await namespace["test_the_streak_route"](app_client)
        await namespace["test_a_week_notifies_the_configured_sink"](autojump_clock)
    finally:
        del sys.modules["streaks"]


async def _default_handler_plugin_and_its_test(code: str, autojump_clock, tmp_path) -> None:
    """docs/plugins.md's replacement default handler, then its test (one block: the plugin, then its test)."""
    plugin_src, test_src = code.split("# test_unclaimed.py\n")
    await _plugin_test("unclaimed", plugin_src, test_src, "test_unclaimed_types_are_seen")(autojump_clock)


async def _api_declaration(code: str, autojump_clock, tmp_path) -> None:
    import engine

    exec(compile(code, "docs:HERALD_API", "exec"), namespace := {})
    assert namespace["HERALD_API"] == engine.API_VERSION  # the docs declare the version this Herald offers


async def _claimed_by_the_plugin_example(code: str, autojump_clock, tmp_path) -> None:
    assert "async def test_" in code  # run together with the plugin it tests


async def _walked_by_the_tutorial(code: str, autojump_clock, tmp_path) -> None:
    assert any(isinstance(step, tutorial.File) and code.endswith(step.text) for step in TUTORIAL_STEPS)


async def _signed_delivery(code: str, autojump_clock, tmp_path) -> None:
    from engine import Signer

    secret = "whsec_" + base64.b64encode(b"a secret of sixteen+").decode()
    raw_body = b'{"type": "nudge"}'
    request = types.SimpleNamespace(headers=Signer(secret).headers("fitness:nudge:u:1", raw_body))
    namespace = {"secret": secret, "request": request, "raw_body": raw_body}
    exec(compile(code, "README:signer", "exec"), namespace)
    assert namespace["ok"] is True


async def _eye_client(code: str, autojump_clock, tmp_path) -> None:
    from .conftest import herald_process

    async with herald_process(tmp_path, HERALD_PLUGINS="analytics") as url:
        async with httpx.AsyncClient() as http:
            token = (await http.post(url + "/v1/admin/tokens", json={"name": "docs"})).json()["token"]
        code = code.replace("http://127.0.0.1:8000", url).replace('token="eye_..."', "token=token")
        namespace = {"token": token}
        await trio.to_thread.run_sync(lambda: trio.run(lambda: _as_coroutine(code, namespace)))
        if "stored" in namespace:
            assert [e["data"] for e in namespace["stored"]] == [{"host": "shop.test", "path": "/"}]


async def _simulation_docstring(code: str, autojump_clock, tmp_path) -> None:
    namespace: dict = {}
    exec(compile(code, "engine.testing", "exec"), namespace)
    await namespace["test_nudge"](autojump_clock)


async def _receiver_docstring(code: str, autojump_clock, tmp_path) -> None:
    from engine.testing import Receiver

    await _as_coroutine(code, {"Receiver": Receiver, "httpx": httpx})


async def _imports_only(code: str, autojump_clock, tmp_path) -> None:
    exec(compile(code, "example", "exec"), {})


async def _evolving_plugin_and_its_test(code: str, autojump_clock, tmp_path) -> None:
    """docs/plugins.md's release 2 of the streaks plugin, with its migration's test."""
    import sys

    test_src = next(b for b in EXAMPLES.values() if "def test_release_1_states_read_as_release_2" in b)
    streaks = types.ModuleType("streaks")
    exec(compile(code, "docs:streaks-release-2", "exec"), streaks.__dict__)
    sys.modules["streaks"] = streaks
    try:
        namespace: dict = {}
        exec(compile(test_src, "docs:test_streaks_migration", "exec"), namespace)
        namespace["test_release_1_states_read_as_release_2"]()
    finally:
        del sys.modules["streaks"]


async def _claimed_by_the_evolving_example(code: str, autojump_clock, tmp_path) -> None:
    assert "def test_release_1" in code  # run together with the plugin it tests


async def _sink_thread(code: str, autojump_clock, tmp_path) -> None:
    """engine.SinkThread's examples (docs/plugins.md, its docstring): real threads, so the real clock."""
    with trio.fail_after(30):
        await _as_coroutine(code, {})


RUNNERS = [  # the first whose marker an example holds runs it
    ("SinkThread(", _sink_thread),
    ("def herald_migrate_state(", _evolving_plugin_and_its_test),
    ("def test_release_1_states_read_as_release_2", _claimed_by_the_evolving_example),
    ("# streaks.py\n", _route_plugin_and_its_tests),
    ("def herald_state_type():\n    return Streak", _plugin_and_its_test),
    ("async def test_weekly_streak", _claimed_by_the_plugin_example),
    ("async def test_the_streak_route", _claimed_by_the_plugin_example),
    ("Signer.verify(", _signed_delivery),
    ("EyeClient(", _eye_client),
    ("async def test_nudge", _simulation_docstring),
    ("Receiver.running()", _receiver_docstring),
    ("from web import", _imports_only),
    ("def herald_default_handler(", _default_handler_plugin_and_its_test),
    ('HERALD_API = "1"  #', _api_declaration),
]


def _runner(code: str):
    if any(isinstance(step, tutorial.File) and code == f"# {step.path}{' (new)' if step.new else ''}\n{step.text}"
           for step in TUTORIAL_STEPS):
        return _walked_by_the_tutorial
    claimed = [run for marker, run in RUNNERS if marker in code]
    return claimed[0] if claimed else None


def test_every_example_has_a_runner():
    assert EXAMPLES, "no examples found"
    unclaimed = [name for name, code in EXAMPLES.items() if _runner(code) is None]
    assert unclaimed == []


SERVED = [_eye_client, _route_plugin_and_its_tests, _sink_thread]  # examples that talk to a real server or run threads: the real clock


@pytest.mark.parametrize("name", sorted(n for n, code in EXAMPLES.items() if _runner(code) not in SERVED))
async def test_the_example_runs(name, autojump_clock, tmp_path):
    code = EXAMPLES[name]
    await _runner(code)(code, autojump_clock, tmp_path)


@pytest.mark.parametrize("name", sorted(n for n, code in EXAMPLES.items() if _runner(code) in SERVED))
async def test_the_example_runs_against_a_real_server(name, tmp_path):
    code = EXAMPLES[name]
    with trio.fail_after(60):
        await _runner(code)(code, None, tmp_path)


def test_the_tutorial_runs_step_by_step(pytester, monkeypatch):
    """docs/tutorial.md, every block in order, in this process: ``herald`` commands run in it, the generated
    package's tests run under pytester, ``herald serve`` is the app behind an in-process client."""
    assert [type(step) for step in TUTORIAL_STEPS].count(tutorial.Command) > 10
    tutorial.InProcessShell(pytester, monkeypatch).run(TUTORIAL_STEPS)


@pytest.mark.slow
def test_the_tutorial_runs_as_written_in_bash_and_a_fresh_venv(tmp_path):
    """docs/tutorial.md's commands as written, in bash, in a fresh venv (over this environment's packages, with
    this checkout's Herald): a real ``pip install -e .`` (offline, no build isolation), pytest, ``herald
    serve`` and curl."""
    import os
    import subprocess
    import sys

    from engine.testing import free_port

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    herald = venv / "bin" / "herald"  # what installing Herald there would write, running this checkout's code
    herald.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom server import main\nsys.exit(main())\n")
    herald.chmod(0o755)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(tutorial.ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
           # pip with no network and no build isolation: the build backend of this environment.
           "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "HERALD_PORT": str(port := free_port())}
    probe = subprocess.run([venv / "bin" / "python", "-c", "import setuptools.command.bdist_wheel"], env=env,
                           capture_output=True)
    if probe.returncode:
        pytest.skip("an offline `pip install -e .` needs setuptools>=70.1 (the test extra): "
                    "python3 -m pip install -e '.[test]'")
    work = tmp_path / "work"
    work.mkdir()
    with subprocess.Popen(["bash", "-c", tutorial.bash_script(TUTORIAL_STEPS, port)], cwd=work, env=env,
                          stdout=subprocess.PIPE, text=True, start_new_session=True) as shell:
        try:
            transcript, _ = shell.communicate(timeout=240)
        finally:
            if shell.poll() is None:
                os.killpg(shell.pid, 9)
    tutorial.check_transcript(TUTORIAL_STEPS, transcript)
