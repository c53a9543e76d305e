"""Run ``deploy/nginx.conf`` as written, its settings filled in, in a throwaway nginx (tests, benches).

:func:`render` does what the file's header tells an operator to do with ``envsubst``: replace
exactly the ``${HERALD_...}`` settings and nothing else. :func:`nginx_front` wraps the rendered
file in a main configuration of its own (every path under one directory, no daemon, nothing
needing a privilege but when run as root, where the workers run as root too, since the
directory may be one that only root can enter) and runs Debian's ``nginx`` binary until the
block ends.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["TEMPLATE", "SETTINGS", "render", "nginx_front"]

#: The front's configuration, an http-context file for Debian's nginx.
TEMPLATE = Path(__file__).with_name("nginx.conf")
#: The settings its header documents, each written ``${NAME}`` in it.
SETTINGS = ("HERALD_LISTEN", "HERALD_UPSTREAM", "HERALD_CACHE_DIR", "HERALD_ACCESS_LOG")


def render(**settings: str) -> str:
    """The template with each of :data:`SETTINGS` replaced, ``${NAME}`` or ``$NAME`` (all are
    required), nginx's own variables left alone: what ``envsubst '$HERALD_LISTEN ...'`` does."""
    missing = set(SETTINGS) - set(settings)
    unknown = set(settings) - set(SETTINGS)
    if missing or unknown:
        raise ValueError(f"render needs exactly {', '.join(SETTINGS)} (missing {sorted(missing)}, unknown {sorted(unknown)})")
    names = "|".join(SETTINGS)
    return re.sub(rf"\$(?:\{{({names})\}}|({names})\b)", lambda m: settings[m[1] or m[2]], TEMPLATE.read_text())


def _main_config(work: Path, site: Path, workers: int) -> str:
    temps = " ".join(f"{kind}_temp_path {work}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return (f"daemon off;\n{user}worker_processes {workers};\npid {work}/nginx.pid;\nerror_log {work}/error.log warn;\n"
            f"events {{ worker_connections 4096; }}\n"
            f"http {{\n    {temps}\n    include {site};\n}}\n")


@contextmanager
def nginx_front(work: Path, upstream: str, *, port: int, access_log: str = "off", workers: int = 1,
                preexec_fn: Callable[[], None] | None = None, timeout: float = 15.0) -> Iterator[subprocess.Popen]:
    """nginx with ``deploy/nginx.conf`` on 127.0.0.1:``port`` in front of ``upstream`` (host:port),
    its cache, logs and temporary files under ``work``; stopped (and waited for) when the block ends."""
    nginx = shutil.which("nginx")
    if nginx is None:
        raise FileNotFoundError("nginx is not on PATH (Debian: apt-get install nginx)")
    work.mkdir(parents=True, exist_ok=True)
    site = work / "herald.conf"
    site.write_text(render(HERALD_LISTEN=f"127.0.0.1:{port}", HERALD_UPSTREAM=upstream,
                           HERALD_CACHE_DIR=str(work / "cache"), HERALD_ACCESS_LOG=access_log))
    (work / "nginx.conf").write_text(_main_config(work, site, workers))
    with (work / "nginx.out").open("wb") as out:
        proc = subprocess.Popen([nginx, "-p", str(work), "-c", str(work / "nginx.conf")], stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {proc.returncode}: {_logs(work)}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not listen on 127.0.0.1:{port} in {timeout:g} s: {_logs(work)}")
                time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _logs(work: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-2000:] for p in (work / "nginx.out", work / "error.log") if p.exists())
