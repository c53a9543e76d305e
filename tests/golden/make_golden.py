"""Make a golden data dir with an installed (old) Herald: ``python make_golden.py HERALD OUT COMMIT [PLUGINS]``.

``HERALD`` is the ``herald`` command of a throwaway venv where the old commit is installed
(``git worktree add /tmp/herald-old-<sha> <sha>``; ``python3 -m venv /tmp/venv-<sha>``;
``/tmp/venv-<sha>/bin/pip install -e /tmp/herald-old-<sha>``). Two runs, each into its own dir:

``clean``   every event, then SIGTERM: the old Herald writes its final snapshot and compacts.
``killed``  half the events, a snapshot (POST /v1/admin/snapshot), the other half, then SIGKILL:
            a snapshot plus an unsnapshotted tail in the journal (and its WAL).

Before stopping, each run records what the old Herald answered in ``answers.json`` beside
``data/``: GET /v1/actors/{key} for every actor and the outbox listing (a congratulation is
undelivered: the notify URL is a closed port). Only the standard library is used, so any
old venv runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

#: The plugins enabled (a commit that had no customers plugin yet takes ``fitness`` alone as a
#: fourth argument: its customers.create is then an unclaimed type).
PLUGINS = sys.argv[4] if len(sys.argv) > 4 else "fitness,customers"
KEYS = ["fit-1", "fit-2", "fit-3", "fit-4", "42", "stranger-1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def iso(instant: float) -> str:
    return datetime.fromtimestamp(instant, timezone.utc).isoformat()


def events(now: float) -> list[dict]:
    """A few fitness actors (pending nudges, one congratulated, one whose nudge a start cancelled),
    a customer and an event type no plugin claims."""
    return [
        {"id": "e1", "type": "training_program_started", "key": "fit-2", "timestamp": iso(now - 2400),
         "data": {"training_program_id": "7", "training_program_title": "Long run", "device_id": "d2"}},
        {"id": "e2", "type": "app_launch", "key": "fit-1", "timestamp": iso(now - 60), "data": {"device_id": "d1"}},
        {"id": "e3", "type": "customers.create", "key": "42", "timestamp": iso(now - 50),
         "data": {"attributes": {"city": "Oslo", "plan": "gold"}}},
        {"id": "e4", "type": "mystery_ping", "key": "stranger-1", "timestamp": iso(now - 40), "data": {"n": 1}},
        # ---- the killed run snapshots here ----
        {"id": "e5", "type": "training_program_finished", "key": "fit-2", "timestamp": iso(now - 120),
         "data": {"training_program_id": "7"}},
        {"id": "e6", "type": "app_launch", "key": "fit-2", "timestamp": iso(now - 30), "data": {"device_id": "d2"}},
        {"id": "e7", "type": "app_launch", "key": "fit-3", "timestamp": iso(now - 20), "data": {"device_id": "d3"}},
        {"id": "e8", "type": "app_launch", "key": "fit-4", "timestamp": iso(now - 15)},
        {"id": "e9", "type": "training_program_started", "key": "fit-4", "timestamp": iso(now - 10),
         "data": {"training_program_id": "9"}},
        {"id": "e10", "type": "mystery_ping", "key": "stranger-1", "timestamp": iso(now - 5), "data": {"n": 2}},
    ]


def call(url: str, method: str = "GET", body: dict | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def run(herald: str, out: Path, mode: str) -> None:
    data = out / mode / "data"
    if data.parent.exists():
        shutil.rmtree(data.parent)
    data.mkdir(parents=True)
    port, closed = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HERALD_")},
           "HERALD_PORT": str(port), "HERALD_HOST": "127.0.0.1", "HERALD_DATA_DIR": str(data),
           "HERALD_NOTIFY_URL": f"http://127.0.0.1:{closed}/hook", "HERALD_SNAPSHOT_INTERVAL": "3600",
           "HERALD_LOG_LEVEL": "INFO", "HERALD_PLUGINS": PLUGINS,
           "HERALD_OUTBOX_DELAYS": "3600"}  # a failed delivery is not tried again while the run lasts
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"golden-{mode}-{os.getpid()}.log"  # not committed
    log = open(log_path, "wb")
    proc = subprocess.Popen([herald, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                if call(url + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("the old Herald did not become ready")
        now = float(int(time.time()))
        posted = []
        for i, event in enumerate(events(now)):
            if mode == "killed" and i == 4:
                status, answer = call(url + "/v1/admin/snapshot", "POST", {})
                assert status == 200, (status, answer)
            status, answer = call(url + "/v1/event", "POST", event)
            if status == 400 and answer["error"]["code"] == "reserved" and event["type"] == "customers.create":
                # Since 23's security pass customers.create is internal: it enters through the customers
                # route (no token configured here), which needs an email.
                attributes = {"email": f"c{event['key']}@example.test", **event["data"]["attributes"]}
                status, answer = call(url + "/customers", "POST", {"id": int(event["key"]), "attributes": attributes})
                assert status == 201, (event, status, answer)
            else:
                assert status == 202, (event, status, answer)
            posted.append(event)
        time.sleep(1.0)  # the congratulation's first delivery attempt fails (a closed port)
        answers = {
            "mode": mode,
            "recorded_at": time.time(),
            "events": posted,
            "actors": {key: call(f"{url}/v1/actors/{key}")[1] for key in KEYS},
            "outbox": call(url + "/v1/outbox")[1],
        }
    finally:
        if mode == "killed":
            proc.send_signal(signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    if mode == "clean" and code != 0:
        raise SystemExit(f"the old Herald exited with {code}; see {log_path}")
    answers["exit"] = code
    for junk in ("herald.lock", "herald.db-shm"):
        (data / junk).unlink(missing_ok=True)
    (data.parent / "answers.json").write_text(json.dumps(answers, indent=1, sort_keys=True) + "\n")


def main() -> None:
    herald, out, commit = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    out.mkdir(parents=True, exist_ok=True)
    for mode in ("clean", "killed"):
        run(herald, out, mode)
    (out / "made_by.json").write_text(json.dumps({"commit": commit, "script": "tests/golden/make_golden.py", "plugins": PLUGINS}) + "\n")


if __name__ == "__main__":
    main()
