"""The customers in id order, for listing pages: the plugin's keys, sorted once per change."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from quart import request

from engine import Context
from web import int_param

from .model import PLUGIN, REQUIRED_ATTRIBUTE

__all__ = ["Directory"]


class Directory:
    """Pages of customers ordered by integer id.

    The sorted order is rebuilt only when a customer is created or deleted
    (the engine bumps a version per plugin); a page is then a slice.
    """

    DEFAULT_PER_PAGE = 25
    MAX_PER_PAGE = 100_000

    def __init__(self, context: Context) -> None:
        self.context = context
        self._version = -1
        self._sorted: list[str] = []

    @classmethod
    def of(cls, context: Context) -> "Directory":
        """The one directory of a server (the API and the UI share it)."""
        return context.part("customers.directory", lambda: cls(context))

    def ordered(self) -> list[str]:
        version = self.context.version(PLUGIN)
        if version != self._version:
            self._sorted = sorted(self.context.keys(PLUGIN), key=int)
            self._version = version
        return self._sorted

    def paging(self) -> tuple[int, int, str]:
        """``page``, ``per_page`` and ``q`` of the current request (400 for unusable numbers)."""
        page = int_param("page", 1, low=1, high=10**9)
        per_page = int_param("per_page", self.DEFAULT_PER_PAGE, low=1, high=self.MAX_PER_PAGE)
        return page, per_page, (request.args.get("q") or "").strip()  # type: ignore[return-value]

    def page(self, page: int, per_page: int, q: str = "") -> tuple[list[str], int]:
        """The keys on one page, and how many customers match in all."""
        keys = self.ordered()
        if q:
            keys = list(self._matching(keys, q))
        start = (page - 1) * per_page
        return keys[start:start + per_page], len(keys)

    def _matching(self, keys: Iterable[str], q: str) -> Iterator[str]:
        needle = q.casefold()
        for key, state in self.states(keys):
            if key == q or needle in state.attributes.get(REQUIRED_ATTRIBUTE, "").casefold():
                yield key

    def states(self, keys: Iterable[str]) -> Iterator[tuple[str, Any]]:
        return self.context.states(keys, PLUGIN)
