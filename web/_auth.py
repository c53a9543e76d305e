"""Who may call what: the admin bearer token, and sessions and CSRF tokens for web pages."""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import time
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlsplit

from quart import Response, redirect, request

from ._proxy import request_is_https
from ._views import error_body, json_response

__all__ = ["ADMIN_SCHEME", "UiGuard", "admin_guard", "admin_only", "bearer_ok", "safe_next", "ui_guard"]

#: The name of the admin bearer scheme in the OpenAPI document (``components.securitySchemes``).
ADMIN_SCHEME = "HeraldAdmin"
#: How the web pages' sign-in marks itself (a session cookie for the admin token; not in the document).
SESSION_GUARD = "HeraldSession"


def bearer_ok(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (the scheme in any case,
    as RFC 9110 says; the token compared in constant time)."""
    scheme, _, presented = (header or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


def _unauthorized() -> Response:
    return json_response(error_body("unauthorized", "a valid admin bearer token is required (Authorization: "
                                    "Bearer <HERALD_ADMIN_TOKEN>)", "Authorization"), 401,
                         {"WWW-Authenticate": 'Bearer realm="herald"'})


def admin_guard(token: str | None) -> Callable[[], Awaitable[Response | None]]:
    """A ``before_request`` function for admin blueprints: when ``token`` is set,
    requests must carry ``Authorization: Bearer <token>`` (compared in constant time)."""

    async def authorize() -> Response | None:
        if token and not bearer_ok(request.headers.get("Authorization"), token):
            return _unauthorized()
        return None

    # What the blueprint's routes write must be internal, token or not (see web._writes).
    authorize.__herald_guard__ = ADMIN_SCHEME  # type: ignore[attr-defined]
    if token:  # the OpenAPI document declares the bearer scheme on the blueprint's operations
        authorize.__openapi_security__ = ADMIN_SCHEME  # type: ignore[attr-defined]
    return authorize


def admin_only(token: str | None) -> Callable[[Callable], Callable]:
    """The same rule as :func:`admin_guard` for one view (a decorator)."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            if token and not bearer_ok(request.headers.get("Authorization"), token):
                return _unauthorized()
            return await view(*args, **kwargs)

        guarded.__herald_guard__ = ADMIN_SCHEME  # type: ignore[attr-defined]
        if token:
            guarded.__openapi_security__ = ADMIN_SCHEME  # type: ignore[attr-defined]
        return guarded

    return decorate


class UiGuard:
    """Sessions and CSRF tokens for Herald's web pages (server-rendered forms).

    With an admin token configured, a browser signs in once at ``/ui/login``
    with that token and gets an ``HttpOnly``, ``SameSite=Strict`` session
    cookie (an expiry signed with a key derived from the token: nothing is
    stored, and changing the token ends every session); a request with the
    bearer token itself is let through too. Without a token (loopback only)
    the pages are open. Either way every form carries a CSRF token bound to
    a cookie of its own (an HMAC of a random value), checked on each POST.
    """

    SESSION, CSRF = "herald_session", "herald_csrf"
    LIFETIME = 12 * 3600

    def __init__(self, token: str | None) -> None:
        self.token = token
        secret = hashlib.sha256(b"herald-ui:" + token.encode()).digest() if token else os.urandom(32)
        self._key = secret

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    # -- sessions ---------------------------------------------------------------------

    def session_value(self, now: float | None = None) -> str:
        expires = str(int((time.time() if now is None else now) + self.LIFETIME))
        return f"{expires}.{self._sign('session', expires)}"

    def signed_in(self) -> bool:
        if not self.token:
            return True
        if bearer_ok(request.headers.get("Authorization"), self.token):
            return True
        expires, _, signature = (request.cookies.get(self.SESSION) or "").partition(".")
        return (expires.isdigit() and int(expires) > time.time()
                and hmac.compare_digest(signature, self._sign("session", expires)))

    def check_token(self, presented: str) -> bool:
        return bool(self.token) and hmac.compare_digest(presented.strip().encode(), self.token.encode())

    # -- CSRF -----------------------------------------------------------------------------

    def csrf_token(self) -> str:
        """The token a form rendered for the current request carries (see :meth:`set_cookies`)."""
        seed = request.cookies.get(self.CSRF) or getattr(request, "_herald_csrf_seed", None)
        if not seed:
            seed = request._herald_csrf_seed = os.urandom(16).hex()  # type: ignore[attr-defined]
        return self._sign("csrf", seed)

    def csrf_ok(self, presented: str | None) -> bool:
        seed = request.cookies.get(self.CSRF)
        return bool(seed and presented) and hmac.compare_digest(presented, self._sign("csrf", seed))

    def set_cookies(self, response: Response) -> Response:
        """``after_request``: give the browser the CSRF cookie its forms' tokens are bound to."""
        seed = getattr(request, "_herald_csrf_seed", None)
        if seed and not request.cookies.get(self.CSRF):
            response.set_cookie(self.CSRF, seed, httponly=True, samesite="Strict", path="/ui",
                                secure=request_is_https())
        return response

    def sign_in_cookie(self, response: Response) -> Response:
        response.set_cookie(self.SESSION, self.session_value(), max_age=self.LIFETIME, httponly=True,
                            samesite="Strict", path="/ui", secure=request_is_https())
        return response

    async def before_request(self) -> Any:
        """For UI blueprints: sign-in first (when a token is set), and a valid CSRF token on every POST."""
        if not self.signed_in():
            if request.method in ("GET", "HEAD"):
                target = request.full_path.rstrip("?") if request.query_string else request.path
                return redirect(f"/ui/login?next={quote(target, safe='/')}", 303)
            return _unauthorized()
        if request.method == "POST":
            form = await request.form
            if not self.csrf_ok(form.get("csrf")):
                return json_response(error_body("csrf_failed", "the form's CSRF token is missing or wrong: "
                                                "reload the page and submit it again", "csrf"), 403)
        return None

    #: Pages are behind the sign-in (with a token): what they write must be internal (see web._writes).
    before_request.__herald_guard__ = SESSION_GUARD  # type: ignore[attr-defined]


def ui_guard(context: Any) -> UiGuard:
    """The one :class:`UiGuard` of a server (Herald's sign-in page and every plugin's pages share it)."""
    return context.part("herald.ui_guard", lambda: UiGuard(context.config.admin_token))


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this server only (never another site)."""
    # Browsers read "/\\evil.example" as "//evil.example": no backslash, no control character.
    if (not target or not target.startswith("/") or target[1:2] in ("/", "\\")
            or "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)):
        return "/ui"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/ui"
