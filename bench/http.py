"""HTTP throughput: Herald against a bare ASGI app on the same hypercorn-trio server.

Starts ``herald serve`` (fitness plugin, log level WARNING) and
``bench/bare_asgi.py`` on free loopback ports, pinned to CPU 0, and loads
them with wrk pinned to CPU 1 (``bench/post_event.lua`` rotates through
bodies written here: distinct users, increasing timestamps within the last
minute). Measured, after a short warm-up of each:

- ``POST /v1/event``, one event per request: Herald's requests/s against the
  bare app's (target: at least 0.95x);
- ``POST /v1/events`` with JSON arrays of ``--batch`` events: events/s
  (target: at least 50k), with the bare app reading the same bodies for scale.

Every answer must be a 202; anything else is counted and reported. Herald's
notifications (none are due with these timestamps) would go to the bare app.

While batches are measured the servers may use every core (``--batch-cpus
all``, the default; ``0`` keeps them on CPU 0): the target machine has two
cores and a Herald on it uses both (its journal writer is a thread of its own,
whose SQLite work runs without the GIL), while wrk sending 100-odd batches a
second needs a few percent of CPU 1 (its CPU time is printed). Single events
stay pinned: there wrk needs most of a core, and sharing it would measure wrk.

    python -m bench.http [--duration 10] [--rounds 3] [--connections 32]
"""

import sys

if not __package__:  # run as a file, bench/ would shadow the engine package (see bench/__init__.py)
    sys.exit("run from the repository root: python -m bench.http")

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import orjson

from engine.testing import free_port
from ._common import generate_events, print_table, stop_process, verdict

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).with_name("post_event.lua")
DURABILITY_TARGET = 0.75  # issue 27
RATIO_TARGET = 0.95
BATCH_TARGET = 50_000
SERVER_CPU, WRK_CPU = 0, 1


def _pinned(cpu: int):
    """A ``preexec_fn`` pinning the child to ``cpu`` (None on a one-core machine)."""
    if (os.cpu_count() or 1) < 2:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


@contextlib.contextmanager
def _process(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """Run the server ``cmd`` (output to ``log``) for the duration of the block; always stop it."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=_pinned(SERVER_CPU))
    try:
        yield proc
    finally:
        stop_process(proc)


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers 2xx; fail with the server's log if it dies or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:  # refused, or an HTTP error such as /healthz's 503 while starting
            time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{url} not ready (exit code {proc.poll()}); log:\n{tail}")


def _post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:300]


def _check(url: str, body: bytes, events: int) -> None:
    """One request by hand before the load: the answer must be a 202 accepting every event
    (a batch answer says how many it accepted; the others accept all or nothing)."""
    status, payload = _post(url, body)
    ok = isinstance(payload, dict) and not any(payload.get(k) for k in ("rejected", "duplicate", "duplicates"))
    if status != 202 or not ok or payload.get("accepted", events) != events:
        raise RuntimeError(f"POST {url} answered {status}: {payload!r}")


def _bodies(path: Path, *, events: int, per_body: int, users: int, seed: int) -> Path:
    """Write one body per line: events within the last minute, single or as JSON arrays.

    The events carry no id: the bodies are sent over and over, and Herald
    would answer a repeated id as a duplicate without applying it again.
    """
    items = generate_events(events, users, start=time.time() - 60, user_gap=users * 0.001, seed=seed, ids=False)
    if per_body == 1:
        lines = [orjson.dumps(e) for e in items]
    else:
        lines = [orjson.dumps(items[i : i + per_body]) for i in range(0, len(items), per_body)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _ms(text: str, label: str) -> float:
    value, unit = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s|m)\b", text, re.M).groups()
    return float(value) * _UNITS[unit]


def _wrk(url: str, bodies: Path, *, seconds: float, connections: int, threads: int) -> dict[str, Any]:
    """Run wrk with the rotation script; return requests/s, latencies, statuses and socket errors."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
           "-s", str(LUA), url, "--", str(bodies)]
    done = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_pinned(WRK_CPU))
    out = done.stdout
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{out}{done.stderr}")
    try:
        socket_errors = re.search(r"Socket errors: (.*)", out)
        return {
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": _ms(out, "50%"),
            "p99": _ms(out, "99%"),
            "statuses": {int(c): int(n) for c, n in re.findall(r"^STATUS (\d+) (\d+)$", out, re.M)},
            "duplicates": int(re.search(r"^DUPLICATES (\d+)$", out, re.M).group(1)),
            "socket_errors": socket_errors.group(1) if socket_errors else "none",
            "output": out,
        }
    except AttributeError:
        raise RuntimeError(f"cannot read wrk's output:\n{out}") from None


