"""The HTTP baseline: the least an ASGI app can do to accept an event.

A raw ASGI app that reads the whole request body and answers 202
``{"id":"x"}``, served like ``server.py`` serves Herald (``hypercorn.trio.serve``
in ``trio.run``, one process, one worker, no access log), so that the
difference to Herald is Herald's own work per request.

    python -m bench.bare_asgi --port 8001
"""

import sys

if not __package__:  # run as a file, bench/ would shadow the engine package (see bench/__init__.py)
    sys.exit("run from the repository root: python -m bench.bare_asgi")

import argparse
import logging

import hypercorn.config
import hypercorn.trio
import trio

from engine.testing import lifespan

_BODY = b'{"id":"x"}'
_START = {
    "type": "http.response.start",
    "status": 202,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())],
}
_RESPONSE = {"type": "http.response.body", "body": _BODY}


async def _read_body(receive) -> bool:
    """Read the request's body to its end; False if the client went away first."""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        more = message.get("more_body", False)
    return True


async def app(scope: dict, receive, send) -> None:
    """Answer every HTTP request with 202 once its body is in; accept the lifespan protocol."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if not await _read_body(receive):
        return
    await send(_START)
    await send(_RESPONSE)


def _rotate(path: str) -> None:
    """Answer 200 with the lines of ``path`` in turn (equal lines share one object, as a store would)."""
    global app
    shared: dict[bytes, tuple[dict, dict]] = {}
    for line in open(path, "rb").read().splitlines():
        if line and line not in shared:
            shared[line] = ({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(line)).encode())]},
                {"type": "http.response.body", "body": line})
    answers = [shared[line] for line in open(path, "rb").read().splitlines() if line]
    served = [0]

    async def rotating(scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if not await _read_body(receive):
            return
        start, body = answers[served[0] % len(answers)]
        served[0] += 1
        await send(start)
        await send(body)

    app = rotating


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--body-bytes", type=int, default=0,
                        help="answer a JSON body of about this size (to compare with a read endpoint's answers)")
    parser.add_argument("--bodies", help="answer the lines of this file in rotation (the same bytes as a read "
                                          "endpoint's answers to a rotation of requests)")
    args = parser.parse_args(argv)
    if args.bodies:
        _rotate(args.bodies)
    elif args.body_bytes > len(_BODY):
        global _START, _RESPONSE
        body = b'{"id":"x","pad":"' + b"x" * (args.body_bytes - 19) + b'"}'
        _START = {**_START, "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]}
        _RESPONSE = {"type": "http.response.body", "body": body}
    config = hypercorn.config.Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 5
    trio.run(hypercorn.trio.serve, app, config)


if __name__ == "__main__":
    main()
