"""A stand-in for the provider: serves recorded feed files in rotation (``herald mock-provider``).

``GET /api/events`` answers the next ``*.xml`` file of the directory (sorted by
name), going round: response_1, response_2, response_1, ... so that Herald's
poller sees the feed change as it would live. ``--once`` stops at the last
file and keeps serving it. Runs on 127.0.0.1; no internet needed for the demo
or the tests.
"""

from __future__ import annotations

import argparse
import sys
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

__all__ = ["MockProvider", "add_commands"]


class MockProvider:
    """Serve the feeds of ``directory`` in rotation at ``/api/events``."""

    def __init__(self, directory: str | Path, *, host: str = "127.0.0.1", port: int = 0, once: bool = False) -> None:
        self.files = sorted(Path(directory).glob("*.xml"))
        if not self.files:
            raise FileNotFoundError(f"no *.xml feeds in {directory}")
        self.once = once
        self.served = 0
        self.status = 200  # tests may set e.g. 503 to play a provider that is down
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] != "/api/events":
                    self.send_error(404)
                    return
                status, body = provider.next_answer()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/api/events"

    def next_answer(self) -> tuple[int, bytes]:
        with self._lock:
            if self.status != 200:
                return self.status, b"<error>unavailable</error>"
            index = min(self.served, len(self.files) - 1) if self.once else self.served % len(self.files)
            self.served += 1
            return 200, self.files[index].read_bytes()

    @contextmanager
    def running(self) -> Iterator["MockProvider"]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


def add_commands(commands: Any) -> None:
    parser = commands.add_parser("mock-provider", help="serve recorded provider feeds in rotation (marketplace)",
                                 description="A stand-in for the provider: serve the recorded feed files (*.xml) of a "
                                 "directory in rotation at http://HOST:PORT/api/events, on 127.0.0.1 by default.")
    parser.add_argument("--dir", required=True, help="a directory of *.xml feeds (e.g. ../shared/data/marketplace)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="the port to listen on (default 9000)")
    parser.add_argument("--once", action="store_true", help="stop rotating at the last file")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        provider = MockProvider(args.dir, host=args.host, port=args.port, once=args.once)
    except (FileNotFoundError, OSError) as exc:
        print(f"herald mock-provider: {exc}", file=sys.stderr)
        return 2
    names = ", ".join(f.name for f in provider.files)
    print(f"serving {names} in rotation at {provider.url} (Ctrl-C to stop)", flush=True)
    try:
        provider.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        provider.server.server_close()
    return 0
