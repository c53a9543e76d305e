"""Herald's HTTP server: a QuartTrio app on hypercorn-trio, above the engine.

``create_app`` builds the ASGI app for a :class:`engine.host.Herald` (the ingestion
fast path in front of Quart, with the core routes and every plugin's
blueprints); ``serve`` runs it until SIGINT or SIGTERM; ``main`` is the
``herald`` command: the engine's commands plus ``serve``. What plugins' routes
share with it is in the :mod:`web` package beside this module.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import quote

import hypercorn.config
import hypercorn.trio
import orjson
import trio
from quart import Blueprint, Quart, Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from engine import Config, ConfigError, InvalidEvent, JournalError, PluginError, redact_text, redact_url
from engine.host import Herald
from engine import cli
from engine._engine import LOAD_TYPE
from engine._journal import DB_NAME
from engine._states import UnencodableState
from web import (ADMIN_SCHEME, ERROR_SCHEMA, GUESSES, BadParameter, Guesses, UnsupportedMediaType, admin_guard, admin_only,
                 build_document, error_body, error_response, explorer, int_param, json_body, json_response, operation,
                 read_json)
from web._console import console_blueprints
from web._headers import add_security_headers
from web import _connlimit as connlimit
from web import _scaffold as scaffold
from web._inbox import NotifyInbox
from web._keys import ACTOR_KEY, ActorKey
from web._ingest import BATCH_PATH, EVENT_PATH, LOAD_PREFIX, MAX_LISTED_REJECTIONS, IngestApp
from web._openapi import WRITES
from web._writes import check_writes, enforce_writes

__all__ = ["create_app", "ingestion_paths", "main", "serve"]

log = logging.getLogger("herald.server")

try:
    VERSION = version("herald")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    VERSION = "0.0.0"


def _event_schema(herald: Herald) -> dict[str, Any]:
    types = sorted({r.type.name for r in herald.plugins.routes.values()})
    return {
        "type": "object",
        "description": (
            "An event: the envelope {id?, type, key, timestamp, data?}, or a flat shape where the key is "
            "user_id or device_id, the timestamp may be time_stamp, and other fields (and a details "
            "object) become data. Types handled by plugins: " + (", ".join(types) or "none")
            + ". Any other type is accepted and counted on its actor."
        ),
        "required": ["type"],
        "properties": {
            "id": {"type": "string", "minLength": 1, "maxLength": 200, "description": "idempotency key; generated if absent"},
            "type": {"type": "string", "minLength": 1, "maxLength": 100, "examples": types},
            "key": {"type": "string", "minLength": 1, "maxLength": 200, "description": "the actor (usually the user)"},
            "user_id": {"type": "string"},
            "device_id": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time", "description": "ISO 8601; without an offset it is UTC"},
            "time_stamp": {"type": "string", "description": "YYYY-MM-DD HH:MM:SS (UTC)"},
            "data": {"type": "object"},
            "details": {"type": "object"},
        },
        "additionalProperties": True,
    }


def ingestion_paths(herald: Herald) -> dict[str, Any]:
    """OpenAPI operations of the fast-path routes (they are not Quart views)."""
    too_large = error_response("body too large")
    batch_result = {
        "type": "object",
        "required": ["accepted", "ids", "duplicates", "rejected", "rejected_count", "rejected_by_code",
                     "rejected_truncated"],
        "properties": {
            "accepted": {"type": "integer", "description": "events accepted (duplicates included)"},
            "ids": {"type": "array", "items": {"type": "string"}, "description": "their ids, in order"},
            "duplicates": {"type": "array", "items": {"type": "string"},
                           "description": "ids of accepted events that repeat one accepted before (not applied again)"},
            "rejected": {
                "type": "array",
                "maxItems": MAX_LISTED_REJECTIONS,
                "description": f"the first {MAX_LISTED_REJECTIONS} rejected lines (by line number), with why",
                "items": {
                    "type": "object",
                    "properties": {"line": {"type": "integer", "description": "1-based"},
                                   "error": ERROR_SCHEMA["properties"]["error"]},
                },
            },
            "rejected_count": {"type": "integer", "description": "every rejected line, listed or not"},
            "rejected_by_code": {"type": "object", "additionalProperties": {"type": "integer"},
                                 "description": "rejected lines by error code (all of them)"},
            "rejected_truncated": {"type": "boolean",
                                   "description": f"true when more than {MAX_LISTED_REJECTIONS} lines were "
                                   "rejected: `rejected` lists the first ones only"},
        },
    }
    # A 400 carries the batch's report when the batch was read (nothing in it valid), else the error alone.
    no_valid = {"allOf": [{"$ref": "#/components/schemas/Error"},
                          {"type": "object", "properties": batch_result["properties"]}]}
    return {
        EVENT_PATH: {
            "post": {
                "operationId": "post_event",
                "tags": ["events"],
                "summary": "Accept one event",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Event"}}}},
                "responses": {
                    "202": json_body({"type": "object", "properties": {"id": {"type": "string"}}}, "accepted"),
                    "400": error_response("malformed JSON, a missing or wrong-typed field, a bad timestamp"),
                    "413": too_large,
                    "503": error_response("still starting"),
                },
            }
        },
        BATCH_PATH: {
            "post": {
                "operationId": "post_events",
                "tags": ["events"],
                "summary": "Accept a batch of events",
                "description": "A JSON array, or NDJSON with Content-Type application/x-ndjson (one event a line). "
                "Valid events are accepted; invalid ones are reported with their (1-based) line numbers: the first "
                f"{MAX_LISTED_REJECTIONS} are listed, and all are counted by error code.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}},
                        "application/x-ndjson": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "202": json_body(batch_result, "at least one event accepted"),
                    "400": json_body(no_valid, "nothing valid in the batch (the error, and the batch's report); "
                                     "or a body that is not a JSON array (the error alone)"),
                    "413": too_large,
                    "503": error_response("still starting"),
                },
            }
        },
        LOAD_PREFIX + "{loader}": {
            "post": {
                "operationId": "post_load",
                "tags": ["events"],
                **({"security": [{ADMIN_SCHEME: []}]} if herald.config.admin_token else {}),
                WRITES: [LOAD_TYPE],
                "summary": "Bulk-load lines through a plugin's loader",
                "description": "The body is a chunk of a file in the loader's format (whole lines). It is applied "
                "and journaled as one event; the answer reports what each line did. `herald load` sends files "
                "this way, in 32 MiB chunks. Loaders: " + (", ".join(sorted(herald.plugins.loaders)) or "none") + ".",
                "parameters": [
                    {"name": "loader", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "first_line", "in": "query", "schema": {"type": "integer", "minimum": 1},
                     "description": "line number of the body's first line in its file (for error reports)"},
                    {"name": "source", "in": "query", "schema": {"type": "string"}, "description": "where the lines come from"},
                ],
                "requestBody": {"required": True, "description": "whole lines of the file (NDJSON for customers)",
                                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {
                    "200": json_body({"type": "object", "properties": {
                        "lines": {"type": "integer"},
                        "applied": {"type": "integer"},
                        "skipped": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "errors": {"type": "array", "items": {"type": "object"}},
                    }}, "the chunk is applied and durable"),
                    "400": error_response("a bad first_line"),
                    "404": error_response("no such loader"),
                    "413": too_large,
                    "503": error_response("still starting"),
                },
            }
        },
    }


def _plugin_paths(herald: Herald) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for _name, items in herald.plugins.each("herald_openapi_paths", context=herald.context):
        paths.update(items or {})
    return paths


def _core_routes(herald: Herald, inbox: NotifyInbox) -> Blueprint:
    bp = Blueprint("core", __name__)
    engine = herald.engine
    admin = admin_only(herald.config.admin_token)

    @bp.get("/")
    async def index() -> Response:
        return json_response({"name": "herald", "version": VERSION, "docs": "/docs", "openapi": "/openapi.json"})

    @bp.get(f"/v1/actors/<{ACTOR_KEY}:key>", merge_slashes=False)  # any key, "/" or a leading "/" too
    @operation(
        "One actor's state",
        tags=["actors"],
        description="Each plugin's state, the actor's own clock (what it reads now), the pending timers with "
        "their due instants (in the actor's event time) and, under `unknown`, the default handler's state: what it "
        "keeps of events of types no plugin claims (by default, their counts by type).",
        responses={
            200: json_body({"type": "object", "properties": {
                "key": {"type": "string"}, "clock": {"type": ["string", "null"], "format": "date-time"},
                "states": {"type": "object"},
                "timers": {"type": "array", "items": {"type": "object", "properties": {
                    "plugin": {"type": "string"}, "name": {"type": "string"},
                    "due": {"type": "string", "format": "date-time"}}}},
                "unknown": {"type": "object"},
                "state_errors": {"type": "object", "description": "only when a plugin's state cannot be encoded: "
                                 "by plugin, an error naming the field (that state is left out of states)"}}}),
            404: error_response("no actor has this key"),
        },
    )
    @admin
    async def actor(key: str) -> Response:
        cluster = herald.cluster
        if cluster is not None and not cluster.owns(key):
            # Another node owns this key's partition: its answer is exact. Without it (a rebalance,
            # a node down) this node's replica answers, saying how far behind it is.
            forwarded = await _forward_to_owner(herald, key)
            if forwarded is not None:
                return forwarded
        holder = herald.engine_for(key)
        if holder is None:
            response = json_response(error_body(
                "not_served", "no node serves this actor's partition right now (a rebalance or a restore is "
                "under way); try again shortly", "key"), 503)
            response.headers["Retry-After"] = "1"
            return response
        view = holder.actor_view(key)
        for plugin, error in (view or {}).get("state_errors", {}).items():  # the other states are served
            herald.state_unencodable(UnencodableState(plugin, error["field"], key, error["message"]))
        if view is None:
            response = json_response(error_body("not_found", f"no actor with key {key!r}", "key"), 404)
        else:
            response = json_response(view)
        if cluster is not None:
            response.headers[SERVED_BY] = cluster.node
            if not cluster.owns(key):
                response.headers[REPLICA_LAG] = str(cluster.replica_lag_of(key))
        return response

    @bp.post("/v1/notify")
    @operation(
        "Receive a notification (Herald's own sink)",
        tags=["notify"],
        description="The default target of notifications. Repeats of an Idempotency-Key are acknowledged and dropped.",
        request={"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
        parameters=[{"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}}],
        responses={
            202: json_body({"type": "object", "properties": {"duplicate": {"type": "boolean"}}}),
            400: error_response("not a JSON object"),
        },
    )
    @admin
    async def notify_in() -> Response:
        payload = await read_json()
        if not isinstance(payload, dict):
            return json_response(error_body("invalid_type", "a notification is a JSON object"), 400)
        key = request.headers.get("Idempotency-Key") or payload.get("idempotency_key")
        stored = inbox.add(payload, key if isinstance(key, str) else None)
        return json_response({"duplicate": not stored}, 202)

    @bp.get("/v1/notify")
    @operation(
        "The latest notifications received by the sink",
        tags=["notify"],
        parameters=[{"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}}],
        responses={200: json_body({"type": "object", "properties": {
            "received": {"type": "integer"}, "duplicates": {"type": "integer"},
            "notifications": {"type": "array"}}}), 400: error_response("bad limit")},
    )
    @admin
    async def notify_out() -> Response:
        limit = int_param("limit", None)
        sink = inbox
        return json_response(
            {"received": sink.received, "duplicates": sink.duplicates, "notifications": sink.latest(limit)}
        )

    @bp.get("/healthz")
    @operation(
        "Liveness and readiness",
        tags=["ops"],
        responses={200: json_body({"type": "object"}, "ready"), 503: json_body({"type": "object"}, "not ready")},
    )
    async def healthz() -> Response:
        now, watermark = engine.now(), engine.watermark()
        journal = herald.journal
        refusal = herald.refusal()  # the same answer ingestion gives: 503 exactly when it refuses
        degraded = herald.degraded()  # wrong, but events are still accepted: 200, "degraded"
        body = {
            "status": refusal.code if refusal is not None else "degraded" if degraded else "ready",
            "ready": refusal is None,
            "refusal": refusal.to_json() if refusal is not None else None,
            "degraded": [d.to_json() for d in degraded],
            "plugins": herald.plugins.names,
            "actors": sum(len(e.actors) for e in herald.engines()),
            "timers_pending": sum(len(e.timers) for e in herald.engines()),
            "effects_pending": herald.outbox.pending,
            "clock": now.isoformat() if now else None,  # the stream's time: the newest timestamp, running on
            "watermark": watermark.isoformat() if watermark else None,
            "allowed_lateness": engine.stream.lateness,
            "late_events": engine.late_events,
            "journal": {
                "durability": journal.durability.value,
                "seq": herald.seq,
                "snapshot_seq": herald.snapshot_seq,
                "recovery": journal.recovery.to_json() if journal.recovery else None,
                "failed": str(journal.failed) if journal.failed else None,
                **herald.progress,
            },
            "sources": herald.health,
        }
        if herald.cluster is not None:
            body["cluster"] = herald.cluster.health()
        # Sources report URLs and errors that may quote them: no credentials leave the process.
        encoded = redact_text(orjson.dumps(body).decode())
        return Response(encoded, status=200 if refusal is None else 503, content_type="application/json")

    @bp.get("/metrics")
    @operation("Prometheus metrics", tags=["ops"], responses={200: {"description": "text exposition format"}})
    async def metrics() -> Response:
        return Response(herald.metrics.render(), content_type=CONTENT_TYPE_LATEST)

    return bp


def _admin_routes(herald: Herald) -> Blueprint:
    """Outbox dead letters, forced snapshots and journal figures."""
    bp = Blueprint("admin", __name__)
    bp.before_request(admin_guard(herald.config.admin_token))

    @bp.get("/v1/outbox")
    @operation(
        "Effects in the outbox",
        tags=["admin"],
        description="Dead letters with ?status=dead; also pending or delivered (kept for the outbox's max age).",
        parameters=[
            {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["pending", "delivered", "dead"]}},
            {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
        ],
        responses={200: json_body({"type": "object"}), 400: error_response("bad parameter")},
    )
    async def outbox() -> Response:
        status = request.args.get("status")
        if status not in (None, "pending", "delivered", "dead"):
            return json_response(error_body("invalid_value", "must be pending, delivered or dead", "status"), 400)
        numbers = {"after": int_param("after", 0), "limit": int_param("limit", 100, low=1, high=1000)}
        if not herald.journal.enabled:
            items = [d for d in herald.outbox.dead if d["id"] > numbers["after"]] if status in (None, "dead") else []
            return json_response({"effects": items[: numbers["limit"]]})
        rows = await herald.journal.query(
            lambda j: j.outbox_rows(status, after_id=numbers["after"], limit=numbers["limit"])
        )
        return json_response({"effects": [row.to_json() for row in rows]})

    @bp.post("/v1/outbox/replay")
    @operation(
        "Send dead letters again",
        tags=["admin"],
        description='Body {"ids": [...]} replays those dead letters; an empty body (or {}) replays all of them.',
        request={"required": False, "content": {"application/json": {"schema": {
            "type": "object", "properties": {"ids": {"type": ["array", "null"], "items": {"type": "integer"},
                                                   "description": "absent or null: every dead letter"}}}}}},
        responses={200: json_body({"type": "object", "properties": {"replayed": {"type": "integer"}}}),
                   400: error_response("bad body")},
    )
    async def replay() -> Response:
        ids = None
        if (await request.get_data()).strip():
            doc = await read_json()
            if not isinstance(doc, dict):
                return json_response(error_body("invalid_type", 'the body is an object: {"ids": [...]} or {}'), 400)
            ids = doc.get("ids")  # absent or null: every dead letter
            if ids is not None and (not isinstance(ids, list)
                                    or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
                return json_response(error_body("invalid_type", "must be a list of integers", "ids"), 400)
        return json_response({"replayed": await herald.outbox.replay_dead(ids)})

    @bp.post("/v1/admin/snapshot")
    @operation("Write a snapshot now", tags=["admin"],
               responses={200: json_body({"type": "object"}),
                          409: error_response("no journal, or still starting")})
    async def snapshot() -> Response:
        if not herald.journal.enabled or not herald.ready:
            return json_response(error_body("conflict", "snapshots need a journal and a started server"), 409)
        return json_response(await herald.snapshot())

    @bp.get("/v1/journal")
    @operation("Journal figures", tags=["admin"],
               responses={200: json_body({"type": "object"})})
    async def journal() -> Response:
        if not herald.journal.enabled:
            return json_response({"durability": "memory"})
        return json_response(await herald.journal.query(lambda j: j.stats()))

    return bp


def _docs_routes(app: Quart, herald: Herald) -> Blueprint:
    return explorer("Herald", lambda: build_document(
        app,
        title="Herald",
        version=VERSION,
        description="Events in, per-user actors with timers, plugins that decide what events mean.",
        extra_paths={**ingestion_paths(herald), **_plugin_paths(herald)},
        schemas={"Event": _event_schema(herald)},
        max_body=herald.config.max_batch_bytes,
    ))


#: The cluster node that answered a query about an actor.
SERVED_BY = "Herald-Served-By"
#: Set when a replica answered (the owner could not): messages of the partition it had not applied yet.
REPLICA_LAG = "Herald-Replica-Lag"
_FORWARDED = "herald-forwarded"


async def _forward_to_owner(herald: Herald, key: str) -> Response | None:
    """The owner's answer to a query for one of its actors (one hop, never more); None if no owner
    is known or it did not answer."""
    cluster = herald.cluster
    assert cluster is not None
    owner = cluster.owner_url(key) if not request.headers.get(_FORWARDED) else None
    if owner is None:
        return None
    node, url = owner
    headers = {_FORWARDED: herald.cluster.node}
    if "authorization" in request.headers:
        headers["authorization"] = request.headers["authorization"]
    try:
        # The key as it is, quoted again: the path Quart gives is decoded (a key with "?" or "%2F" would
        # name another actor there).
        answer = await herald.http.get(f"{url}/v1/actors/{quote(key, safe='')}", headers=headers)
    except Exception as exc:
        log.warning("forwarding a query to %s failed: %s", node, redact_text(str(exc)))
        return None
    if answer.status_code == 503:
        return None
    response = Response(answer.content, status=answer.status_code,
                        content_type=answer.headers.get("content-type", "application/json"))
    response.headers[SERVED_BY] = answer.headers.get(SERVED_BY, node)
    if REPLICA_LAG in answer.headers:  # the owner itself answered from a replica (it just lost the partition)
        response.headers[REPLICA_LAG] = answer.headers[REPLICA_LAG]
    return response


def create_app(herald: Herald) -> IngestApp:
    """The ASGI app for ``herald``: ingestion fast path, core routes, plugin routes."""
    app = QuartTrio("herald")
    app.url_map.converters[ACTOR_KEY] = ActorKey  # an actor key in a path: one segment, whatever it holds
    app.config["MAX_CONTENT_LENGTH"] = herald.config.max_batch_bytes
    # One record of failed attempts at the admin token for every route (the ingestion fast path's /v1/load too).
    app.extensions[GUESSES] = herald.part(GUESSES, Guesses)
    app.register_blueprint(_core_routes(herald, herald.part("web.inbox", NotifyInbox)))
    for blueprint in console_blueprints(herald):  # the web pages' shell, sign-in, the operator console at /ui
        app.register_blueprint(blueprint)
    app.register_blueprint(_admin_routes(herald))
    app.register_blueprint(_docs_routes(app, herald))
    for name, blueprints in herald.plugins.each("herald_routes", context=herald.context):
        if blueprints is None:
            continue
        for bp in [blueprints] if isinstance(blueprints, Blueprint) else blueprints:
            app.register_blueprint(bp)
    # No route behind a token may write what anyone may send without it (docs/security.md).
    check_writes(app, herald.plugins, {**ingestion_paths(herald), **_plugin_paths(herald)})
    enforce_writes(app)

    # One place for the headers of every answer, plugins' pages and APIs included (see web._headers).
    app.after_request(add_security_headers)

    @app.errorhandler(BadParameter)
    async def bad_parameter(exc: BadParameter) -> Response:
        return json_response(error_body("invalid_value", str(exc), exc.name), 400)

    @app.errorhandler(InvalidEvent)
    async def invalid(exc: InvalidEvent) -> Response:
        return json_response({"error": exc.to_dict()}, 400)

    @app.errorhandler(UnsupportedMediaType)
    async def unsupported(exc: UnsupportedMediaType) -> Response:
        return json_response(error_body("unsupported_media_type", str(exc), "Content-Type"), 415)

    @app.errorhandler(JournalError)
    async def not_durable(exc: JournalError) -> Response:
        # Nothing was applied (see Herald.accept): the client may retry.
        return json_response(error_body("journal_failed", f"not applied: the journal cannot be written ({exc})"),
                             503, {"Retry-After": "5"})

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        headers = {"Allow": ", ".join(exc.valid_methods)} if isinstance(exc, MethodNotAllowed) and exc.valid_methods else None
        return json_response(error_body(code, exc.description or exc.name), exc.code or 500, headers)

    @app.errorhandler(Exception)
    async def crash(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response(error_body("internal", "internal error"), 500)

    app.herald = herald  # type: ignore[attr-defined]
    return IngestApp(app, herald)


async def _signalled() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s; shutting down", signal.Signals(signum).name)
            return


class ListenError(OSError):
    """Herald could not bind its address (in use, not available, not allowed)."""


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first ``kind`` in ``exc`` or, for an exception group, among its leaves."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


async def serve(config: Config, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Run Herald on hypercorn-trio until SIGINT/SIGTERM; in-flight requests finish first."""
    herald = Herald(config)
    app = create_app(herald)
    hconfig = hypercorn.config.Config()
    hconfig.bind = [f"{config.host}:{config.port}" if ":" not in config.host else f"[{config.host}]:{config.port}"]
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("hypercorn.error")
    hconfig.graceful_timeout = 5
    # Slow input. Headers: hypercorn's keep-alive timer runs from the accept (and from each
    # answer) until a request's headers are complete, and bytes arriving do not restart it,
    # so keep_alive_timeout bounds trickled headers as well as idle connections, and
    # h11_max_incomplete_size bounds their size (431 beyond). Bodies: HERALD_BODY_TIMEOUT, in
    # web._ingest._read_body. read_timeout stays off: it restarts on every byte (a trickle
    # defeats it), and it also runs while a request is being answered, so it would cut off
    # a client waiting quietly for a long /v1/load.
    hconfig.keep_alive_timeout = 5
    hconfig.h11_max_incomplete_size = 16 * 1024
    hconfig.read_timeout = None
    # At most HERALD_MAX_CONNECTIONS open connections, idle ones closed first (see connlimit).
    connlimit.install()
    hconfig.herald_connections = connlimit.ConnectionLimit(connlimit.ensure_open_files(config.max_connections))
    async with herald.running(long_lived=True):
        async with trio.open_nursery() as nursery:
            async def shutdown_trigger() -> None:
                await _signalled()
                if herald.cluster is not None:
                    # Hand the partitions over first: idle kept-alive connections may hold hypercorn for
                    # its graceful timeout, and other nodes should not wait for that.
                    await herald.cluster.stop()
                # Deliveries may go to this very server: finish them before hypercorn stops serving.
                await herald.quiesce()

            if herald.cluster is not None:
                log.info("cluster node %s on %s (%d partitions); no local journal: the events topic and the "
                         "changelog keep everything", herald.cluster.node, redact_url(herald.cluster.bootstrap),
                         herald.cluster.partitions)
            elif config.durability == "memory":
                log.info("no journal (durability memory): state is lost when Herald stops")
            else:
                log.info("journal: %s (durability %s)", (config.data_path / DB_NAME).resolve(), config.durability)
            try:
                binds = await nursery.start(
                    functools.partial(hypercorn.trio.serve, app, hconfig, shutdown_trigger=shutdown_trigger)
                )
            except BaseException as exc:  # hypercorn's bind fails inside its nurseries: an OSError in a group
                error = _find(exc, OSError)
                if error is None or _find(exc, trio.Cancelled) is not None:
                    raise
                reason = (error.strerror or str(error)).lower()
                raise ListenError(error.errno, f"cannot listen on {hconfig.bind[0]}: {reason}") from None
            log.info(
                "Herald %s listening on %s (plugins: %s; notifications to %s)",
                VERSION, ", ".join(binds), ", ".join(herald.plugins.names) or "none",
                redact_url(config.effective_notify_url),
            )
            task_status.started(binds)


