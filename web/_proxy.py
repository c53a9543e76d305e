"""Behind a reverse proxy: the scheme and client address that a trusted proxy reports.

A proxy that ends TLS talks plain HTTP to Herald and says what it saw in
``X-Forwarded-Proto`` and ``X-Forwarded-For``. Those headers are believed
only when the connection comes from an address of ``HERALD_TRUSTED_PROXIES``
(none by default); from anyone else they are ignored, as anyone can send them.
``IngestApp`` rewrites the ASGI scope once, before anything reads it, so the
scheme and client address are the same for every route, redirect and cookie:
:func:`request_is_https` and :func:`client_address` are what code asks.
``Forwarded`` (RFC 7239) is not read: a proxy that manages one family of
headers passes the other through from the client unchanged, so believing
both would let a client forge one.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Iterable

from quart import request

__all__ = ["TrustedProxies", "client_address", "request_is_https"]


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an IP address (None if it is not one); kept for the latest addresses, as parsing costs
    microseconds and a proxy's requests come from the same few clients again and again."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack socket shows an IPv4 peer as ::ffff:a.b.c.d: it is that IPv4 address.
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


@functools.lru_cache(maxsize=4096)
def _canonical(text: str) -> str | None:
    """``text`` as an address is usually written (``::ffff:10.0.0.1`` -> ``10.0.0.1``); None if it is not one."""
    address = _address(text)
    return None if address is None else str(address)


def _values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """Every comma-separated value of every ``name`` header, in order."""
    return [part.strip() for key, value in headers if key == name
            for part in value.decode("latin-1").split(",") if part.strip()]


class TrustedProxies:
    """The reverse proxies whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed."""

    def __init__(self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        #: As ``Config.trusted_proxies`` holds them (``ipaddress`` networks).
        self.networks = tuple(networks)
        # Every request from a proxy asks about the same few addresses: the latest answers are kept.
        self.trusts = functools.lru_cache(maxsize=4096)(self._trusts)

    def _trusts(self, address: str | None) -> bool:
        found = _address(address) if address else None
        return found is not None and any(found in network for network in self.networks)

    def resolve(self, scope: dict) -> dict:
        """``scope`` as the client's own request: from a trusted peer, the client is the nearest address of
        ``X-Forwarded-For`` (read from the right) that is not itself a trusted proxy, and the scheme is what
        the proxy that client reached says in ``X-Forwarded-Proto``. From any other peer: ``scope`` itself."""
        peer = scope.get("client")
        if not self.networks or not peer or not self.trusts(peer[0]):
            return scope
        headers = scope.get("headers", ())
        client, hops = peer[0], 0
        for hop in reversed(_values(headers, b"x-forwarded-for")):
            address = _canonical(hop)
            if address is None:  # not an address: the last one that was stands
                break
            client, hops = address, hops + 1
            if not self.trusts(client):
                break
        protos = _values(headers, b"x-forwarded-proto")
        scheme = scope.get("scheme", "http")
        if protos:
            # The report of the proxy the client connected to; with fewer reports, the farthest one.
            said = protos[-min(max(hops, 1), len(protos))].lower()
            if said in ("http", "https"):
                scheme = said if scope.get("type") != "websocket" else {"http": "ws", "https": "wss"}[said]
        if client == peer[0] and scheme == scope.get("scheme"):
            return scope
        return {**scope, "client": (client, 0 if client != peer[0] else peer[1]), "scheme": scheme}


def request_is_https() -> bool:
    """Whether the browser reached Herald over TLS (itself, or a trusted proxy in front): cookies are then
    ``Secure``."""
    return request.scheme in ("https", "wss")


def client_address(scope: dict | None = None) -> str | None:
    """The client's IP address: the peer's, or behind a trusted proxy the one it reports (see
    :class:`TrustedProxies`). From the current Quart request, or from an ASGI ``scope`` that has passed
    ``IngestApp`` (the ingestion fast path and raw routes). For per-client decisions (rate limits, logs)."""
    if scope is None:
        return request.remote_addr
    peer = scope.get("client")
    return peer[0] if peer else None
