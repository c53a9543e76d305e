"""The web UI at ``/ui/customers``: list, show and edit customers.

Server-rendered pages (Jinja2 through Quart) in Herald's shared layout
(:func:`web.ui_pages`, beside the operator console), plain HTML forms, no
JavaScript and nothing fetched from elsewhere. Edits go through the same
:class:`~.api.Writes` as the REST API and only send the attributes that
changed, so two people editing different attributes do not undo each other
(the seed's merge semantics).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import attrs
from quart import Blueprint, redirect, render_template, request, url_for

from engine import Context, JournalError
from web import BadParameter, ui_pages

from .api import CustomerError, Writes
from .directory import Directory
from .messages import customer_key
from .model import REQUIRED_ATTRIBUTE

__all__ = ["ui_blueprint", "EditForm"]

#: Blank rows offered for new attributes (one more each time "Add another row" is pressed).
NEW_ROWS = 1


def _date(seconds: Any) -> str:
    try:
        return datetime.fromtimestamp(int(seconds), timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return str(seconds)


@attrs.define
class Row:
    """One attribute line of the edit form, as shown and as submitted."""

    name: str
    value: str
    original: str | None = None  # None for a new attribute
    remove: bool = False
    error: str | None = None


@attrs.define
class EditForm:
    """The edit form: parsed from a submission, checked, turned into a merge patch."""

    rows: list[Row]
    new: list[Row]
    errors: list[tuple[str, str]] = attrs.field(factory=list)  # (field id, message)

    @classmethod
    def of(cls, attributes: dict[str, str], new_rows: int = NEW_ROWS) -> "EditForm":
        rows = [Row(name, value, value) for name, value in sorted(attributes.items(), key=_attribute_order)]
        return cls(rows, [Row("", "") for _ in range(new_rows)])

    @classmethod
    def parse(cls, form: Any) -> "EditForm":
        rows = []
        for i in range(_count(form.get("rows"))):
            name = form.get(f"name-{i}", "")
            if not name:
                continue
            rows.append(Row(name, form.get(f"value-{i}", ""), form.get(f"orig-{i}", ""), bool(form.get(f"remove-{i}"))))
        new = [Row(form.get(f"new-name-{j}", "").strip(), form.get(f"new-value-{j}", ""))
               for j in range(_count(form.get("new_rows"), NEW_ROWS))]
        return cls(rows, new)

    def check(self) -> dict[str, str | None]:
        """The merge patch (changed values; None removes), filling ``errors`` if the form is wrong."""
        changes: dict[str, str | None] = {}
        kept = set()
        for i, row in enumerate(self.rows):
            if row.name == REQUIRED_ATTRIBUTE and (row.remove or not row.value.strip()):
                self._fail(row, f"value-{i}", "Email is required: it cannot be empty or removed.")
                continue
            if row.remove:
                changes[row.name] = None
                continue
            kept.add(row.name)
            if row.value != row.original:
                changes[row.name] = row.value
        seen_new: set[str] = set()
        for j, row in enumerate(self.new):
            if not row.name and not row.value:
                continue
            if not row.name:
                self._fail(row, f"new-name-{j}", "Give the new attribute a name.")
            elif len(row.name) > 256:
                self._fail(row, f"new-name-{j}", "Attribute names are at most 256 characters.")
            elif row.name in kept or row.name in seen_new:
                self._fail(row, f"new-name-{j}", f"“{row.name}” exists already: change its value above instead.")
            elif not row.value:
                self._fail(row, f"new-value-{j}", f"Give “{row.name}” a value.")
            else:
                seen_new.add(row.name)
                changes[row.name] = row.value
        return changes

    def _fail(self, row: Row, field: str, message: str) -> None:
        row.error = message
        self.errors.append((field, message))


def _count(raw: Any, default: int = 0) -> int:
    try:
        return max(0, min(int(raw), 10_000))
    except (TypeError, ValueError):
        return default


def _attribute_order(item: tuple[str, str]) -> tuple[int, str]:
    # The basics first, then the rest alphabetically.
    basics = {"email": 0, "first_name": 1, "last_name": 2, "created_at": 3}
    return basics.get(item[0], 9), item[0]


def ui_blueprint(context: Context) -> Blueprint:
    # Sign-in when an admin token is set, CSRF tokens on every form, Herald's shared layout and navigation.
    bp = ui_pages(context, "customers_ui", __name__, url_prefix="/ui/customers", label="Customers",
                  template_folder="templates")
    directory = Directory.of(context)
    writes = Writes(context)

    class _Missing(Exception):
        pass

    def _customer(raw_id: str) -> tuple[str, Any]:
        try:
            key = customer_key(raw_id, "id")
        except Exception:
            raise _Missing(raw_id) from None
        state = writes.get(key)
        if state is None:
            raise _Missing(raw_id)
        return key, state

    @bp.errorhandler(_Missing)
    async def _not_found(exc: _Missing) -> tuple[str, int]:
        return await render_template("customers/missing.html", raw_id=exc.args[0]), 404

    async def _edit_page(key: str, form: EditForm, failure: str | None = None, status: int = 200, **extra: Any) -> Any:
        return await render_template("customers/edit.html", id=key, form=form, failure=failure, **extra), status

    @bp.get("")
    @bp.get("/")
    async def index() -> Any:
        try:
            page, per_page, q = directory.paging()
        except BadParameter as exc:
            return await render_template("customers/list.html", error=f"{exc.name}: {exc}", rows=[], page=1,
                                         pages=1, per_page=25, total=0, q=""), 400
        keys, total = directory.page(page, per_page, q)
        rows = [
            {
                "id": key,
                "email": state.attributes.get("email", ""),
                "name": " ".join(filter(None, (state.attributes.get("first_name"), state.attributes.get("last_name")))),
                "attributes": len(state.attributes),
                "events": sum(state.events.values()),
                "updated": _date(state.last_updated),
            }
            for key, state in directory.states(keys)
        ]
        pages = max(1, math.ceil(total / per_page))
        return await render_template("customers/list.html", rows=rows, page=page, pages=pages, per_page=per_page,
                                     total=total, q=q, first=(page - 1) * per_page + 1, error=None)

    @bp.get("/<raw_id>")
    async def show(raw_id: str) -> Any:
        key, state = _customer(raw_id)
        attributes = sorted(state.attributes.items(), key=_attribute_order)
        return await render_template(
            "customers/show.html", id=key, state=state, attributes=attributes,
            events=sorted(state.events.items()), updated=_date(state.last_updated),
            created=_date(state.attributes.get("created_at")), saved=request.args.get("saved"),
        )

    @bp.get("/<raw_id>/edit")
    async def edit(raw_id: str) -> Any:
        key, state = _customer(raw_id)
        return await _edit_page(key, EditForm.of(state.attributes))

    @bp.post("/<raw_id>/edit")
    async def save(raw_id: str) -> Any:
        key, _ = _customer(raw_id)
        submitted = await request.form
        form = EditForm.parse(submitted)
        if submitted.get("action") == "add_row":
            form.new.append(Row("", ""))
            return await _edit_page(key, form, focus=f"new-name-{len(form.new) - 1}")
        changes = form.check()
        if form.errors:
            return await _edit_page(key, form, "The changes were not saved. Please correct the fields below.", 422)
        if not changes:
            return redirect(url_for("customers_ui.show", raw_id=key, saved="none"), 303)
        try:
            await writes.update(key, changes)
        except CustomerError as exc:
            return await _edit_page(key, form, f"The changes were not saved: {exc.message}.", exc.status)
        except JournalError as exc:
            return await _edit_page(key, form, f"The changes were not saved (storage failed: {exc}). Try again.", 503)
        return redirect(url_for("customers_ui.show", raw_id=key, saved="1"), 303)

    return bp
