"""``/ui/login`` and ``/ui/logout``: a browser trades the admin token for a session cookie once (see ``UiGuard``)."""

from __future__ import annotations

import math
from typing import Any

from quart import Blueprint, redirect, render_template, request

from ._auth import safe_next, ui_guard
from ._pages import page_context

__all__ = ["signin_blueprint"]


def signin_blueprint(context: Any) -> Blueprint:
    bp = Blueprint("signin", __name__)
    guard = ui_guard(context)
    bp.after_request(guard.set_cookies)
    bp.context_processor(lambda: page_context(context))

    async def page(target: str | None, error: str = "", status: int = 200) -> tuple[str, int]:
        return await render_template("herald/login.html", next=safe_next(target), error=error), status

    @bp.get("/ui/login")
    async def login_form() -> Any:
        if not context.config.admin_token:
            return redirect(safe_next(request.args.get("next")), 303)
        return await page(request.args.get("next"))

    @bp.post("/ui/login")
    async def login() -> Any:
        if not context.config.admin_token:
            return redirect("/ui", 303)
        form = await request.form
        if not guard.csrf_ok(form.get("csrf")):
            return await page(form.get("next"), "The form expired: please sign in again.", 403)
        wait = guard.judge_token(form.get("token", ""))
        if wait:
            seconds = max(1, math.ceil(wait))
            body, status = await page(form.get("next"), "Too many failed sign-ins from your address: try again "
                                      f"in {seconds} s.", 429)
            return body, status, {"Retry-After": str(seconds)}
        if wait is not None:
            return await page(form.get("next"), "That is not the admin token.", 401)
        return guard.sign_in(redirect(safe_next(form.get("next")), 303))

    @bp.post("/ui/logout")
    async def logout() -> Any:
        form = await request.form
        if guard.session() is not None and not guard.csrf_ok(form.get("csrf")):
            return await page(None, "The form expired.", 403)
        return guard.sign_out(redirect("/ui/login", 303))

    return bp
