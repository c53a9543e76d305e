"""Record what an old Herald cluster node writes to Kafka: ``python make_changelog_golden.py OLD OUT COMMIT``.

``OLD`` is a copy of the old commit's tree (``git archive <sha> | tar -x -C OLD``, or a worktree);
the node runs from it (``PYTHONPATH=OLD python -m server serve``), while this script runs with
today's Herald only for its dev broker (Tansu) and confluent-kafka, to read the topics back.

One node, two partitions, checkpoints every 6 s: four events, a checkpoint of each partition, four
more, another checkpoint of each (the first ones tombstoned), two more, then SIGKILL at once:
the changelog holds checkpoints and the events topic an unsnapshotted tail after them.
``OUT/records.json`` holds every record of both topics (offset, timestamp, key, value and headers,
base64), ``OUT/answers.json`` what the node answered just before it was killed (every actor, its
outbox, /healthz), ``OUT/made_by.json`` the commit.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import tempfile
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from make_golden import KEYS, call, events, free_port  # noqa: E402

PARTITIONS = 2


def b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode()


def dump(bootstrap: str, topic: str) -> dict[str, list[dict]]:
    """Every record of each partition of ``topic``, in offset order."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "golden", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    out = {}
    try:
        for p in range(PARTITIONS):
            consumer.assign([TopicPartition(topic, p, 0)])
            records = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None:
                    continue
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        break
                    raise RuntimeError(message.error())
                records.append({"offset": message.offset(), "timestamp": message.timestamp()[1],
                                "key": b64(message.key()), "value": b64(message.value()),
                                "headers": [[k, b64(v)] for k, v in (message.headers() or ())]})
            out[str(p)] = records
            consumer.unassign()
    finally:
        consumer.close()
    return out


def main() -> None:
    old, out, commit = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    from engine._kafka import dev_broker

    out.mkdir(parents=True, exist_ok=True)
    with dev_broker() as bootstrap:
        port, closed = free_port(), free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("HERALD_")},
               "PYTHONPATH": str(old), "HERALD_PORT": str(port), "HERALD_HOST": "127.0.0.1",
               "HERALD_CLUSTER": bootstrap, "HERALD_CLUSTER_PARTITIONS": str(PARTITIONS),
               "HERALD_CLUSTER_CHECKPOINT": "6", "HERALD_NODE_ID": "old", "HERALD_LOG_LEVEL": "INFO",
               "HERALD_NOTIFY_URL": f"http://127.0.0.1:{closed}/hook", "HERALD_PLUGINS": "fitness,customers",
               "HERALD_OUTBOX_DELAYS": "3600", "HERALD_DATA_DIR": tempfile.mkdtemp(prefix="golden-changelog-")}  # a cluster node keeps nothing there
        log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"golden-changelog-{os.getpid()}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "server", "serve"], env=env, cwd=old, stdout=log,
                                    stderr=subprocess.STDOUT)
        try:
            def health() -> dict:
                try:
                    return call(url + "/healthz")[1] or {}
                except OSError:
                    return {}

            def until(what: str, condition, limit: float = 60) -> None:
                deadline = time.monotonic() + limit
                while not condition():
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit(f"timed out waiting for {what}; see {log_path}")
                    time.sleep(0.1)

            until("the node", lambda: health().get("cluster", {}).get("ready") == list(range(PARTITIONS)))
            now = float(int(time.time()))
            script, posted = events(now), []
            # The first two parts touch both partitions: each is checkpointed after each part.
            for n, part in enumerate((script[:4], script[4:8], script[8:]), 1):
                for event in part:
                    if event["type"] == "customers.create":  # an internal type: through the plugin's route
                        attributes = {**event["data"]["attributes"], "email": "c42@example.com"}
                        status, answer = call(url + "/customers", "POST", {"id": int(event["key"]), "attributes": attributes})
                        assert status == 201, (event, status, answer)
                    else:
                        status, answer = call(url + "/v1/event", "POST", event)
                        assert status == 202, (event, status, answer)
                    posted.append(event)
                until("the events applied", lambda: not any(health()["cluster"]["lag"].values()))
                if n < 3:
                    until("a checkpoint of each partition", lambda: health()["cluster"]["checkpoints"] >= 2 * n)
                    time.sleep(1.0)  # the congratulation's first delivery attempt fails (a closed port)
            # Recorded and killed at once: the last events are in no checkpoint (checked below).
            answers = {"recorded_at": time.time(), "events": posted, "partitions": PARTITIONS,
                       "actors": {key: call(f"{url}/v1/actors/{key}")[1] for key in KEYS},
                       "outbox": call(url + "/v1/outbox")[1], "health": health()}
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        records = {"events": dump(bootstrap, "herald.events"), "changelog": dump(bootstrap, "herald.changelog")}
    tail = False
    for p, changelog in records["changelog"].items():
        markers = [json.loads(base64.b64decode(r["value"])) for r in changelog
                   if ["herald", b64(b"end")] in r["headers"]]
        covered = max((m["offset"] for m in markers), default=0)
        tail |= any(r["value"] for r in records["events"][p] if r["offset"] >= covered)
    if not tail:
        raise SystemExit("every event was checkpointed before the kill: run it again")
    (out / "records.json").write_text(json.dumps(records, indent=1) + "\n")
    (out / "answers.json").write_text(json.dumps(answers, indent=1, sort_keys=True) + "\n")
    (out / "made_by.json").write_text(json.dumps({"commit": commit, "script": "tests/golden/make_changelog_golden.py",
                                                  "plugins": "fitness,customers"}) + "\n")


if __name__ == "__main__":
    main()
