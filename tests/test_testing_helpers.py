"""``engine.testing``'s small helpers."""

from __future__ import annotations

import socket

from engine import _ports
from engine.testing import free_port


def test_a_free_port_binds_and_lies_outside_the_ephemeral_range():
    low, high = _ports._ephemeral_range()
    ports = {free_port() for _ in range(50)}
    assert len(ports) > 40  # picked at random, not one port again and again
    for port in ports:
        assert not low <= port <= high and port >= 10_000, (port, low, high)
    port = ports.pop()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_picked():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        other = taken + 1 if taken < 65535 else taken - 1
        picks = {_ports._pick([(taken, taken), (other, other)]) for _ in range(20)}
        assert taken not in picks
        assert _ports._pick([(taken, taken)]) != taken  # none free in the spans: the kernel's choice
