"""Slow and odd input against a real `herald serve`: raw sockets on 127.0.0.1.

A body that trickles in is cut off after HERALD_BODY_TIMEOUT with a 408, slow
headers do not hold a connection forever, and idle sockets beyond
HERALD_MAX_CONNECTIONS cannot starve /healthz.
"""

from __future__ import annotations

import time

import httpx
import orjson
import trio

from .conftest import herald_process

#: Extra seconds allowed over a timeout on a shared 2-core machine.
MARGIN = 3


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def _connect(url: str) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", _port(url))


def _head(method: str, path: str, length: int, content_type: str = "application/json") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nhost: herald\r\ncontent-type: {content_type}\r\n"
            f"content-length: {length}\r\n\r\n").encode()


async def _read_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while True:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:  # a reset is a close too
            return received
        if not data:
            return received
        received += data


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def _read_response(stream: trio.SocketStream) -> tuple[int, dict[str, str], bytes]:
    """One whole response (with a content-length) from a kept-alive connection."""
    raw = b""
    while True:
        if b"\r\n\r\n" in raw:
            status, headers, body = _parse(raw)
            if len(body) >= int(headers["content-length"]):
                return status, headers, body
        data = await stream.receive_some(65536)
        assert data, raw
        raw += data


async def _healthz(url: str) -> int:
    async with httpx.AsyncClient() as client:
        return (await client.get(url + "/healthz")).status_code


async def _expect_408(url: str, head: bytes, first: bytes, trickle: bytes = b"", every: float = 0.2) -> float:
    """Send ``head`` and ``first``, then one byte of ``trickle`` every ``every``
    seconds; expect a 408 body_timeout and a close. Return how long it took."""
    stream = await _connect(url)
    start = time.monotonic()
    await stream.send_all(head + first)

    async def dribble() -> None:
        for byte in trickle:
            try:
                await stream.send_all(bytes([byte]))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            await trio.sleep(every)  # the client's pace, not a wait for a condition

    async with trio.open_nursery() as nursery:
        nursery.start_soon(dribble)
        with trio.fail_after(1 + MARGIN):
            raw = await _read_until_closed(stream)
        elapsed = time.monotonic() - start
        nursery.cancel_scope.cancel()
    await stream.aclose()
    status, headers, body = _parse(raw)
    assert status == 408, raw
    assert headers.get("connection") == "close"
    error = orjson.loads(body)["error"]
    assert error["code"] == "body_timeout" and error["field"] is None and error["message"]
    return elapsed


async def test_stalled_and_trickled_bodies_get_408_while_others_are_served(tmp_path):
    async with herald_process(tmp_path, HERALD_BODY_TIMEOUT="1", HERALD_DURABILITY="memory") as url:
        event = orjson.dumps({"type": "app_launch", "user_id": "u", "time_stamp": "2021-02-28 16:00:00"})
        async with trio.open_nursery() as nursery:
            # Headers, part of the body, then nothing; the server answers others meanwhile.
            stalled = await _connect(url)
            await stalled.send_all(_head("POST", "/v1/event", len(event)) + event[:5])
            assert await _healthz(url) == 200
            with trio.fail_after(1 + MARGIN):
                raw = await _read_until_closed(stalled)
            assert _parse(raw)[0] == 408
            # A byte every 0.2 s, on each route whose body Herald reads.
            cases = [
                (_head("POST", "/v1/event", len(event)), event),
                (_head("POST", "/v1/events", 1000), b"[" + b" " * 999),
                (_head("POST", "/v1/load/customers", 1000, "application/octet-stream"), b"\n" * 1000),
                (_head("POST", "/v1/notify", 1000), b" " * 1000),  # a Quart route: read before Quart
                (_head("PUT", "/nowhere", 1000), b" " * 1000),
                (b"POST /v1/events HTTP/1.1\r\nhost: herald\r\ntransfer-encoding: chunked\r\n\r\n",
                 b"1\r\n \r\n" * 200),  # one-byte chunks
            ]
            for head, body in cases:
                nursery.start_soon(_expect_408, url, head, body[:1], body[1:])
            with trio.fail_after(MARGIN):
                assert await _healthz(url) == 200