def _add_serve(commands: Any) -> None:
    """``herald serve``: the engine's settings as flags, plugins' flags after them."""
    parser = commands.add_parser(
        "serve", help="run the HTTP server",
        description="Run the Herald server (hypercorn on trio) until SIGINT or SIGTERM; in-flight requests finish "
        "first. Each setting comes from its flag, else its HERALD_* variable, else its default.")
    cli.add_serve_arguments(parser)
    parser.set_defaults(run=_serve)


def _serve(args: Any) -> int:
    config = cli.serve_config(args)
    cli.setup_logging(config.log_level, config.log_format)
    cli.insecure_warning(config)
    if args.salvage and config.durability != "memory":
        code = cli.salvage_dir(config.data_path, sys.stderr)
        if code:
            return code
    try:
        trio.run(serve, config)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:  # trio wraps it in the nurseries' exception groups
        error = _find(exc, ListenError)
        if error is not None:
            print(f"herald: {error.strerror}", file=sys.stderr)
            return 2
        # e.g. a cluster whose topic has another partition count; a guarded route writing a public type
        refused = _find(exc, ConfigError) or _find(exc, PluginError)
        if refused is None:
            raise
        print(f"herald: {refused}", file=sys.stderr)
        return 2
    return 0


def main(argv: Any = None) -> int:
    """The ``herald`` command."""
    return cli.main(argv, extensions=[_add_serve, scaffold.add_command])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
