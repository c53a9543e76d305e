"""The herald command line."""

import os
import subprocess
import sys

from engine import Config, ConfigError
from server import main

import pytest


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "server", *args], capture_output=True, text=True,
                          env={"PATH": "", "COLUMNS": "200", **(env or {})})


def test_help_lists_the_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "serve" in out and "plugins" in out
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--data-dir", "--plugins", "HERALD_PORT", "HERALD_NOTIFY_URL"):
        assert flag in out


def test_bad_settings_exit_2_with_a_clear_message():
    result = run("serve", env={"HERALD_PORT": "eighty"})
    assert result.returncode == 2
    assert "HERALD_PORT='eighty'" in result.stderr
    result = run("serve", "--plugins", "nope")
    assert result.returncode == 2 and "unknown plugin 'nope'" in result.stderr


def test_environment_then_flags():
    config = Config.from_env({"HERALD_PORT": "9000", "HERALD_PLUGINS": "fitness, x", "HERALD_MAX_SKEW": "5"}, port=9001)
    assert (config.port, config.plugins, config.max_skew) == (9001, ["fitness", "x"], 5.0)
    assert Config.from_env({"HERALD_PLUGINS": "all"}).plugins is None
    assert Config.from_env({"HERALD_HOST": "0.0.0.0", "HERALD_PORT": "81"}).effective_notify_url == "http://127.0.0.1:81/v1/notify"
    with pytest.raises(ConfigError, match="HERALD_MAX_SKEW"):
        Config.from_env({"HERALD_MAX_SKEW": "-1"})


def test_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("herald ")


def test_plugins_add_serve_flags_that_override_their_variables(monkeypatch):
    from engine.cli import _parser, serve_config
    from server import _add_serve

    monkeypatch.setenv("HERALD_MARKETPLACE_PROVIDER_URL", "http://from-env/api/events")
    monkeypatch.setenv("HERALD_MARKETPLACE_POLL_SECONDS", "30")
    args = _parser([_add_serve]).parse_args(["serve", "--marketplace-provider-url", "http://from-flag/api/events",
                                 "--kafka-bootstrap", "127.0.0.1:9092"])
    config = serve_config(args)
    assert config.plugin_setting("marketplace", "provider_url", None) == "http://from-flag/api/events"
    assert config.plugin_setting("marketplace", "poll_seconds", 60.0, float) == 30.0  # no flag: the variable
    assert config.plugin_setting("kafka", "bootstrap", None) == "127.0.0.1:9092"


@pytest.fixture
def busy_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_serve_on_a_port_in_use_says_so_in_one_line(busy_port):
    result = run("serve", "--port", str(busy_port), "--durability", "memory")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "ExceptionGroup" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"herald: cannot listen on 127.0.0.1:{busy_port}: address already in use"


def test_serve_says_where_its_data_goes(busy_port, tmp_path):
    # The line comes before the bind, so a busy port ends the run right after it.
    result = run("serve", "--port", str(busy_port), "--data-dir", str(tmp_path / "data"), env={"COLUMNS": "400"})
    assert result.returncode == 2
    assert f"journal: {tmp_path / 'data' / 'herald.db'} (durability batch)" in result.stderr
    result = run("serve", "--port", str(busy_port), "--durability", "memory", env={"COLUMNS": "400"})
    assert "no journal (durability memory)" in result.stderr


def test_load_exits_1_when_nothing_was_applied(tmp_path):
    bad = tmp_path / "bad.data"
    bad.write_text("not json\n{\"also\": \"not a message\"}\n")
    empty = tmp_path / "empty.data"
    empty.write_text("")
    for path in (bad, empty):
        result = run("load", "customers", str(path), "--data-dir", str(tmp_path / "d"), "--quiet")
        assert result.returncode == 1, result.stderr
        assert result.stdout.startswith(f"loaded {path}: ") and " 0 applied" in result.stdout


