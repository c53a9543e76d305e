"""A Kafka as users run it: librdkafka settings from HERALD_KAFKA_CONFIG for every client Herald
makes (secrets redacted, guarantees kept), topic replication settings, and TLS for real: stunnel
in front of the dev broker, a node joining with a CA file and a wrong CA refused in one line."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import pytest
import trio

from engine import Config, ConfigError, redact_text
from engine._kafka import DevBroker, ensure_topics, kafka_settings
from engine.testing import free_port, herald_command, herald_process

SECRET = "hunter2-sasl"


def _properties(tmp_path, text: str) -> str:
    path = tmp_path / "client.properties"
    path.write_text(text)
    return str(path)


def test_the_file_is_merged_under_heralds_settings_by_role_and_its_secrets_are_redacted(tmp_path):
    path = _properties(tmp_path, "# managed Kafka\n! also a comment\n\nsecurity.protocol = SASL_SSL\n"
                                 f"sasl.password={SECRET}\nlinger.ms=50\nproducer.compression.type: zstd\n"
                                 "consumer.fetch.min.bytes=1000\n")
    config = Config.from_env({"HERALD_KAFKA_CONFIG": path})
    producer = kafka_settings(config, "producer", {"bootstrap.servers": "b:1", "acks": "all", "linger.ms": 2})
    assert producer == {"security.protocol": "SASL_SSL", "sasl.password": SECRET, "linger.ms": 2,
                        "compression.type": "zstd", "bootstrap.servers": "b:1", "acks": "all"}
    assert kafka_settings(config, "consumer", {})["fetch.min.bytes"] == "1000"
    assert "compression.type" not in kafka_settings(config, "admin", {})
    assert SECRET not in repr(config) and SECRET not in redact_text(f"failed with {SECRET} in it")


@pytest.mark.parametrize("line, reason", [
    ("enable.idempotence=false", "enable.idempotence=false is refused: producers must be idempotent"),
    ("producer.acks=1", "producer.acks=1 is refused: an event is acknowledged once every in-sync replica"),
    ("enable.auto.commit=true", "enable.auto.commit=true is refused"),
    ("group.id=mine", "group.id is refused: Herald sets it for each client it makes"),
    ("just words", "line 2: expected key=value"),
])
def test_a_setting_that_breaks_a_guarantee_is_refused_in_one_line(tmp_path, line, reason):
    path = _properties(tmp_path, f"sasl.password={SECRET}\n{line}\n")
    with pytest.raises(ConfigError) as refused:
        Config.from_env({"HERALD_KAFKA_CONFIG": path})
    message = str(refused.value)
    assert reason in message and "\n" not in message and SECRET not in message


def test_a_missing_file_is_refused_and_replication_settings_are_read(tmp_path):
    with pytest.raises(ConfigError, match="HERALD_KAFKA_CONFIG=.*cannot read"):
        Config.from_env({"HERALD_KAFKA_CONFIG": str(tmp_path / "nope.properties")})
    config = Config.from_env({"HERALD_KAFKA_REPLICATION": "3", "HERALD_KAFKA_MIN_INSYNC": "2"})
    assert (config.kafka_replication, config.kafka_min_insync) == (3, 2)
    with pytest.raises(ConfigError, match="HERALD_KAFKA_REPLICATION"):
        Config.from_env({"HERALD_KAFKA_REPLICATION": "0"})


@pytest.mark.kafka
def test_created_topics_ask_for_the_configured_replication(kafka_bootstrap):
    import confluent_kafka.admin as admin_mod

    config = Config.from_env({"HERALD_KAFKA_REPLICATION": "2", "HERALD_KAFKA_MIN_INSYNC": "2"})
    ensure_topics(kafka_bootstrap, ["replicated", ("compacted", 2, {"cleanup.policy": "compact"})], config=config)
    admin = admin_mod.AdminClient({"bootstrap.servers": kafka_bootstrap})
    topics = admin.list_topics(timeout=10).topics
    for name in ("replicated", "compacted"):
        assert [len(p.replicas) for p in topics[name].partitions.values()] == [2] * len(topics[name].partitions)
        (found,) = admin.describe_configs([admin_mod.ConfigResource(admin_mod.ResourceType.TOPIC, name)]).values()
        assert found.result(10)["min.insync.replicas"].value == "2"


# -- TLS for real ---------------------------------------------------------------------------------


@pytest.fixture
def tls_broker(tmp_path):
    """The dev broker behind stunnel: yields ``(bootstrap, ca, wrong_ca)``; the broker advertises
    the TLS port, so that every connection a client makes goes through TLS."""
    from .tls import make_ca, make_server_cert, stunnel

    ca, ca_cert, ca_key = make_ca(tmp_path, "ca")
    wrong, _, _ = make_ca(tmp_path, "wrong-ca")
    cert, key = make_server_cert(tmp_path, ca_cert, ca_key)
    plain, tls = free_port(), free_port()
    broker = DevBroker(plain, advertised=f"127.0.0.1:{tls}")
    broker.start()
    try:
        with stunnel(tmp_path, tls, plain, cert, key):
            yield f"127.0.0.1:{tls}", ca, wrong
    finally:
        broker.stop()


@pytest.mark.kafka
async def test_a_node_joins_the_cluster_through_tls_with_a_ca_file(tmp_path, tls_broker):
    bootstrap, ca, _ = tls_broker
    props = _properties(tmp_path, f"security.protocol=ssl\nssl.ca.location={ca}\nsasl.password={SECRET}\n")
    env = {"HERALD_CLUSTER": bootstrap, "HERALD_KAFKA_CONFIG": props, "HERALD_PLUGINS": "fitness",
           "HERALD_LOG_LEVEL": "INFO", "HERALD_KAFKA_MIN_INSYNC": "1"}
    async with herald_process(tmp_path, **env) as url, httpx.AsyncClient() as client:
        event = {"type": "app_launch", "user_id": "u1", "timestamp": "2024-01-01T00:00:00Z"}
        assert (await client.post(url + "/v1/event", json=event)).status_code == 202
        with trio.fail_after(15):  # applied once the node consumes it back from the events topic
            while (actor := await client.get(url + "/v1/actors/u1")).status_code != 200:
                await trio.sleep(0.05)
        assert actor.json()["states"]["fitness"]
        health = await client.get(url + "/healthz")
        assert health.status_code == 200 and SECRET not in health.text
    assert SECRET not in (tmp_path / "herald.log").read_text()


@pytest.mark.kafka
def test_a_wrong_ca_is_refused_in_one_line(tmp_path, tls_broker):
    bootstrap, _, wrong = tls_broker
    props = _properties(tmp_path, f"security.protocol=ssl\nssl.ca.location={wrong}\nsasl.password={SECRET}\n")
    env = {**os.environ, "HERALD_CLUSTER": bootstrap, "HERALD_KAFKA_CONFIG": props, "HERALD_PLUGINS": "fitness",
           "HERALD_PORT": str(free_port()), "HERALD_DATA_DIR": str(tmp_path / "data"), "HERALD_LOG_LEVEL": "WARNING"}
    started = time.monotonic()
    result = subprocess.run([*herald_command(), "serve"], env=env, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert time.monotonic() - started < 20
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines == [f"herald: cannot connect to Kafka at {bootstrap}: ssl://{bootstrap}/bootstrap: SSL handshake "
                     "failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be "
                     "verified, verify that ssl.ca.location is correctly configured or root CA certificates are "
                     "installed (install ca-certificates package)"], output
    assert SECRET not in output


@pytest.mark.kafka
def test_a_refused_connection_leaves_no_client_behind(tmp_path, tls_broker):
    """The refused client is destroyed before the error leaves ensure_topics: had its threads lived
    on to the exit (the error's tracebacks held it), OpenSSL's exit handler could free what their
    TLS handshake still used, and ``herald serve`` crashed (SIGSEGV) after printing its one line."""
    bootstrap, _, wrong = tls_broker
    config = Config.from_env({"HERALD_KAFKA_CONFIG": _properties(tmp_path, f"security.protocol=ssl\n"
                                                                           f"ssl.ca.location={wrong}\n")})
    threads = len(os.listdir("/proc/self/task"))
    with pytest.raises(ConfigError) as refused:
        ensure_topics(bootstrap, ["t"], 15, config)
    assert "certificate verify failed" in str(refused.value)
    assert len(os.listdir("/proc/self/task")) == threads  # while the error is still held