async def test_a_body_that_keeps_arriving_is_not_cut_off(tmp_path):
    """The clock restarts while data keeps coming: a 64 MiB load may take longer than the timeout."""
    async with herald_process(tmp_path, HERALD_BODY_TIMEOUT="1", HERALD_DURABILITY="memory") as url:
        line = orjson.dumps({"type": "app_launch", "user_id": "u", "time_stamp": "2021-02-28 16:00:00"}) + b"\n"
        body = line * (200_000 // len(line))
        stream = await _connect(url)
        start = time.monotonic()
        await stream.send_all(_head("POST", "/v1/events", len(body), "application/x-ndjson"))
        for offset in range(0, len(body), 65536):
            await stream.send_all(body[offset:offset + 65536])
            await trio.sleep(0.6)  # the client's pace: 64 KiB every 0.6 s
        assert time.monotonic() - start > 1.5
        with trio.fail_after(MARGIN):
            status, _, answer = await _read_response(stream)
        await stream.aclose()
        assert status == 202, answer
        assert orjson.loads(answer)["accepted"] == len(body) // len(line)


async def test_slow_headers_do_not_hold_a_connection(tmp_path):
    """Hypercorn's keep-alive timer runs from the accept until the headers are complete
    (data arriving does not restart it), so trickled headers are cut off too."""
    async with herald_process(tmp_path, HERALD_DURABILITY="memory") as url:
        stream = await _connect(url)
        start = time.monotonic()

        async def dribble() -> None:
            for byte in b"GET /healthz HTTP/1.1\r\nhost: herald\r\nx-slow: " + b"a" * 1000:
                try:
                    await stream.send_all(bytes([byte]))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                await trio.sleep(0.2)  # the client's pace

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dribble)
            with trio.fail_after(5 + MARGIN):
                await _read_until_closed(stream)
            nursery.cancel_scope.cancel()
        await stream.aclose()
        assert time.monotonic() - start < 5 + MARGIN


async def test_idle_sockets_beyond_the_cap_cannot_starve_healthz(tmp_path):
    """200 sockets that connect and send nothing, against a cap of 50 and a server with
    150 descriptors: without the cap it runs out of descriptors and /healthz waits for
    hypercorn's keep-alive timer (5 s) to close idle sockets; with it, the oldest silent
    connections are closed as new ones arrive."""
    idle, cap = 200, 50
    async with herald_process(tmp_path, open_files=150, HERALD_MAX_CONNECTIONS=str(cap),
                              HERALD_DURABILITY="memory") as url:
        sockets = []
        try:
            with trio.fail_after(10):
                for _ in range(idle):
                    sockets.append(await _connect(url))
            start = time.monotonic()
            with trio.fail_after(2):
                assert await _healthz(url) == 200
            healthz = time.monotonic() - start
            # The server closed the excess: at most the cap stay open on its side.
            closed = 0
            enough = trio.Event()

            async def closes(stream: trio.SocketStream) -> None:
                nonlocal closed
                await _read_until_closed(stream)
                closed += 1
                if closed >= idle - cap:
                    enough.set()

            async with trio.open_nursery() as nursery:
                for stream in sockets:
                    nursery.start_soon(closes, stream)
                with trio.fail_after(2):
                    await enough.wait()
                nursery.cancel_scope.cancel()
            print(f"/healthz in {healthz:.3f} s with {idle} idle sockets open")
        finally:
            for stream in sockets:
                await stream.aclose()


async def test_at_the_cap_the_silent_go_first_then_the_longest_idle_and_requests_under_way_stay():
    from web._connlimit import ConnectionLimit, _Watched

    class Stream:
        socket = None

    limit = ConnectionLimit(3)

    def conn(heard: float | None = None, answered: float | None = None) -> _Watched:
        c = _Watched(Stream(), limit)  # type: ignore[arg-type]
        limit.silent[c] = None
        if heard is not None:
            c.heard = heard
            limit.heard_from(c)
        if answered is not None:
            c.answered = answered
        return c

    idle_long, idle_short, silent = conn(1, 2), conn(3, 4), conn()
    assert limit._make_room() and silent.scope.cancel_called and len(limit) == 2
    newest_silent = conn()
    assert limit._make_room() and newest_silent.scope.cancel_called  # silent before idle, however new
    conn(5)  # in a request: sent, not answered yet
    assert limit._make_room() and idle_long.scope.cancel_called and not idle_short.scope.cancel_called
    idle_short.heard = 6  # a new request on a kept-alive connection
    conn(7)
    assert len(limit) == 3 and not limit._make_room()  # all in a request: the new one is refused
    assert (limit.evicted, limit.refused) == (3, 1)


async def test_the_limit_passes_writes_through_and_skips_empty_ones():
    from web._connlimit import ConnectionLimit, _Watched

    class Stream:
        socket = None

        def __init__(self):
            self.sent = []

        async def send_all(self, data):
            self.sent.append(bytes(data))

    stream = Stream()
    conn = _Watched(stream, ConnectionLimit(3))  # type: ignore[arg-type]
    await conn.send_all(b"HTTP/1.1 202 Accepted\r\n\r\n")
    first = conn.answered
    await conn.send_all(b"")  # the end of a response with a Content-Length: nothing to write
    assert stream.sent == [b"HTTP/1.1 202 Accepted\r\n\r\n"] and conn.answered >= first > float("-inf")
