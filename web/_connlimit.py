"""A bound on the connections hypercorn-trio holds open (``HERALD_MAX_CONNECTIONS``).

Without one, sockets that connect and send nothing pile up until the process is
out of descriptors; then nothing is accepted, ``/healthz`` included, until
hypercorn's keep-alive timer closes some of them.

Hypercorn-trio has no limit of its own and no supported way to add one:
``hypercorn.trio.serve`` creates its listeners itself (a ``fd://`` bind only hands
it a ready listening socket; the accept loop is still hypercorn's) and runs one
``hypercorn.trio.run.TCPServer`` per accepted stream. That factory is the one
seam, so :func:`install` wraps it, once per process. The wrapper changes nothing
for a hypercorn config without a :class:`ConnectionLimit` in its
``herald_connections`` attribute; with one, each connection is registered and,
at the cap, a new one makes room:

1. the oldest connection that has not sent a byte yet is closed;
2. else the one that has been idle longest (everything it sent was answered:
   a kept-alive connection between requests);
3. else every connection is in the middle of a request: the new one is closed,
   since the requests under way are worth more. Tricklers among them do not last:
   slow headers are cut off by hypercorn's keep-alive timer, slow bodies by
   ``HERALD_BODY_TIMEOUT``.

"Idle" is judged from the stream alone: everything received has been followed by
something sent. So a response being written also counts as idle; at the cap, a
client that stops reading a long answer may be the one closed.
"""

from __future__ import annotations

import logging
import math
import resource
from typing import Any, Awaitable, Callable

import hypercorn.trio.run
import trio

__all__ = ["ConnectionLimit", "install", "ensure_open_files"]

log = logging.getLogger("herald.server")

_TCPServer = hypercorn.trio.run.TCPServer
_now = trio.current_time


class _Watched:
    """An accepted stream, as hypercorn's TCPServer uses it, noting when the peer
    last sent something and when it was last answered."""

    def __init__(self, stream: trio.SocketStream, limit: ConnectionLimit) -> None:
        self.stream = stream
        self.socket = stream.socket
        self.limit = limit
        self.scope = trio.CancelScope()
        self.heard = self.answered = -math.inf
        #: Not a byte received yet (then the limit holds it among the silent ones).
        self.unheard = True

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.stream.receive_some(max_bytes)
        if data:
            self.heard = _now()
            if self.unheard:
                self.unheard = False
                self.limit.heard_from(self)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # Hypercorn writes each response's end as an empty write (h11 has nothing to send for it
        # with a Content-Length): that costs a trip through the scheduler and sends nothing.
        if data:
            await self.stream.send_all(data)
        self.answered = _now()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()

    @property
    def idle(self) -> bool:
        return self.answered >= self.heard


class ConnectionLimit:
    """At most ``cap`` open connections; see the module's documentation."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        #: Connections that have sent nothing yet, oldest first; then the others.
        self.silent: dict[_Watched, None] = {}
        self.talking: dict[_Watched, None] = {}
        self.evicted = self.refused = 0

    def __len__(self) -> int:
        return len(self.silent) + len(self.talking)

    def heard_from(self, conn: _Watched) -> None:
        if conn in self.silent:
            del self.silent[conn]
            self.talking[conn] = None

    def _forget(self, conn: _Watched) -> None:
        self.silent.pop(conn, None)
        self.talking.pop(conn, None)

    def _make_room(self) -> bool:
        if len(self) < self.cap:
            return True
        if self.silent:
            victim = next(iter(self.silent))
        else:
            idle = [conn for conn in self.talking if conn.idle]
            if not idle:
                self.refused += 1
                return False
            victim = min(idle, key=lambda conn: conn.answered)
        self.evicted += 1
        self._forget(victim)
        victim.scope.cancel()  # hypercorn's serve_listeners then closes its socket
        return True

    async def serve(self, run: Callable[[Any], Awaitable[None]], stream: trio.SocketStream) -> None:
        if not self._make_room():
            if self.refused & (self.refused - 1) == 0:  # 1st, 2nd, 4th, 8th...: not a line per refusal
                log.warning("%d connections open, all in a request: refused a new one (%d so far)",
                            len(self), self.refused)
            await trio.aclose_forcefully(stream)
            return
        conn = _Watched(stream, self)
        self.silent[conn] = None
        try:
            with conn.scope:
                await run(conn)
        finally:
            self._forget(conn)


def _tcp_server(app: Any, config: Any, context: Any, state: Any, stream: Any) -> Awaitable[None]:
    limit = getattr(config, "herald_connections", None)
    if limit is None or not isinstance(stream, trio.SocketStream):  # TLS streams: as hypercorn does
        return _TCPServer(app, config, context, state, stream)
    return limit.serve(lambda conn: _TCPServer(app, config, context, state, conn).run(), stream)


def install() -> None:
    """Route hypercorn-trio's connections through :func:`_tcp_server` (idempotent)."""
    hypercorn.trio.run.TCPServer = _tcp_server  # type: ignore[assignment, misc]


def ensure_open_files(cap: int, spare: int = 100) -> int:
    """The cap to use: ``cap`` connections and ``spare`` other descriptors must fit in
    RLIMIT_NOFILE, whose soft limit is raised for them as far as the hard one allows;
    beyond that the cap is lowered (with a warning), lest accept() run out first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = cap + spare
    if soft == resource.RLIM_INFINITY or soft >= want:
        return cap
    if hard == resource.RLIM_INFINITY or hard >= want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return cap
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fitting = max(1, hard - spare)
    log.warning("HERALD_MAX_CONNECTIONS=%d does not fit in %d descriptors (ulimit -n): at most %d connections",
                cap, hard, fitting)
    return fitting