def _children(pid):
    """The pids whose parent is ``pid`` (Linux /proc)."""
    import os

    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    return children


def _accepts(port):
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.kafka
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the broker through /proc")
def test_dev_kafka_stops_its_broker_on_sigterm():
    import signal
    import time

    from engine.testing import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "server", "dev-kafka", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children = []
    try:
        deadline = time.monotonic() + 30
        while not _accepts(port):
            assert proc.poll() is None and time.monotonic() < deadline, "the broker did not start"
            time.sleep(0.1)
        children = _children(proc.pid)
        assert children, "no broker child found"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        deadline = time.monotonic() + 10
        while any(_alive(child) for child in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(child) for child in children), "the broker outlived herald dev-kafka"
        assert not _accepts(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for child in children:  # an orphaned broker, if the test failed
            if _alive(child):
                os.kill(child, signal.SIGKILL)


def test_plugins_piped_lists_every_event_type_and_loader_whole():
    import attrs

    from engine._plugins import PluginHost, available_plugins

    result = run("plugins", env={"COLUMNS": "40"})  # stdout is a pipe: a narrow terminal must not matter
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines[0] == ["plugin", "module", "enabled", "event types", "loaders"]
    rows = {row[0]: row for row in lines[1:]}
    host = PluginHost.from_config(attrs.evolve(Config.from_env({}), plugins=list(available_plugins())))
    for name in host.names:
        assert rows[name][3].split(", ") == [t.name for t in host.event_types(name)]
    for listed in ("training_program_cancelled", "marketplace.plan_seen", "analytics.client_revoked"):
        assert any(listed in row[3].split(", ") for row in rows.values())
    assert rows["customers"][4] == "customers"


def _walk(parser, path=("herald",)):
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"{' '.join(path)} {name}: no help in the command list"
                yield from _walk(sub, (*path, name))


def test_every_command_and_option_has_a_help_text(monkeypatch):
    import argparse
    import re

    monkeypatch.setenv("COLUMNS", "80")

    from engine.cli import _parser
    from server import _add_serve

    commands = list(_walk(_parser([_add_serve])))
    assert {path[-1] for path, _ in commands} >= {"serve", "load", "journal", "stats", "salvage", "replay", "snapshot",
                                                  "dev-kafka", "plugins", "mock-provider", "mock-crm", "crm-produce",
                                                  "tokens"}
    missing = []
    for path, parser in commands:
        if not parser.description:
            missing.append(f"{' '.join(path)}: no description")
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}: no help")
        parser.format_help()  # formatting must not fail (e.g. a stray % in a help text)
    assert not missing, "\n".join(missing)
    for markup in ("``", "[/", "**"):
        for path, parser in commands:
            assert markup not in parser.format_help(), f"{' '.join(path)}: markup {markup!r} in its help"
    for path, parser in commands:  # no flag cut in two at a line's end (--data-/dir)
        assert not re.search(r"\w-\n", parser.format_help()), f"{' '.join(path)}:\n{parser.format_help()}"


@pytest.mark.kafka
def test_crm_produce_shows_its_progress(kafka_bootstrap):
    import queue
    import signal
    import threading
    import time

    proc = subprocess.Popen([sys.executable, "-m", "server", "crm-produce", "--bootstrap", kafka_bootstrap],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    try:
        first = lines.get(timeout=30)  # at the seed's rate a message every 1-4 s: the first line comes at once
        assert first.startswith("produced 1 message (")
        deadline = time.monotonic() + 10
        while True:  # and more lines while it runs, with no message produced in between as well
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line != first:
                break
        assert line.startswith("produced ")
        proc.send_signal(signal.SIGINT)  # stops it as Ctrl-C does, with the last count
        code = proc.wait(30)
        rest = []
        while not lines.empty():
            rest.append(lines.get())
        assert code == 0, "".join(rest)
        assert rest and rest[-1].startswith("produced ")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
