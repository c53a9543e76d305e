"""Herald's web pages: one layout, one navigation and one stylesheet for the console and plugins' pages.

A plugin's pages are a blueprint from :func:`ui_pages`: sign-in (with an admin
token) and CSRF tokens come with it, its templates extend ``layout`` (the
shared ``herald/layout.html``), and its ``label`` joins the navigation.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs
from quart import Blueprint, request

from ._auth import ui_guard

__all__ = ["LAYOUT", "NavLink", "instant", "nav_link", "page_context", "shell_blueprint", "ui_pages"]

#: The template every web page extends (``{% extends layout %}``).
LAYOUT = "herald/layout.html"
_HERE = Path(__file__).resolve().parent
_UTC = timezone.utc


@attrs.frozen
class NavLink:
    """One entry of the navigation: the pages under ``path``."""

    label: str
    path: str

    def current(self, path: str) -> bool:
        return path == self.path or (self.path != "/ui" and path.startswith(self.path + "/"))


def _navigation(context: Any) -> list[NavLink]:
    return context.part("herald.ui_nav", list)


def nav_link(context: Any, label: str, path: str) -> None:
    """Add a link to the navigation of every page (once per path), after those there are."""
    links = _navigation(context)
    if all(link.path != path for link in links):
        links.append(NavLink(label, path))


def page_context(context: Any) -> dict[str, Any]:
    """What every page's template sees: the layout, the navigation, the CSRF token, whether sign-out applies."""
    guard = ui_guard(context)
    return {"layout": LAYOUT, "nav": _navigation(context), "csrf_token": guard.csrf_token,
            "signs_in": bool(context.config.admin_token), "path": request.path}


def ui_pages(context: Any, name: str, import_name: str, *, url_prefix: str, label: str | None = None,
             **options: Any) -> Blueprint:
    """A blueprint of web pages under ``url_prefix`` (below ``/ui``): every request signed in when
    an admin token is set, every POST with its form's CSRF token, templates given ``layout``,
    ``nav``, ``csrf_token()``; with ``label``, a link to ``url_prefix`` in the navigation."""
    bp = Blueprint(name, import_name, url_prefix=url_prefix, **options)
    guard = ui_guard(context)
    bp.before_request(guard.before_request)
    bp.after_request(guard.set_cookies)
    bp.context_processor(lambda: page_context(context))
    if label is not None:
        nav_link(context, label, url_prefix)
    return bp


def instant(value: Any) -> str:
    """A moment as people read it (UTC, to the second): from a datetime, an ISO string or POSIX seconds."""
    if value is None or value == "":
        return "—"
    try:
        if isinstance(value, str):
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        elif not isinstance(value, datetime):
            value = datetime.fromtimestamp(float(value), _UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return str(value)
    return value.astimezone(_UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def shell_blueprint(context: Any) -> Blueprint:
    """The pages' shell: the shared templates and assets (``/ui/assets/...``, open: nothing secret)
    and the filters every page may use."""
    bp = Blueprint("herald_ui", __name__, template_folder=str(_HERE / "templates"),
                   static_folder=str(_HERE / "static"), static_url_path="/ui/assets")
    bp.add_app_template_filter(instant, "instant")
    bp.add_app_template_filter(lambda n: f"{n:,}" if isinstance(n, int) else ("—" if n is None else str(n)),
                               "number")
    return bp
