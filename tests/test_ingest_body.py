"""How the ingestion routes read a request body (web._ingest._read_body): taken at once when the
server already holds it, waited for (within the body timeout) otherwise."""

import pytest
import trio

from web._ingest import _Disconnected, _read_body, _TimedOut, _TooLarge


def _scope(length: int | None) -> dict:
    headers = [(b"host", b"x")] + ([(b"content-length", str(length).encode())] if length is not None else [])
    return {"type": "http", "headers": headers}


def _channel(*messages: dict, size: int = 10):
    send, receive = trio.open_memory_channel(size)
    for message in messages:
        send.send_nowait(message)
    return send, receive


def _body(data: bytes, more: bool) -> dict:
    return {"type": "http.request", "body": data, "more_body": more}


async def test_a_body_as_long_as_its_content_length_needs_no_last_message():
    send, receive = _channel(_body(b'{"a":1}', True))
    assert await _read_body(_scope(7), receive.receive, 100, 1.0, whole_at_length=True) == b'{"a":1}'
    # Without whole_at_length the last (empty) message is awaited and consumed.
    send.send_nowait(_body(b'{"a":1}', True))
    send.send_nowait(_body(b"", False))
    assert await _read_body(_scope(7), receive.receive, 100, 1.0) == b'{"a":1}'
    with pytest.raises(trio.WouldBlock):
        receive.receive_nowait()


async def test_a_body_in_pieces_is_joined(autojump_clock):
    send, receive = _channel(_body(b"ab", True))

    async def rest():
        await trio.sleep(0.5)
        await send.send(_body(b"cd", True))
        await send.send(_body(b"", False))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(rest)
        assert await _read_body(_scope(None), receive.receive, 100, 1.0, whole_at_length=True) == b"abcd"


async def test_a_body_not_there_yet_is_waited_for(autojump_clock):
    send, receive = _channel()

    async def later():
        await trio.sleep(0.5)
        await send.send(_body(b"xyz", False))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        assert await _read_body(_scope(3), receive.receive, 100, 1.0) == b"xyz"


async def test_any_receive_callable_works():
    messages = [_body(b"", False), _body(b"hi", True)]

    async def receive() -> dict:
        return messages.pop()

    assert await _read_body(_scope(2), receive, 100, 1.0) == b"hi"


async def test_limits_and_stalls(autojump_clock):
    _, receive = _channel(_body(b"x" * 11, False))
    with pytest.raises(_TooLarge):
        await _read_body(_scope(None), receive.receive, 10, 1.0)
    with pytest.raises(_TooLarge):  # declared too large: refused before reading
        await _read_body(_scope(11), _channel()[1].receive, 10, 1.0)
    _, receive = _channel(_body(b"x" * 5, True))
    with pytest.raises(_TimedOut):  # half a body, then nothing
        await _read_body(_scope(10), receive.receive, 100, 1.0, whole_at_length=True)
    _, receive = _channel({"type": "http.disconnect"})
    with pytest.raises(_Disconnected):
        await _read_body(_scope(10), receive.receive, 100, 1.0)
