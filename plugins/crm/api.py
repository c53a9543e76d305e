"""GDPR erasure (``DELETE /v1/subjects/{user_id}``) and key lookup for authorised public-stream consumers."""

from __future__ import annotations

import base64
import time
from datetime import datetime, timezone

from quart import Blueprint, Response

from engine import Context, Event, new_event_id
from web import error_body
from web import error_response, json_body, operation
from web import admin_guard, json_response

from .contracts import user_key
from .keystore import KeyStore, KeyStoreUnavailable
from .model import TRIPS_TOPIC, USERS_TOPIC

__all__ = ["subjects_blueprint", "ERASE"]

ERASE = "crm.erase"


def subjects_blueprint(context: Context, keys: KeyStore) -> Blueprint:
    bp = Blueprint("crm_subjects", __name__, url_prefix="/v1/subjects")
    bp.before_request(admin_guard(context.config.admin_token))

    @bp.delete("/<user_id>")
    @operation(
        "Erase a user (GDPR)",
        tags=["crm", "admin"],
        description="Removes the user from Herald's state and from the CRM, destroys their key (every personal "
        f"field they ever had on {USERS_TOPIC} and {TRIPS_TOPIC} becomes unreadable), writes a tombstone to "
        f"{USERS_TOPIC} and a subject.erased notice to {TRIPS_TOPIC}, and snapshots so that the journal "
        "behind it, which holds the internal events, is compacted away. Later events for the user are dropped.",
        responses={202: json_body({"type": "object"}), 401: error_response("no admin token")},
        writes=[ERASE],
    )
    async def erase(user_id: str) -> Response:
        now = datetime.fromtimestamp(time.time(), timezone.utc)
        try:  # the key first: once it is gone nothing of the user can be read, whatever happens next
            had_key = await keys.erase(user_id)
        except KeyStoreUnavailable as exc:
            return _unavailable(exc)
        await context.accept([Event(new_event_id(), ERASE, user_key(user_id), now, {"user_id": user_id}, now)])
        snapshot = await context.snapshot()  # None without a journal (nothing to compact)
        return json_response({"user_id": user_id, "key_destroyed": had_key, "erased": True,
                              "journal_compacted_through": snapshot and snapshot.get("seq")}, 202)

    @bp.get("/<user_id>/key")
    @operation(
        "A user's data key, for authorised consumers of the public topics",
        tags=["crm", "admin"],
        description="AES-256-GCM key (base64) that opens the `personal` field of this user's public messages "
        "(associated data: the user id). 404 once the user is erased.",
        responses={200: json_body({"type": "object", "properties": {"key": {"type": "string"}}}),
                   404: error_response("no key: unknown or erased user")},
    )
    async def key(user_id: str) -> Response:
        try:
            found = await keys.existing(user_id)
        except KeyStoreUnavailable as exc:
            return _unavailable(exc)
        if found is None:
            return json_response(error_body("not_found", "no key for this user (never published, or erased)",
                                            "user_id"), 404)
        return json_response({"user_id": user_id, "alg": "AES-256-GCM", "key": base64.b64encode(found).decode()})

    return bp


def _unavailable(exc: KeyStoreUnavailable) -> Response:
    """503: nothing was applied (the key store is away); the message holds no password."""
    return json_response(error_body("key_store_unavailable", f"the key store cannot be reached: {exc}", None), 503)
