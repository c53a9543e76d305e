"""The operator console at ``/ui``: overview, actors, deliveries and the live tail of events.

Server-rendered pages in the shared layout (:mod:`web._pages`), behind the same
sign-in and CSRF tokens as every web page; ``console.js`` refreshes the live
figures from the pages' JSON twins, and without it each page shows its figures
as of load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Blueprint, render_template

from .._keys import actor_url
from .._pages import nav_link, shell_blueprint, ui_pages
from .._signin import signin_blueprint
from .._views import BadParameter
from .actors import add_actors
from .deliveries import add_deliveries
from .events import add_events
from .overview import Overview, add_overview
from .pages import Missing

if TYPE_CHECKING:  # pragma: no cover
    from engine.host import Herald

__all__ = ["console_blueprints"]


def console_blueprints(herald: "Herald") -> list[Blueprint]:
    """The pages' shell (layout, assets), sign-in, and the console: register them before plugins' pages."""
    context = herald.context
    bp = ui_pages(context, "console", __name__, url_prefix="/ui")
    for label, path in (("Overview", "/ui"), ("Actors", "/ui/actors"), ("Deliveries", "/ui/deliveries"),
                        ("Events", "/ui/events")):
        nav_link(context, label, path)

    @bp.errorhandler(BadParameter)
    async def bad_parameter(exc: BadParameter) -> Any:
        return await render_template("console/problem.html", title="Bad request", status=400,
                                     message=f"{exc.name}: {exc}"), 400

    @bp.errorhandler(Missing)
    async def missing(exc: Missing) -> Any:
        return await render_template("console/problem.html", title="Not found", status=404,
                                     message=str(exc), **exc.details), 404

    bp.add_app_template_global(actor_url, "actor_url")  # every page's link to an actor (plugins' too)
    add_overview(bp, Overview(herald))
    add_actors(bp, herald)
    add_deliveries(bp, herald)
    add_events(bp, herald)
    return [shell_blueprint(context), signin_blueprint(context), bp]
