"""Free TCP ports on 127.0.0.1, for the servers a test or a bench starts (a node, a broker, a mock)."""

from __future__ import annotations

import random
import socket

__all__ = ["free_port"]

#: Its own generator: a test that seeds the ``random`` module must not make every run pick the same ports.
_random = random.Random()
#: Where picking starts: well above the ports services listen on by convention.
_LOWEST = 10_000


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands to outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = map(int, f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 65535  # Linux's default start; BSDs and macOS use 49152-65535


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, for a server started soon after.

    Picked outside the kernel's ephemeral range: a port from that range can be taken by any
    outgoing connection (a client of the broker, say) between this call and the server's bind,
    which then fails with "address already in use". Randomly, so that processes picking at the
    same time (pytest-xdist workers) seldom pick the same port.
    """
    low, high = _ephemeral_range()
    return _pick([(a, b) for a, b in ((_LOWEST, low - 1), (high + 1, 65535)) if a <= b])


def _pick(spans: list[tuple[int, int]]) -> int:
    """A bindable port from the inclusive ``spans``, uniformly; any free port if none is found."""
    total = sum(b - a + 1 for a, b in spans)
    for _ in range(64 if total else 0):
        pick = _random.randrange(total)
        for a, b in spans:
            if pick <= b - a:
                port = a + pick
                break
            pick -= b - a + 1
        if _bindable(port):
            return port
    with socket.socket() as sock:  # nothing in the spans is free: any port the kernel gives
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
