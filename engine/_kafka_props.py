"""The user's librdkafka settings (``HERALD_KAFKA_CONFIG=client.properties``): TLS, SASL, tuning.

The file is Java-properties style, as Kafka's own tools take: ``key=value`` (or ``key: value``)
lines, ``#`` and ``!`` comments, blank lines. A key prefixed ``producer.``, ``consumer.`` or
``admin.`` applies to that kind of client only. Secret values (passwords, keys, JAAS and OAuth
settings) are registered with :mod:`engine._redact`, so that no log line, health body or error
shows them; this class's ``repr`` never does either.

Settings that would break what Herald guarantees are refused when the file is read, in one line
(e.g. ``enable.idempotence=false``: accepted events could be duplicated or reordered).
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from ._redact import MASK, add_secret

__all__ = ["ClientProperties", "ROLES", "is_secret"]

#: The kinds of client Herald makes; a key may be prefixed with one (``producer.linger.ms=20``).
ROLES = ("producer", "consumer", "admin")

_SECRET = re.compile(r"password|secret|jaas|oauthbearer\.config|\.key\.pem|keystore|token", re.I)

#: Settings Herald relies on, with the values it needs and why: a file setting another value is refused.
_NEEDED: dict[str, tuple[frozenset[str], str]] = {
    "enable.idempotence": (frozenset({"true"}), "producers must be idempotent (no duplicated or reordered events)"),
    "acks": (frozenset({"all", "-1"}), "an event is acknowledged once every in-sync replica has it"),
    "enable.auto.commit": (frozenset({"false"}), "offsets move only after what was read is durable"),
}
#: Settings Herald sets per client (a group per role, where a consumer starts): never from the file.
_HERALDS = ("group.id", "group.instance.id", "auto.offset.reset", "transactional.id", "enable.partition.eof",
            "isolation.level", "enable.auto.offset.store")


def is_secret(key: str) -> bool:
    return bool(_SECRET.search(key))


@attrs.frozen(repr=False)
class ClientProperties:
    """The settings of one ``client.properties`` file: ``(key, value)`` pairs, in file order."""

    path: str
    items: tuple[tuple[str, str], ...] = ()

    @classmethod
    def read(cls, path: str) -> "ClientProperties":
        """Read and check ``path``; ``ValueError`` (one line, no secret) if it cannot be used."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
        items: list[tuple[str, str]] = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line[0] in "#!":
                continue
            match = re.match(r"([^=:\s]+)\s*[=:]\s*(.*)$", line)
            if match is None:
                raise ValueError(f"line {number}: expected key=value")
            key, value = match.group(1), match.group(2).strip()
            if is_secret(key):
                add_secret(value)
            items.append((key, value))
        for key, value in items:
            bare = key.split(".", 1)[1] if key.split(".", 1)[0] in ROLES else key
            shown = MASK if is_secret(bare) else value
            if bare in _NEEDED and value.strip().lower() not in _NEEDED[bare][0]:
                raise ValueError(f"{key}={shown} is refused: {_NEEDED[bare][1]}")
            if bare in _HERALDS:
                raise ValueError(f"{key} is refused: Herald sets it for each client it makes")
        return cls(path, tuple(items))

    def for_role(self, role: str) -> dict[str, str]:
        """The settings a ``role`` client takes: the plain keys, then that role's prefixed ones."""
        found: dict[str, str] = {}
        prefix = role + "."
        for key, value in self.items:
            if key.split(".", 1)[0] not in ROLES:
                found[key] = value
        for key, value in self.items:
            if key.startswith(prefix):
                found[key[len(prefix):]] = value
        return found

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={MASK if is_secret(k) else v}" for k, v in self.items)
        return f"ClientProperties({self.path!r}: {shown})"
