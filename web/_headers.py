"""Security headers: what a browser may load, frame and pass on from Herald's answers.

Every answer Quart gives (core routes, the console, plugins' pages and APIs,
errors, ``/docs``) gets :data:`SECURITY_HEADERS` from one ``after_request``
(:func:`add_security_headers`, installed by ``server.create_app``); answers
given outside Quart (the ingestion fast path, plugins' raw ASGI routes) get
``X-Content-Type-Options: nosniff`` (:data:`NOSNIFF`), which is all a JSON
answer needs. Herald's pages load scripts and styles from files on Herald
only (no inline script, style or event handler), so the policy allows
nothing else; a page that needs more sets its own header, which is kept.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["CONTENT_SECURITY_POLICY", "NOSNIFF", "SECURITY_HEADERS", "add_security_headers", "nosniff_send"]

#: Scripts, styles, fonts and fetches from this server only; images also as ``data:`` URLs (Swagger UI's
#: stylesheet draws its icons so); no plugins, no ``<base>``, forms posted to this server only, and no
#: page anywhere (not even a same-site one) may frame these pages.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # A browser that predates frame-ancestors reads this one.
    "X-Frame-Options": "DENY",
    # A JSON answer (which may echo what a client sent) is never run as a script or rendered as HTML.
    "X-Content-Type-Options": "nosniff",
    # Links out of the console never carry its URLs (actor keys, filters) to another site.
    "Referrer-Policy": "no-referrer",
}

#: The header every answer carries, as an ASGI header pair (for answers given outside Quart).
NOSNIFF = (b"x-content-type-options", b"nosniff")


async def add_security_headers(response: Any) -> Any:
    """``after_request`` of the whole app: :data:`SECURITY_HEADERS` on the answer, each unless the view
    set that header itself."""
    headers = response.headers
    for name, value in SECURITY_HEADERS.items():
        if name not in headers:
            headers[name] = value
    return response


def nosniff_send(send: Callable[[dict], Any]) -> Callable[[dict], Any]:
    """``send`` for a raw ASGI handler: its answer's start gets :data:`NOSNIFF` (unless it has the header)."""

    async def sending(message: dict) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if all(name.lower() != NOSNIFF[0] for name, _ in headers):
                headers.append(NOSNIFF)
            message = {**message, "headers": headers}
        await send(message)

    return sending
