"""The generic rules and the per-type schemas, against the seed's example payloads."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from plugins.analytics.validation import SHIPPED_SCHEMAS, Checked, SchemaRegistry, check

EXAMPLES = next((p / "shared" / "data" / "analytics" / "examples.jsonl" for p in Path(__file__).resolve().parents
                 if (p / "shared" / "data" / "analytics" / "examples.jsonl").exists()), None)
NOW = 1_800_000_000.0  # 2027: every example timestamp but the future one is in the past


def registry() -> SchemaRegistry:
    r = SchemaRegistry()
    r.add_directory(SHIPPED_SCHEMAS)
    return r


def codes(payload, **kwargs) -> set[tuple[str | None, str]]:
    result = check(payload, received=NOW, max_skew=60, registry=registry(), **kwargs)
    return set() if isinstance(result, Checked) else {(e.field, e.code) for e in result}


@pytest.mark.skipif(EXAMPLES is None, reason="../shared/data/analytics is not beside the repository")
def test_the_seed_examples_are_accepted_or_rejected_as_labelled():
    seen = 0
    for line in EXAMPLES.read_bytes().splitlines():
        example = orjson.loads(line)
        found = codes(example["payload"])
        assert (not found) == (example["expect"] == "accepted"), (example["rule"], found)
        seen += 1
    assert seen == 15


VALID = {"session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423", "category": "page interaction", "name": "pageview",
         "data": {"host": "www.consumeraffairs.com", "path": "/"}, "timestamp": "2021-01-01 09:15:27.243860"}


def test_an_empty_payload_has_five_required_fields():
    assert codes({}) == {(f, "required") for f in ("session_id", "category", "name", "data", "timestamp")}


@pytest.mark.parametrize(("change", "expected"), [
    ({"session_id": None}, ("session_id", "null")),
    ({"session_id": "x" * 101}, ("session_id", "max_length")),
    ({"session_id": 7}, ("session_id", "invalid")),
    ({"category": ""}, ("category", "blank")),
    ({"name": "   "}, ("name", "blank")),
    ({"data": None}, ("data", "null")),
    ({"data": {}}, ("data", "empty")),
    ({"data": [1]}, ("data", "invalid")),
    ({"timestamp": "2021-13-45 25:61:00"}, ("timestamp", "invalid")),
    ({"timestamp": 1609492527}, ("timestamp", "invalid")),
    ({"timestamp": "2099-01-01 00:00:00.000000"}, ("timestamp", "future")),
    ({"data": {"host": "h"}}, ("data.path", "required")),
    ({"data": {"host": "h", "path": 5}}, ("data.path", "type")),
    ({"name": "cta click"}, ("data.element", "required")),
])
def test_each_rule_names_its_field_and_code(change, expected):
    assert codes({**VALID, **change}) == {expected}


def test_every_invalid_field_is_reported_not_just_the_first():
    found = codes({**VALID, "category": "", "data": None, "timestamp": "nope"})
    assert found == {("category", "blank"), ("data", "null"), ("timestamp", "invalid")}


def test_skew_is_configurable_and_iso_timestamps_with_offsets_work():
    soon = {**VALID, "timestamp": "2027-01-15 08:00:30"}  # 30 s after NOW
    assert check(soon, received=1_800_000_000.0, max_skew=60, registry=registry()).__class__ is Checked
    assert not isinstance(check(soon, received=1_800_000_000.0, max_skew=10, registry=registry()), Checked)
    iso = check({**VALID, "timestamp": "2021-01-01T10:15:27.243860+01:00"}, received=NOW, max_skew=0,
                registry=registry())
    assert isinstance(iso, Checked) and iso.timestamp == check(VALID, received=NOW, max_skew=0, registry=registry()).timestamp


def test_unknown_types_get_the_generic_checks_only():
    assert codes({**VALID, "category": "video", "name": "play", "data": {"anything": [1, 2]}}) == set()


def test_a_schema_that_is_not_json_schema_is_refused_with_its_type():
    with pytest.raises(ValueError, match="'video'/'play'"):
        registry().add("video", "play", {"type": "no-such-type"})


def test_form_submit_needs_an_object():
    assert codes({**VALID, "category": "form interaction", "name": "submit",
                  "data": {"host": "h", "path": "/", "form": "John Doe"}}) == {("data.form", "type")}
