"""docs/tutorial.md as steps a test can run: commands with their expected output, files, patches.

The tutorial's blocks (found by ``test_examples.markdown_blocks``) become :data:`STEPS`, in order:

- a ``console`` block: ``$ command`` lines, each followed by what it prints (:func:`matches`:
  ``...`` alone on a line stands for any lines, inside a line for any text; runs of blanks are equal);
- a block whose first line is ``# PATH``: the file as it is at that point (compared), or, as
  ``# PATH (new)``, a file the reader writes;
- a ``diff`` block: a patch the reader applies (``git apply``).

Two ways to run them: :class:`InProcessShell` (the default run: ``herald`` commands in process,
``pip install -e`` as registered metadata, pytest through ``pytester``, ``herald serve`` as an app
behind an in-process client) and :func:`bash_script` (``slow``: the commands as written, in bash).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
PORT = "8000"  # the port the tutorial's server listens on (a test gives another)


@attrs.frozen
class Command:
    command: str
    expected: tuple[str, ...]


@attrs.frozen
class File:
    path: str
    text: str
    new: bool  # the reader writes it; else it must read exactly so


@attrs.frozen
class Patch:
    text: str


Step = Command | File | Patch


def steps(blocks: list[tuple[str, str]]) -> list[Step]:
    """The tutorial's blocks, ``(language, code)``, as steps; a block of no known kind is an error."""
    found: list[Step] = []
    for language, code in blocks:
        first, _, rest = code.partition("\n")
        if language == "console":
            for chunk in re.split(r"^\$ ", code, flags=re.M)[1:]:
                command, *output = chunk.rstrip("\n").split("\n")
                found.append(Command(command, tuple(output)))
        elif language == "diff":
            found.append(Patch(code))
        elif (named := re.fullmatch(r"# (\S+)( \(new\))?", first)) is not None:
            found.append(File(named[1], rest, bool(named[2])))
        else:
            raise ValueError(f"a {language or 'plain'} block the tutorial test cannot run: {first!r}")
    return found


def _normal(line: str) -> str:
    return " ".join(line.split())


def matches(expected: tuple[str, ...] | list[str], output: str) -> bool:
    """Whether ``output`` reads as ``expected`` (``...`` lines and text; blanks normalised)."""
    pattern = "".join(r"(?:[^\n]*\n)*" if line.strip() == "..." else
                      re.escape(_normal(line)).replace(r"\.\.\.", "[^\n]*") + "\n" for line in expected)
    lines = [_normal(line) for line in output.strip("\n").split("\n")] if output.strip() else []
    return re.fullmatch(pattern, "".join(line + "\n" for line in lines)) is not None


def explain(step: Command, output: str) -> str:
    return f"$ {step.command}\nexpected:\n" + "\n".join(step.expected) + "\ngot:\n" + output


# -- the default run: in process ------------------------------------------------------------------------


