"""How log records are written: rich's console layout for a person at a terminal, else one line
per record that log collectors (journald, Loki, CloudWatch) never split (``HERALD_LOG_FORMAT``).

``text`` is ``TIME LEVEL LOGGER: message key=value…`` with any newline (a traceback's included)
escaped as ``\\n``, so that a record is exactly one line; ``json`` is one JSON object per line:
``time``, ``level``, ``logger``, ``message``, the record's ``extra=`` fields (``node``,
``partition``, ``plugin``, ``event_id``, …) and ``traceback``. Every format passes through
:class:`~engine._redact.RedactingFilter` first: no credential of a URL reaches any of them.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from ._redact import _STANDARD, RedactingFilter

__all__ = ["LOG_FORMATS", "FieldsLog", "JsonFormatter", "TextFormatter", "log_handler", "record_extras"]

#: ``HERALD_LOG_FORMAT`` values; ``auto`` is ``rich`` when stderr is a terminal, else ``text``.
LOG_FORMATS = ("auto", "text", "rich", "json")

class FieldsLog(logging.LoggerAdapter):
    """A logger that adds fields it was made with (a cluster node's ``node``, a shard's ``partition``) to
    every record, under the call's own ``extra=``: the one place those fields are filled, not each call."""

    def __init__(self, logger: logging.Logger, **fields: Any) -> None:
        super().__init__(logger, fields)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = kwargs.get("extra")
        kwargs["extra"] = {**self.extra, **extra} if extra else self.extra
        return msg, kwargs

    def with_fields(self, **fields: Any) -> "FieldsLog":
        """The same logger, with these fields too (e.g. ``partition=3`` beside the node)."""
        return FieldsLog(self.logger, **{**self.extra, **fields})


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a ``log.x(..., extra={...})`` call added to ``record``."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _traceback(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:  # not filtered (RedactingFilter moves it to exc_text)
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or None


def _value(value: Any) -> str:
    """An ``extra=`` value as ``key=value`` shows it: quoted (JSON) if it has a space, ``=`` or a quote."""
    text = str(value)
    return orjson.dumps(text).decode() if not text or any(c in text for c in ' ="') else text


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class TextFormatter(logging.Formatter):
    """One line per record: ``2024-05-01T12:00:00.000Z WARNING herald.engine: message k=v``, its
    traceback (if any) after `` | `` with newlines escaped as ``\\n``."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_time(record)} {record.levelname} {record.name}: {record.getMessage()}"
        extras = record_extras(record)
        if extras:
            line += "".join(f" {k}={_value(v)}" for k, v in extras.items())
        trace = _traceback(self, record)
        if trace:
            line += " | " + trace
        return _escape(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, the ``extra=``
    fields, and ``traceback`` when the record carries one."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {"time": _time(record), "level": record.levelname, "logger": record.name,
                                "message": record.getMessage()}
        for key, value in record_extras(record).items():
            body.setdefault(key, value)
        trace = _traceback(self, record)
        if trace:
            body["traceback"] = trace
        return orjson.dumps(body, default=str).decode()


def log_handler(log_format: str, stream: IO[str] | None = None) -> logging.Handler:
    """The handler ``herald`` logs through, writing to ``stream`` (stderr), redacting every record."""
    stream = sys.stderr if stream is None else stream
    if log_format == "auto":
        log_format = "rich" if stream.isatty() else "text"
    handler: logging.Handler
    if log_format == "rich":
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(file=stream), show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())  # no password or query string of a URL ever reaches a log
    return handler
