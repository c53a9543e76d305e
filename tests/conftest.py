"""Shared fixtures: a Herald app driven through HTTP in-process, and helpers."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import httpx
import pytest
import trio

from engine import Config, Herald, PluginHost
from plugins.fitness import hooks as fitness
from server import create_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def app_client(plugins: list[Any] | None = None, **settings: Any) -> AsyncIterator[tuple[Herald, httpx.AsyncClient]]:
    """A running Herald with its ASGI app behind an httpx client (no sockets).

    In memory unless ``durability`` (and a ``data_dir``) are given."""
    settings.setdefault("durability", "memory")
    config = Config(**settings)
    host = PluginHost.from_objects(config, [fitness] if plugins is None else plugins)
    herald = Herald(config, host)
    app = create_app(herald)
    async with herald.running():
        await herald.wait_ready()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as client:
            yield herald, client


@pytest.fixture
async def client():
    async with app_client() as (_, client):
        yield client


@pytest.fixture
async def herald_and_client():
    async with app_client() as pair:
        yield pair


def herald_command() -> list[str]:
    script = shutil.which("herald")
    return [script] if script else [sys.executable, "-m", "server"]


@asynccontextmanager
async def herald_process(tmp_path, open_files: int | None = None, **env: str) -> AsyncIterator[str]:
    """Start `herald serve` on a free port; yield its URL; stop it with SIGTERM.

    ``open_files`` lowers the server's RLIMIT_NOFILE (to run it out of descriptors cheaply)."""
    port = free_port()
    full_env = {**os.environ, "HERALD_LOG_LEVEL": "WARNING", "HERALD_PORT": str(port),
                "HERALD_DATA_DIR": str(tmp_path / "data"), **env}
    log = open(tmp_path / "herald.log", "wb")
    limit = None if open_files is None else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files)))
    proc = subprocess.Popen([*herald_command(), "serve"], env=full_env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=limit)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            with trio.fail_after(20):
                while True:
                    assert proc.poll() is None, (tmp_path / "herald.log").read_text()
                    try:
                        if (await client.get(url + "/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            while proc.poll() is None:
                await trio.sleep(0.05)
        log.close()
    assert proc.returncode == 0, (tmp_path / "herald.log").read_text()

