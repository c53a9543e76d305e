"""Who may call what: the admin bearer token, and sessions and CSRF tokens for web pages."""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import secrets
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlsplit

from quart import Response, current_app, g, redirect, request

from ._guesses import Guesses
from ._proxy import client_address, request_is_https
from ._sessions import Sessions
from ._views import error_body, json_response

__all__ = ["ADMIN_SCHEME", "GUESSES", "Guesses", "UiGuard", "admin_guard", "admin_only", "bearer_ok",
           "judge", "guesses", "safe_next", "too_many", "ui_guard"]

#: The name of the admin bearer scheme in the OpenAPI document (``components.securitySchemes``).
ADMIN_SCHEME = "HeraldAdmin"
#: How the web pages' sign-in marks itself (a session cookie for the admin token; not in the document).
SESSION_GUARD = "HeraldSession"


def bearer_ok(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (the scheme in any case,
    as RFC 9110 says; the token compared in constant time)."""
    scheme, _, presented = (header or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


#: Where a server keeps its :class:`Guesses` (``app.extensions`` and ``Herald.part``).
GUESSES = "herald.guesses"


def guesses() -> Guesses:
    """The current app's record of failed attempts at the admin token (one per server)."""
    record = current_app.extensions.get(GUESSES)
    if record is None:  # an app not made by server.create_app (which shares the fast path's)
        record = current_app.extensions[GUESSES] = Guesses()
    return record


def judge(record: Guesses, client: str, attempted: bool, right: Callable[[], bool]) -> float | None:
    """Check an attempt at the admin token, counting failures per ``client``: None when ``right()``;
    else the seconds the client must wait (0.0: just wrong, a 401; more: locked out, a 429, and
    ``right`` is not even called). No attempt at all (``attempted`` false) is not counted."""
    wait = record.wait(client)
    if wait:
        return wait
    if right():
        record.succeeded(client)
        return None
    return record.failed(client) if attempted else 0.0


def lockout(wait: float) -> tuple[int, dict[str, Any]]:
    """A locked-out client's ``Retry-After`` (whole seconds) and error body."""
    seconds = max(1, math.ceil(wait))
    return seconds, error_body("too_many_failures", "too many failed attempts at the admin token from this "
                               f"address: try again in {seconds} s", "Authorization")


def too_many(wait: float) -> Response:
    """The answer to a client locked out after too many failed attempts at the admin token."""
    seconds, body = lockout(wait)
    return json_response(body, 429, {"Retry-After": str(seconds)})


def _refusal(token: str) -> Response | None:
    header = request.headers.get("Authorization")
    wait = judge(guesses(), client_address() or "unknown", header is not None, lambda: bearer_ok(header, token))
    if wait is None:
        return None
    return too_many(wait) if wait else _unauthorized()


def _unauthorized() -> Response:
    return json_response(error_body("unauthorized", "a valid admin bearer token is required (Authorization: "
                                    "Bearer <HERALD_ADMIN_TOKEN>)", "Authorization"), 401,
                         {"WWW-Authenticate": 'Bearer realm="herald"'})


def admin_guard(token: str | None) -> Callable[[], Awaitable[Response | None]]:
    """A ``before_request`` function for admin blueprints: when ``token`` is set,
    requests must carry ``Authorization: Bearer <token>`` (compared in constant time; an
    address that keeps presenting wrong ones is answered 429 for a while, see :class:`Guesses`)."""

    async def authorize() -> Response | None:
        return _refusal(token) if token else None

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
            refused = _refusal(token) if token else None
            return refused if refused is not None else await view(*args, **kwargs)

        guarded.__herald_guard__ = ADMIN_SCHEME  # type: ignore[attr-defined]
        if token:
            guarded.__openapi_security__ = ADMIN_SCHEME  # type: ignore[attr-defined]
        return guarded

    return decorate


class UiGuard:
    """Sessions and CSRF tokens for Herald's web pages (server-rendered forms).

    With an admin token configured, a browser signs in once at ``/ui/login``
    with that token and gets an ``HttpOnly``, ``SameSite=Strict`` cookie
    holding a random session id, kept in this process's memory (see
    :class:`Sessions`: signing out ends it; a restart ends them all); a
    request with the bearer token itself is let through too. Without a token
    (loopback only) the pages are open.

    Every form carries a CSRF token, checked on each POST: an HMAC (under a
    key made at start) of the session id when there is a session, so a token
    is worth nothing in any other session; before signing in (the sign-in
    form itself) and when no token is configured, of a random value in a
    cookie of its own. A POST whose browser says it came from another origin
    (``Sec-Fetch-Site``) is refused whatever it carries.
    """

    SESSION, CSRF = "herald_session", "herald_csrf"

    def __init__(self, token: str | None, *, idle: float = 1800.0, lifetime: float = 43_200.0,
                 limit: int = 1000) -> None:
        self.token = token
        self.sessions = Sessions(idle, lifetime, limit=limit)
        self._key = secrets.token_bytes(32)

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    # -- sessions ---------------------------------------------------------------------

    def session(self) -> str | None:
        """The id of the request's live session, if it has one (looked up once per request)."""
        if "herald_sid" not in g:
            sid = request.cookies.get(self.SESSION) if self.token else None
            g.herald_sid = sid if self.sessions.touch(sid) else None
        return g.herald_sid

    def signed_in(self) -> bool:
        """Whether the request has a live session (or no token is configured)."""
        return not self.token or self.session() is not None

    def judge_token(self, presented: str) -> float | None:
        """The sign-in form's token, checked and counted like a bearer header (see :func:`judge`)."""
        token = self.token or ""
        return judge(guesses(), client_address() or "unknown", True,
                     lambda: bool(token) and hmac.compare_digest(presented.strip().encode(), token.encode()))

    def sign_in(self, response: Response) -> Response:
        """Start a session (ending the request's old one) and give ``response`` its cookie."""
        self.sessions.end(self.session())
        sid = self.sessions.start()
        g.herald_sid = sid
        response.set_cookie(self.SESSION, sid, max_age=int(self.sessions.lifetime), httponly=True,
                            samesite="Strict", path="/ui", secure=request_is_https())
        response.delete_cookie(self.CSRF, path="/ui")  # the pre-session binding is done with
        return response

    def sign_out(self, response: Response) -> Response:
        """End the request's session, here and in the browser."""
        self.sessions.end(self.session())
        g.herald_sid = None
        response.delete_cookie(self.SESSION, path="/ui")
        return response

    # -- CSRF -----------------------------------------------------------------------------

    def _binding(self, create: bool) -> str | None:
        sid = self.session()
        if sid is not None:
            return "session:" + sid
        seed = request.cookies.get(self.CSRF) or g.get("herald_csrf_seed")
        if not seed and create:
            seed = g.herald_csrf_seed = secrets.token_hex(16)
        return "pre:" + seed if seed else None

    def csrf_token(self) -> str:
        """The token a form rendered for the current request carries (see :meth:`set_cookies`)."""
        binding = self._binding(create=True)
        assert binding is not None
        return self._sign("csrf", binding)

    def csrf_ok(self, presented: str | None) -> bool:
        """Whether a POST's form token is the one of this request's session (or pre-session
        cookie), and the browser does not say the form came from another origin."""
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return False
        binding = self._binding(create=False)
        return bool(binding and presented) and hmac.compare_digest(
            presented.encode(), self._sign("csrf", binding).encode())  # bytes: any text compares, none raises

    def set_cookies(self, response: Response) -> Response:
        """``after_request``: give the browser the pre-session cookie its forms' tokens are bound to."""
        seed = g.get("herald_csrf_seed")
        if seed and not request.cookies.get(self.CSRF) and g.get("herald_sid") is None:
            response.set_cookie(self.CSRF, seed, httponly=True, samesite="Strict", path="/ui", secure=request_is_https())
        return response

    async def before_request(self) -> Any:
        """For UI blueprints: sign-in first (when a token is set), and a valid CSRF token on every POST."""
        if not self.signed_in():
            if "Authorization" in request.headers:  # a client with the bearer token instead of a session
                refused = _refusal(self.token)  # type: ignore[arg-type]
                if refused is not None:
                    return refused
            elif request.method in ("GET", "HEAD"):
                target = request.full_path.rstrip("?") if request.query_string else request.path
                return redirect(f"/ui/login?next={quote(target, safe='/')}", 303)
            else:
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
    config = context.config
    return context.part("herald.ui_guard", lambda: UiGuard(config.admin_token, idle=config.ui_session_idle,
                                                           lifetime=config.ui_session_max))


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this server only (never another site)."""
    # Browsers read "/\\evil.example" as "//evil.example": no backslash, no control character.
    if (not target or not target.startswith("/") or target[1:2] in ("/", "\\")
            or "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)):
        return "/ui"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/ui"
