"""What the console's pages share: paging parameters, and the pages that say something is missing or wrong."""

from __future__ import annotations

from typing import Any

from .._views import int_param

__all__ = ["MAX_PER_PAGE", "Missing", "paging"]

MAX_PER_PAGE = 500


class Missing(Exception):
    """What a page asked for does not exist: the console answers with a 404 page saying so."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


def paging(default: int = 50) -> tuple[int, int]:
    """``page`` and ``per_page`` of the current request (a :class:`web.BadParameter`, so 400, if unusable)."""
    page = int_param("page", 1, low=1, high=10**9)
    per_page = int_param("per_page", default, low=1, high=MAX_PER_PAGE)
    return page, per_page  # type: ignore[return-value]