class InProcessShell:
    """The tutorial's commands without processes: what each would do, done in this one.

    ``herald ...`` runs ``server.main``; ``python -m pip install -e '.[test]'`` registers the package's
    metadata (its entry points) on ``sys.path``, as an editable install does; ``python -m pytest``
    runs the package's tests in ``pytester``; ``herald serve ... &`` serves the app in process until
    ``kill %1``, and ``curl`` asks it; ``| grep WORD`` keeps the lines holding WORD. Modules imported
    from the reader's files are forgotten after each command, so the next one sees an edit.
    """

    def __init__(self, pytester: Any, monkeypatch: Any) -> None:
        self.pytester, self.monkeypatch = pytester, monkeypatch
        self.site = pytester.path.parent / f"{pytester.path.name}-site"
        self.site.mkdir()

    def run(self, all_steps: list[Step]) -> None:
        pending = list(all_steps)
        while pending:
            step = pending.pop(0)
            if isinstance(step, File):
                self.file(step)
            elif isinstance(step, Patch):
                subprocess.run(["git", "apply", "-"], input=step.text, text=True, check=True)
            elif step.command.startswith("herald serve") and step.command.endswith("&"):
                served = []
                while not (isinstance(pending[0], Command) and pending[0].command == "kill %1"):
                    served.append(pending.pop(0))
                pending.pop(0)
                self.serve(step.command, served)
            else:
                self.check(step, self.command(step.command))

    def check(self, step: Command, output: str) -> None:
        assert matches(step.expected, output), explain(step, output)

    def file(self, step: File) -> None:
        path = Path(step.path)
        if step.new:
            assert not path.exists(), step.path
            path.write_text(step.text)
        else:
            assert path.read_text() == step.text, f"{step.path} is not as the tutorial shows it"

    def command(self, command: str) -> str:
        command, _, grep = command.partition(" | grep ")
        if grep:
            return "".join(line + "\n" for line in self.command(command).splitlines() if grep in line)
        argv = [self._expand(word) for word in shlex.split(command)]
        if argv[0] == "cd":
            self.monkeypatch.chdir(argv[1])
            return ""
        if argv == ["wait"]:  # for the background server, stopped in process by ``kill %1``
            return ""
        if argv[0] == "export":
            name, _, value = argv[1].partition("=")
            self.monkeypatch.setenv(name, value)
            return ""
        with _forgetting_modules_under(self.pytester.path):
            if argv[0] == "herald":
                return self._herald(argv[1:])
            if argv[:5] == ["python", "-m", "pip", "install", "-e"] and argv[5:] in (["."], [".[test]"]):
                return self._install()
            if argv == ["python", "-m", "pytest"]:
                return self._pytest()
        raise AssertionError(f"the in-process shell cannot run {command!r}: teach it (tests/tutorial.py)")

    @staticmethod
    def _expand(word: str) -> str:
        import os

        return os.path.expandvars(word)

    def _herald(self, argv: list[str]) -> str:
        import server

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = server.main(argv)
        assert code == 0, err.getvalue()
        return out.getvalue() + err.getvalue()

    def _install(self) -> str:
        """What ``pip install -e .`` leaves: the package importable in place, its metadata found."""
        project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
        info = self.site / f"{project['name']}-{project['version']}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
        groups = project.get("entry-points", {})
        (info / "entry_points.txt").write_text("".join(
            f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items())
            for group, entries in groups.items()))
        self.monkeypatch.syspath_prepend(str(Path.cwd()))
        self.monkeypatch.syspath_prepend(str(self.site))
        return f"Successfully installed {project['name']}-{project['version']}\n"

    def _pytest(self) -> str:
        from importlib.metadata import entry_points

        installed = {ep.value for ep in entry_points(group="pytest11")}
        # As an installed Herald's entry points register them (an older install's metadata may miss one).
        extra = [arg for module in ("engine.testing", "web.testing") if module not in installed for arg in ("-p", module)]
        result = self.pytester.runpytest_inprocess(*extra, "-p", "no:cacheprovider")
        return "\n".join(result.outlines)

    def serve(self, command: str, served: list[Step]) -> None:
        """``herald serve`` (its flags and the environment, as the real one reads them) behind a client."""
        import trio

        argv = [self._expand(word) for word in shlex.split(command.split(">")[0])]
        trio.run(self._serving, argv[1:], served)

    async def _serving(self, argv: list[str], served: list[Step]) -> None:
        import httpx

        import server
        from engine import cli
        from engine.host import Herald, PluginHost

        config = cli.serve_config(cli._parser([server._add_serve]).parse_args(argv))
        herald = Herald(config, PluginHost.from_config(config))
        app = server.create_app(herald)
        async with herald.running():
            await herald.wait_ready()
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://herald.test") as client:
                for step in served:
                    assert isinstance(step, Command) and step.command.startswith("curl "), step
                    self.check(step, await self._curl(client, step.command))

    async def _curl(self, client: Any, command: str) -> str:
        argv = [self._expand(word) for word in shlex.split(command)][1:]
        headers, body, url, fail = {}, None, None, False
        while argv:
            word = argv.pop(0)
            if word == "-H":
                name, _, value = argv.pop(0).partition(":")
                headers[name.strip()] = value.strip()
            elif word == "--json":
                body = argv.pop(0)
                headers |= {"content-type": "application/json", "accept": "application/json"}
            elif word in ("--retry", "--retry-delay"):
                argv.pop(0)
            elif word.startswith("http"):
                url = word
            elif word in ("-f", "-sf"):
                fail = True
            else:
                assert word in ("-s", "--retry-connrefused"), word
        assert url is not None and f"127.0.0.1:{PORT}" in url, url
        path = url.split(f"127.0.0.1:{PORT}", 1)[1]
        if body is None:
            answer = await client.get(path, headers=headers)
        else:
            answer = await client.post(path, content=body, headers=headers)
        return "" if fail and answer.status_code >= 400 else answer.text  # -f: no body for an error


@contextlib.contextmanager
def _forgetting_modules_under(directory: Path):
    """Forget the modules imported from ``directory`` (the reader's package and tests) when done."""
    try:
        yield
    finally:
        for name, module in list(sys.modules.items()):
            if directory in Path(getattr(module, "__file__", None) or "/").parents:
                del sys.modules[name]


# -- slow: the commands as written, in bash ------------------------------------------------------------

MARK = "@@herald-tutorial-step@@"


def bash_script(all_steps: list[Step], port: int) -> str:
    """One bash script doing every step, each command's output after a marker line."""
    lines = ["exec 2>&1"]
    for step in all_steps:
        if isinstance(step, Command):
            lines += [f"printf '\\n%s\\n' {MARK}", step.command.replace(f"127.0.0.1:{PORT}", f"127.0.0.1:{port}")]
        elif isinstance(step, Patch):
            lines += [f"printf '\\n%s\\n' {MARK}", "git apply - <<'HERALD_EOF'", step.text + "HERALD_EOF"]
        elif step.new:
            lines += [f"printf '\\n%s\\n' {MARK}", f"cat > {shlex.quote(step.path)} <<'HERALD_EOF'", step.text + "HERALD_EOF"]
        else:
            lines += [f"printf '\\n%s\\n' {MARK}", f"diff -u {shlex.quote(step.path)} - <<'HERALD_EOF'", step.text + "HERALD_EOF"]
    return "\n".join(lines) + "\n"


def check_transcript(all_steps: list[Step], transcript: str) -> None:
    """Every step's output in the script's transcript reads as the tutorial says (files and patches: nothing)."""
    outputs = transcript.split(MARK + "\n")[1:]
    assert len(outputs) == len(all_steps), transcript
    for step, output in zip(all_steps, outputs):
        expected = step.expected if isinstance(step, Command) else ()
        shown = step if isinstance(step, Command) else Command(repr(step)[:80], ())
        assert matches(expected, output), explain(shown, output)
