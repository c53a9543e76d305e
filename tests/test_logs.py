"""Logs for machines: one line per record unless stderr is a terminal (``HERALD_LOG_FORMAT``),
JSON objects with the record's fields, credentials redacted in every format."""

from __future__ import annotations

import io
import logging
import os
import re
import textwrap

import orjson
import pytest

from engine import EventType, hookimpl
from engine._logs import log_handler
from engine.testing import Simulation

SECRET = "hunter2"
LONG = "offset " + " ".join(str(n) for n in range(400))  # far beyond any terminal's width
#: How a text record starts: ``2024-05-01T12:00:00.000Z LEVEL logger:``.
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _emit(log_format: str, stream: io.StringIO) -> None:
    """A long record with extras, then one with a traceback, both quoting a URL with a password."""
    logger = logging.Logger("herald.test")
    logger.addHandler(log_handler(log_format, stream))
    logger.warning("%s via http://feed:%s@127.0.0.1:9/x?key=%s", LONG, SECRET, SECRET,
                   extra={"plugin": "fitness", "event_id": "e-1", "source": f"http://u:{SECRET}@h/"})
    try:
        raise RuntimeError(f"could not reach http://feed:{SECRET}@127.0.0.1:9/\nsecond line")
    except RuntimeError:
        logger.exception("the source crashed", extra={"plugin": "marketplace"})


def test_text_writes_one_line_per_record_with_its_traceback_escaped_and_no_secret():
    stream = io.StringIO()
    _emit("text", stream)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and all(TEXT_LINE.match(line) for line in lines), lines
    assert LONG in lines[0] and "plugin=fitness" in lines[0] and "event_id=e-1" in lines[0]
    assert lines[1].endswith("RuntimeError: could not reach http://feed:***@127.0.0.1:9/\\nsecond line")
    assert "the source crashed plugin=marketplace | Traceback (most recent call last):\\n" in lines[1]
    assert SECRET not in stream.getvalue()


def test_json_writes_one_object_per_line_with_the_fields_and_no_secret():
    stream = io.StringIO()
    _emit("json", stream)
    first, second = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert {k: first[k] for k in ("level", "logger", "plugin", "event_id")} == {
        "level": "WARNING", "logger": "herald.test", "plugin": "fitness", "event_id": "e-1"}
    assert first["message"].startswith(LONG) and first["source"] == "http://u:***@h/"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert second["message"] == "the source crashed" and second["plugin"] == "marketplace"
    assert second["traceback"].startswith("Traceback") and "feed:***@127.0.0.1:9" in second["traceback"]
    assert SECRET not in stream.getvalue()


def test_auto_is_rich_on_a_terminal_and_text_elsewhere():
    piped, terminal = io.StringIO(), _Terminal()
    _emit("auto", piped)
    _emit("auto", terminal)
    assert all(TEXT_LINE.match(line) for line in piped.getvalue().splitlines())
    wrapped = terminal.getvalue().splitlines()
    assert len(wrapped) > 5 and not TEXT_LINE.match(wrapped[1])  # rich's layout, wrapped to the terminal
    assert SECRET not in terminal.getvalue()


class Failing:
    name = "failing"

    @hookimpl
    def herald_event_types(self):
        def fail(state, event):
            raise ValueError("no")

        return [EventType("fail", fail)]


async def test_a_handler_failure_is_logged_with_its_plugin_and_event_id(autojump_clock):
    stream = io.StringIO()
    handler = log_handler("json", stream)
    logging.getLogger("herald.engine").addHandler(handler)
    try:
        async with Simulation([Failing()]) as sim:
            event = sim.apply({"type": "fail", "key": "k", "timestamp": "2021-02-28T16:00:00Z", "id": "ev-7"})
    finally:
        logging.getLogger("herald.engine").removeHandler(handler)
    (record,) = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert (record["plugin"], record["event_id"]) == ("failing", event.id)
    assert "ValueError: no" in record["traceback"]


NOISY = textwrap.dedent(f'''
    """A plugin whose source logs a long line quoting a secret URL, then crashes."""
    import logging
    from engine import hookimpl

    name = "noisy"

    @hookimpl
    def herald_sources(context):
        async def source():
            logging.getLogger("herald.noisy").warning("{LONG} at http://u:{SECRET}@127.0.0.1:9/")
            raise RuntimeError("gone: http://u:{SECRET}@127.0.0.1:9/")
        return [source]
''')


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["auto", "json"])
async def test_herald_serve_into_a_file_writes_one_record_per_line(tmp_path, log_format):
    import trio

    from engine.testing import herald_process

    (tmp_path / "noisy_plugin").mkdir()
    (tmp_path / "noisy_plugin" / "__init__.py").write_text("")
    (tmp_path / "noisy_plugin" / "noisy.py").write_text(NOISY)
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(tmp_path)]))
    env = {"PYTHONPATH": path, "HERALD_PLUGINS": "fitness,noisy_plugin.noisy", "HERALD_LOG_LEVEL": "INFO",
           "HERALD_LOG_FORMAT": log_format, "COLUMNS": "80"}
    log = tmp_path / "herald.log"
    async with herald_process(tmp_path, **env):
        with trio.fail_after(20):
            while "crashed; restarting" not in log.read_text():
                await trio.sleep(0.05)
    lines = log.read_text().splitlines()
    assert SECRET not in log.read_text()
    if log_format == "json":
        records = [orjson.loads(line) for line in lines]
        assert any(r["message"].startswith(LONG) and r["logger"] == "herald.noisy" for r in records)
        crash = next(r for r in records if "crashed; restarting" in r["message"])
        assert crash["plugin"] == "noisy" and "RuntimeError: gone: http://u:***@127.0.0.1:9/" in crash["traceback"]
    else:
        assert all(TEXT_LINE.match(line) for line in lines), lines
        assert any(LONG in line for line in lines)
        assert any("crashed; restarting" in line and "\\nRuntimeError: gone" in line for line in lines)
