"""Keeping secrets inside the process: URLs shown in health, logs and errors lose their credentials.

A configured URL may carry a password (``https://user:pw@host``) or a key in
its query string (``?api_key=...``). Whatever Herald shows about such a URL
(``/healthz``, a log line, a delivery error) goes through :func:`redact_url`
or, for free text that may quote URLs (an exception message), through
:func:`redact_text`; :class:`RedactingFilter` does the latter for every log
record.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "RedactingFilter", "add_secret", "redact_text", "redact_url"]

MASK = "***"
_URL = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>]+""")


def redact_url(url: str) -> str:
    """``url`` with its password and every query value replaced by ``***`` (the rest kept, for reading)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}"
    query = "&".join(f"{pair.split('=', 1)[0]}={MASK}" if "=" in pair else MASK
                     for pair in parts.query.split("&")) if parts.query else ""
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


#: Literal secret values the process was given (e.g. ``sasl.password`` from HERALD_KAFKA_CONFIG):
#: wherever they appear in text that leaves the process, they are masked.
_SECRETS: list[str] = []


def add_secret(value: str) -> None:
    """Mask ``value`` wherever :func:`redact_text` (so every log record and ``/healthz``) meets it."""
    if len(value) >= 4 and value not in _SECRETS:  # a shorter one would mask ordinary text
        _SECRETS.append(value)
        _SECRETS.sort(key=len, reverse=True)


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (see :func:`redact_url`), and every registered secret."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, MASK)
    if "://" not in text:
        return text
    def one(match: re.Match[str]) -> str:
        url = match.group(0)
        kept = url.rstrip(".,;:)]}")  # punctuation after a URL in a sentence is not part of it
        return redact_url(kept) + url[len(kept):]

    return _URL.sub(one, text)


class RedactingFilter(logging.Filter):
    """A handler filter: the message, the traceback and the text ``extra=`` fields of every record
    with their URLs redacted. The traceback is kept apart (redacted, in ``exc_text``), so that
    a formatter may place it (a JSON field, an escaped tail) while the default one appends it."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            record.exc_text = self._formatter.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        record.msg, record.args = redact_text(record.getMessage()), ()
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value.__class__ is str:
                record.__dict__[key] = redact_text(value)
        return True


#: The attributes every LogRecord has (anything else came from ``extra=``).
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
