"""A real PostgreSQL for tests: Debian's server binaries, a cluster in a temporary directory.

``initdb`` into a fresh directory, then ``postgres`` on a free port of
127.0.0.1 (its unix socket in that directory too), with a password (so that
tests can check it never shows). PostgreSQL refuses to run as root, and CI
is root: there the server runs as ``nobody``, owner of the directory. It is
stopped and the directory removed afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from engine.testing import free_port

__all__ = ["PostgresServer", "postgres_server", "server_binaries", "Unavailable"]

USER = "herald"


class Unavailable(Exception):
    """No PostgreSQL can be started here (the message says why: a test skips with it)."""


def server_binaries() -> Path | None:
    """The newest Debian PostgreSQL's bin directory (``/usr/lib/postgresql/<version>/bin``), if installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """A running server: ``url(database)`` gives the URL of one of its databases (with the password)."""

    def __init__(self, port: int, password: str) -> None:
        self.port, self.password = port, password

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"


@contextlib.contextmanager
def postgres_server(timeout: float = 60.0) -> Iterator[PostgresServer]:
    """Start a PostgreSQL server for the duration of the block (raises :class:`Unavailable` if it cannot)."""
    import psycopg

    bindir = server_binaries()
    if bindir is None:
        raise Unavailable("PostgreSQL's server is not installed (Debian: apt-get install postgresql; "
                          "binaries under /usr/lib/postgresql/*/bin)")
    run_as: str | None = None
    if os.geteuid() == 0:  # postgres refuses root: run it as an unprivileged user
        try:
            account = pwd.getpwnam("nobody")
        except KeyError:
            raise Unavailable("running as root and there is no user 'nobody' to run PostgreSQL as") from None
        run_as = "nobody"
    root = Path(tempfile.mkdtemp(prefix="herald-pg-"))
    process = None
    try:
        password = secrets.token_hex(12)
        (root / "pwfile").write_text(password + "\n")
        (root / "sock").mkdir()
        if run_as is not None:
            for path in (root, root / "pwfile", root / "sock"):
                os.chown(path, account.pw_uid, account.pw_gid)
        try:
            subprocess.run([str(bindir / "initdb"), "-D", str(root / "data"), "-U", USER, "--pwfile", str(root / "pwfile"),
                            "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"],
                           user=run_as, cwd=root, check=True, capture_output=True, timeout=timeout)
        except PermissionError as exc:
            raise Unavailable(f"cannot run PostgreSQL as {run_as}: {exc}") from None
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed: {exc.stderr.decode(errors='replace')[-2000:]}") from None
        port = free_port()
        log = open(root / "server.log", "wb")
        process = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(root / "data"), "-p", str(port), "-h", "127.0.0.1",
             "-k", str(root / "sock"), "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=100"],
            user=run_as, cwd=root, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        server = PostgresServer(port, password)
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(server.url(), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = (root / "server.log").read_bytes()[-2000:].decode(errors="replace")
                    raise RuntimeError(f"PostgreSQL did not start: {tail}") from None
                time.sleep(0.05)  # polling a starting server: each try ends at once when it is up
        yield server
    finally:
        if process is not None:
            process.send_signal(signal.SIGINT)  # "fast" shutdown
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(root, ignore_errors=True)


def serve_or_skip() -> Iterator[PostgresServer]:
    """A server for a fixture to yield from: skips the test, saying why, where one cannot start."""
    import pytest

    try:
        with postgres_server() as server:
            yield server
    except Unavailable as exc:
        pytest.skip(str(exc))
