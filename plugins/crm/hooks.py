"""The CRM plugin's Herald hooks: Kafka in (personal fields sealed), ordered delivery out, the mock CRM,
GDPR erasure. In a cluster (``--cluster``) the key store must be one the nodes share (PostgreSQL)."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable

import trio

from engine import Context, Config, EventType, Origin, PluginError, hookimpl

from .api import ERASE, subjects_blueprint
from .contracts import BOOKING_TOPIC, BOOKING_UPDATED, USER_TOPIC, USER_UPDATED, decode
from .delivery import CONCURRENCY, Delivery
from .keystore import KeyStore, is_shared, open_key_store
from .mock_crm import CrmStore, crm_blueprint
from .sealing import SealingContext
from .model import TRIPS_TOPIC, USERS_TOPIC, CrmCall, CrmState, Publish, on_booking, on_erase, on_user

#: The Herald plugin API this plugin is written for (a Herald offering another refuses it).
HERALD_API = "1"

PLUGIN = "crm"


def bootstrap_of(config: Config) -> str | None:
    return config.plugin_setting("kafka", "bootstrap", None)


def parts(context: Context) -> dict[str, Any]:
    """The key store, the mock CRM's data, the producer and the delivery of one Herald (made once)."""
    return context.part("crm", lambda: _make_parts(context))


def _make_parts(context: Context) -> dict[str, Any]:
    config = context.config
    if context.clustered and not is_shared(config.plugin_setting(PLUGIN, "keystore", None)):
        # keys.db lives in one process: in a cluster, each node would make its own keys for a user,
        # and an erasure would destroy only one of them.
        raise PluginError("the crm plugin in a cluster needs a key store its nodes share: "
                          "set HERALD_CRM_KEYSTORE to a postgresql:// URL")
    keys = open_key_store(config)
    context.health("crm_keys", keys.description)
    bootstrap = bootstrap_of(config)
    producer = None
    if bootstrap:
        from engine.kafka import KafkaProducer

        producer = KafkaProducer(bootstrap, settings=config, **{"client.id": "herald-crm"})
    crm_url = config.plugin_setting(PLUGIN, "url", None)
    headers = {}
    if crm_url is None:  # Herald's own mock CRM: it asks for the admin token like every route with personal data
        crm_url = config.self_url + "/mock-crm"
        if config.admin_token:
            headers["authorization"] = f"Bearer {config.admin_token}"
    return {"keys": keys, "store": CrmStore(), "producer": producer, "bootstrap": bootstrap,
            "delivery": Delivery(context, crm_url, keys, producer, headers=headers,
                                 concurrency=config.plugin_setting(PLUGIN, "concurrency", CONCURRENCY, int))}


@hookimpl
def herald_state_type() -> type:
    return CrmState


@hookimpl
def herald_event_types(config: Config) -> Iterable[EventType]:
    return [
        # Users and bookings come from the internal Kafka topics only; erasures from DELETE /v1/subjects/{id}.
        EventType(USER_UPDATED, on_user, origin=Origin.INTERNAL,
                  description=f"A user's full state, from {USER_TOPIC}."),
        EventType(BOOKING_UPDATED, on_booking, origin=Origin.INTERNAL,
                  description=f"A booking's full state, from {BOOKING_TOPIC}; key: its user."),
        EventType(ERASE, on_erase, origin=Origin.INTERNAL, description="GDPR erasure of a user."),
    ]


@hookimpl
async def herald_startup(context: Context) -> None:
    from .keystore import KeyStoreUnavailable

    try:
        await parts(context)["keys"].open()
    except KeyStoreUnavailable as exc:  # the message holds no password
        raise PluginError(f"the crm plugin cannot open its key store: {exc}") from None


@hookimpl
def herald_effect_sinks(context: Context) -> dict[type, Any]:
    delivery = parts(context)["delivery"]
    return {CrmCall: delivery, Publish: delivery}


@hookimpl
def herald_sources(context: Context) -> list:
    found = parts(context)
    sources = [_delivering(found["delivery"]), _holding(found["keys"], found["producer"], found["delivery"])]
    if found["bootstrap"]:
        from engine.kafka import KafkaSource

        group = context.config.plugin_setting(PLUGIN, "group", "herald-crm")
        session = int(context.config.plugin_setting(PLUGIN, "session_timeout_ms", 10_000, int))
        partitions = int(context.config.plugin_setting(PLUGIN, "partitions", 3, int))
        # The source accepts through a context that seals personal fields first (.sealing).
        source = KafkaSource(SealingContext(context, found["keys"]), found["bootstrap"], [USER_TOPIC, BOOKING_TOPIC],
                             group, decode, name="crm-kafka", config={"session.timeout.ms": session},
                             extra_topics=[(USERS_TOPIC, partitions, {"cleanup.policy": "compact"}),
                                           (TRIPS_TOPIC, partitions, {})])
        sources.append(source.run)
    return sources


def _delivering(delivery: Delivery) -> Callable[[], Awaitable[None]]:
    """The delivery's thread (its workers) as a source of every node: in a cluster each node delivers the
    effects of the partitions it owns (its sink's queues), so each must run its own workers. Cancelling it
    stops the thread and joins it."""

    async def deliver() -> None:
        await delivery.run()

    deliver.per_node = True  # type: ignore[attr-defined]
    return deliver


def _holding(keys: KeyStore, producer: Any | None, delivery: Delivery) -> Callable[[], Awaitable[None]]:
    """A source that closes the key store and the public producer when Herald stops: sources are
    cancelled only after the effect sinks were flushed (shutdown hooks run before, while public
    messages may still need keys). The delivery source does not close the producer itself: it is
    restarted after a crash, and must find its producer (and what it still queues) as it left it. Both
    are closed once the delivery's thread, which uses them, is gone."""

    async def hold() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await delivery.stopped()
                if producer is not None:
                    producer.close()
                await keys.aclose()

    hold.per_node = True  # type: ignore[attr-defined]  # every node holds its own connections
    return hold


@hookimpl
def herald_routes(context: Context) -> list:
    found = parts(context)
    blueprints = [subjects_blueprint(context, found["keys"])]
    if context.config.plugin_setting(PLUGIN, "mock", "on") != "off":
        blueprints.append(crm_blueprint(found["store"], token=context.config.admin_token))
    return blueprints


@hookimpl
def herald_cli(commands: Any) -> None:
    from .mock_crm import add_commands as mock_crm
    from .producer import add_commands as producer

    mock_crm(commands)
    producer(commands)


@hookimpl
def herald_serve_options(parser: Any) -> None:
    parser.add_argument("--kafka-bootstrap", dest="HERALD_KAFKA_BOOTSTRAP", metavar="SERVERS",
                        help="Kafka bootstrap servers [env HERALD_KAFKA_BOOTSTRAP]")
    parser.add_argument("--crm-url", dest="HERALD_CRM_URL", metavar="URL",
                        help="the CRM's base URL, default this server's /mock-crm [env HERALD_CRM_URL]")
