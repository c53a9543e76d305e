"""Reading a verify CSV (the format of shared/tools/verify_customers.py), for the tests that compare with one."""

from __future__ import annotations

from pathlib import Path


def expected_summaries(verify: Path) -> dict[int, tuple[dict, dict]]:
    """The verify CSV as {id: (attributes, event counts)} (the rules of shared/tools/verify_customers.py)."""
    expected = {}
    for row in verify.read_text().splitlines():
        user, *fields = row.split(",")
        attributes, events = {}, {}
        for field in filter(None, fields):
            name, _, value = field.partition("=")
            if name != "created_at" and value.lstrip("+-").isdigit():
                events[name] = int(value)
            else:
                attributes[name] = value
        expected[int(user)] = (attributes, events)
    return expected