def set_cpus(proc: subprocess.Popen, cpus: set[int]) -> None:
    """Let every thread of ``proc`` run on ``cpus`` (threads made later inherit it from theirs)."""
    if (os.cpu_count() or 1) < 2:
        return
    for task in os.listdir(f"/proc/{proc.pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task), cpus)


def cpu_seconds(proc: subprocess.Popen) -> float:
    """CPU time (user and system) the process has used so far."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_servers(stack: contextlib.ExitStack, tmp: Path, durabilities: list[str],
                   procs: dict[str, subprocess.Popen] | None = None) -> dict[str, str]:
    """Start the bare app and one Herald per journal mode (stopped when ``stack``
    closes); return their base URLs by name ("bare ASGI", "herald memory", ...)
    and fill ``procs`` with their processes by the same names."""
    names = ["bare ASGI", *(f"herald {d}" for d in durabilities)]
    urls = {name: f"http://127.0.0.1:{free_port()}" for name in names}
    herald_exe = shutil.which("herald")
    herald_cmd = [herald_exe] if herald_exe else [sys.executable, "-m", "server"]
    for name, url in urls.items():
        port = url.rsplit(":", 1)[1]
        if name == "bare ASGI":
            cmd, ready, env = [sys.executable, "-m", "bench.bare_asgi", "--port", port], "/", None
        else:
            durability = name.split()[1]
            env = {
                **os.environ,
                "HERALD_LOG_LEVEL": "WARNING",
                "HERALD_PLUGINS": "fitness",
                "HERALD_NOTIFY_URL": f"{urls['bare ASGI']}/v1/notify",
                "HERALD_DATA_DIR": str(tmp / f"data-{durability}"),
                "HERALD_DURABILITY": durability,
            }
            cmd, ready = [*herald_cmd, "serve", "--port", port], "/healthz"
        log = tmp / f"{name.replace(' ', '-')}.log"
        proc = stack.enter_context(_process(cmd, log, env))
        _wait_ready(url + ready, proc, log)
        if procs is not None:
            procs[name] = proc
    return urls


def _children_cpu() -> float:
    """CPU time (user and system) of this process's finished children (the wrk runs)."""
    usage = os.times()
    return usage.children_user + usage.children_system


def _report(loads: list[tuple[int, str, str, int, dict[str, Any]]], batch: int) -> bool:
    """Print every load and the verdicts (on the median of the rounds); return whether
    every answer was a 202 accepting its events as new."""
    rows, medians, cpu = [], {}, {}
    for round_, server, route, per_body, r in loads:
        answered = sum(r["statuses"].values())
        request = f"POST {route}" + (f" x{per_body}" if per_body > 1 else "")
        rows.append((server, request, round_, f"{r['rps']:,.0f}", f"{r['rps'] * per_body:,.0f}", f"{r['p50']:.2f}",
                     f"{r['p99']:.2f}", f"{r['cpu_us']:,.0f}", f"{r.get('wrk_cpu', 0):.0%}", f"{answered:,}",
                     f"{answered - r['statuses'].get(202, 0):,}", f"{r['duplicates']:,}", r["socket_errors"]))
        medians.setdefault((server, route), []).append(r["rps"])
        cpu.setdefault((server, route), []).append(r["cpu_us"])
    medians = {key: statistics.median(values) for key, values in medians.items()}
    cpu = {key: statistics.median(values) for key, values in cpu.items()}
    print()
    print_table(("server", "request", "round", "req/s", "events/s", "p50 ms", "p99 ms", "CPU us/req", "wrk CPU", "answers",
                 "non-202", "duplicates", "socket errors"), rows, left=2)
    print()
    # The server's CPU time per request (user + system): on a machine shared with other work it moves
    # less than requests/s, which also count the time the server waited for a core.
    for server in sorted({s for s, _ in cpu if s != "bare ASGI"}):
        print(f"{server}: CPU per single event {cpu[server, '/v1/event']:,.0f} us, bare ASGI "
              f"{cpu['bare ASGI', '/v1/event']:,.0f} us; bare / herald {cpu['bare ASGI', '/v1/event'] / cpu[server, '/v1/event']:.2f}")
    bare = medians["bare ASGI", "/v1/event"]
    heralds = sorted({server for server, _ in medians if server != "bare ASGI"})
    for server in heralds:
        ratio = medians[server, "/v1/event"] / bare
        events_per_s = medians[server, "/v1/events"] * batch
        print(f"{server}: single event {medians[server, '/v1/event']:,.0f} req/s, bare ASGI {bare:,.0f}; "
              f"ratio {ratio:.2f} (target >= {RATIO_TARGET}): {verdict(ratio, RATIO_TARGET)}; "
              f"batches of {batch}: {events_per_s:,.0f} events/s (target >= {BATCH_TARGET:,}): "
              f"{verdict(events_per_s, BATCH_TARGET)}")
    if {"herald memory", "herald batch"} <= set(heralds):
        for route, what in (("/v1/event", "single events"), ("/v1/events", f"batches of {batch}")):
            ratio = medians["herald batch", route] / medians["herald memory", route]
            print(f"durability batch / memory, {what}: {ratio:.2f} (target >= {DURABILITY_TARGET}): "
                  f"{verdict(ratio, DURABILITY_TARGET)}")
    return all(r["statuses"].keys() <= {202} and not r["duplicates"] for *_, r in loads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of load per measurement")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of unmeasured load before each")
    parser.add_argument("--rounds", type=int, default=3, help="times each measurement is taken, interleaved")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--batch", type=int, default=500, help="events per /v1/events request")
    parser.add_argument("--verbose", action="store_true", help="print wrk's own output too")
    parser.add_argument("--batch-cpus", choices=("all", "0"), default="all",
                        help="CPUs the servers may use while batches are measured (see above)")
    parser.add_argument("--durability", default="memory,batch",
                        help="comma-separated journal modes, one Herald each (memory: the engine and HTTP alone)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    load = dict(seconds=args.duration, connections=args.connections, threads=args.threads)

    with tempfile.TemporaryDirectory(prefix="herald-bench-") as tmp, contextlib.ExitStack() as stack:
        tmp_path = Path(tmp)
        procs: dict[str, subprocess.Popen] = {}
        urls = _start_servers(stack, tmp_path, [d.strip() for d in args.durability.split(",") if d.strip()], procs)
        single = _bodies(tmp_path / "single.txt", events=2_000, per_body=1, users=500, seed=1)
        batch = _bodies(tmp_path / "batch.txt", events=20 * args.batch, per_body=args.batch, users=5_000, seed=2)
        plan = [(server, route, bodies, per_body) for route, bodies, per_body in
                [("/v1/event", single, 1), ("/v1/events", batch, args.batch)] for server in urls]
        for server, route, bodies, per_body in plan:
            _check(urls[server] + route, bodies.read_bytes().split(b"\n", 1)[0], per_body)
        batch_cpus = set(range(os.cpu_count() or 1)) if args.batch_cpus == "all" else {SERVER_CPU}
        print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s after {args.warmup:g} s of warm-up, "
              f"{args.rounds} rounds; servers on CPU {SERVER_CPU} (batches: CPUs "
              f"{','.join(map(str, sorted(batch_cpus)))}), wrk on CPU {WRK_CPU}", flush=True)
        loads = []
        for round_ in range(1, args.rounds + 1):
            for server, route, bodies, per_body in plan:
                url = urls[server] + route
                set_cpus(procs[server], batch_cpus if per_body > 1 else {SERVER_CPU})
                if args.warmup > 0:
                    _wrk(url, bodies, **{**load, "seconds": args.warmup})
                used, wrk_used = cpu_seconds(procs[server]), _children_cpu()
                result = _wrk(url, bodies, **load)
                result["cpu_us"] = (cpu_seconds(procs[server]) - used) / max(1, sum(result["statuses"].values())) * 1e6
                result["wrk_cpu"] = (_children_cpu() - wrk_used) / args.duration
                if args.verbose:
                    print(result["output"])
                loads.append((round_, server, route, per_body, result))
        health = {}
        for name, url in urls.items():
            if name != "bare ASGI":
                with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
                    health[name] = orjson.loads(response.read())
        logs = {name: (tmp_path / f"{name.replace(' ', '-')}.log").read_text(errors="replace").strip() for name in health}

    all_202 = _report(loads, args.batch)
    for name, h in health.items():
        print(f"{name} after the runs: {h['actors']:,} actors, {h['timers_pending']:,} timers pending, "
              f"{h['effects_pending']} effects pending, journal at seq {h['journal']['seq']:,}")
        unexpected = [line for line in logs[name].splitlines() if "no plugin handles" not in line and "counting such" not in line]
        if unexpected:
            print(f"{name}'s log (WARNING and above), last lines:")
            print("\n".join(unexpected[-10:]))
    if not all_202:
        sys.exit("FAILED: some answers were not 202, or reported duplicates (see above)")


if __name__ == "__main__":
    main()
