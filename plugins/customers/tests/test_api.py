"""The /customers API and bulk loads through HTTP, in-process; restart through the journal."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from plugins.customers import hooks
from plugins.customers.tests.summaries import expected_summaries
from web.testing import app_client

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "customerio"
if not DATA.exists():  # the repository next to shared/ (CI), or inside it
    DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "customerio"

LINES = b"\n".join(orjson.dumps(m) for m in [
    {"id": "a1", "type": "attributes", "user_id": "2", "timestamp": 200, "data": {"email": "two@x", "city": "B"}},
    {"id": "a2", "type": "attributes", "user_id": "10", "timestamp": 100, "data": {"email": "ten@x"}},
    {"id": "a3", "type": "attributes", "user_id": "2", "timestamp": 100, "data": {"city": "older"}},
    {"id": "e1", "type": "event", "name": "page", "user_id": "2", "timestamp": 150, "data": {}},
    {"id": "e1", "type": "event", "name": "page", "user_id": "2", "timestamp": 150, "data": {}},
    {"id": "e2", "type": "event", "name": "page", "timestamp": 150, "data": {}},
    {"id": "a4", "type": "attributes", "user_id": "1", "timestamp": 100, "data": {"email": "one@x"}},
]) + b"\n"


def customers_app(**settings):
    return app_client([("customers", hooks)], **settings)


async def _loaded(client) -> dict:
    response = await client.post("/v1/load/customers", content=LINES, params={"first_line": 1})
    assert response.status_code == 200, response.text
    return response.json()


async def test_load_list_and_show():
    async with customers_app() as (_, client):
        report = await _loaded(client)
        assert report == {"lines": 7, "applied": 6, "skipped": {"anonymous": 1}, "errors": []}
        body = (await client.get("/customers")).json()
        assert [c["id"] for c in body["customers"]] == [1, 2, 10]  # integer order, not string order
        assert body["meta"] == {"page": 1, "per_page": 25, "total": 3}
        two = (await client.get("/customers/2")).json()["customer"]
        assert two == {"id": 2, "attributes": {"email": "two@x", "city": "B"}, "events": {"page": 1}, "last_updated": 200}
        assert (await client.get("/customers/1")).json()["customer"]["events"] == {}
        page = (await client.get("/customers", params={"page": 2, "per_page": 2})).json()
        assert [c["id"] for c in page["customers"]] == [10] and page["meta"] == {"page": 2, "per_page": 2, "total": 3}
        assert (await client.get("/customers", params={"page": 9})).json()["customers"] == []
        assert [c["id"] for c in (await client.get("/customers", params={"q": "TEN@"})).json()["customers"]] == [10]


async def test_bad_paging_and_unknown_ids_are_clear_4xx():
    async with customers_app() as (_, client):
        for params in ({"page": "0"}, {"page": "x"}, {"per_page": "-1"}, {"per_page": "100001"}):
            response = await client.get("/customers", params=params)
            assert response.status_code == 400
            assert response.json()["error"]["field"] == next(iter(params))
        for path in ("/customers/404", "/customers/abc"):
            response = await client.get(path)
            assert response.status_code == 404 and response.json()["message"] == "customer not found"
        assert (await client.post("/v1/load/nope", content=b"{}\n")).status_code == 404


async def test_create_update_delete():
    async with customers_app() as (herald, client):
        new = {"customer": {"id": 12345, "attributes": {"created_at": "1560964022", "email": "e@x", "first_name": "ex"}}}
        response = await client.post("/customers", json=new)
        assert response.status_code == 201
        created = response.json()["customer"]
        assert created["id"] == 12345 and created["events"] == {} and created["attributes"]["created_at"] == "1560964022"
        assert isinstance(created["last_updated"], int)

        assert (await client.post("/customers", json=new)).status_code == 409
        cases = [
            ({"customer": {"attributes": {"email": "e@x"}}}, "id"),
            ({"customer": {"id": "x1", "attributes": {"email": "e@x"}}}, "id"),
            ({"customer": {"id": 5, "attributes": {"first_name": "no email"}}}, "attributes.email"),
            ({"customer": {"id": 5, "attributes": {"email": "e@x", "age": 30}}}, "attributes.age"),
        ]
        for body, field in cases:
            response = await client.post("/customers", json=body)
            assert response.status_code == 400, body
            assert response.json()["error"]["field"] == field and response.json()["message"]
        assert (await client.post("/customers", content=b"{nope")).status_code == 400

        # An implausible created_at is replaced by the current time.
        odd = await client.post("/customers", json={"customer": {"id": 6, "attributes": {"email": "s@x", "created_at": "5"}}})
        assert int(odd.json()["customer"]["attributes"]["created_at"]) > 1_700_000_000

        patch = {"customer": {"attributes": {"ip": "127.0.0.1", "first_name": "real", "created_at": None}}}
        response = await client.patch("/customers/12345", json=patch)
        assert response.status_code == 200
        assert response.json()["customer"]["attributes"] == {"email": "e@x", "first_name": "real", "ip": "127.0.0.1"}
        assert (await client.patch("/customers/12345", json={"customer": {"attributes": {"email": None}}})).status_code == 400
        assert (await client.patch("/customers/12345", json={"customer": {"attributes": {"x": 1}}})).status_code == 400
        assert (await client.patch("/customers/999", json=patch)).status_code == 404

        assert (await client.delete("/customers/12345")).status_code == 204
        assert (await client.get("/customers/12345")).status_code == 404
        assert (await client.delete("/customers/12345")).status_code == 404
        assert "12345" not in herald.engine.keys("customers")


async def test_api_writes_and_loads_survive_a_restart(tmp_path):
    settings = {"durability": "batch", "data_dir": str(tmp_path)}
    async with customers_app(**settings) as (_, client):
        await _loaded(client)
        await client.patch("/customers/2", json={"customer": {"attributes": {"city": "edited", "email": "new@x"}}})
        await client.delete("/customers/10")
        await client.post("/customers", json={"customer": {"id": 77, "attributes": {"email": "s@x"}}})
        before = (await client.get("/customers", params={"per_page": 100})).json()
    async with customers_app(**settings) as (_, client):
        after = (await client.get("/customers", params={"per_page": 100})).json()
    assert after == before
    assert [c["id"] for c in after["customers"]] == [1, 2, 77]
    assert after["customers"][1]["attributes"] == {"email": "new@x", "city": "edited"}


async def test_raw_lines_as_ndjson_events_count_the_same():
    async with customers_app() as (_, client):
        response = await client.post("/v1/events", content=LINES, headers={"content-type": "application/x-ndjson"})
        assert response.status_code == 202
        body = response.json()
        assert body["accepted"] == 6 and body["duplicates"] == ["e1"]
        assert body["rejected"] == [{"line": 6, "error": {"code": "anonymous", "field": "user_id",
                                                          "message": "messages without user_id are ignored"}}]
        assert (await client.get("/customers/2")).json()["customer"]["events"] == {"page": 1}


async def _summaries_match(messages: Path, verify: Path) -> dict:
    """Load ``messages`` over HTTP and compare every customer with the verify CSV; return the load report."""
    async with customers_app() as (_, client):
        report = (await client.post("/v1/load/customers", content=messages.read_bytes(),
                                    headers={"content-type": "application/x-ndjson"})).json()
        customers = {c["id"]: c for c in (await client.get("/customers", params={"per_page": 100000})).json()["customers"]}
    assert {k: (c["attributes"], c["events"]) for k, c in customers.items()} == expected_summaries(verify)
    return report


async def test_a_generated_file_of_the_seeds_shape_matches_its_expected_summaries(tmp_path):
    """Out-of-order attributes, duplicated event lines, anonymous lines, names with spaces (bench.gen_customers
    computes the expected summaries on its own, as the seed's verify file does)."""
    from bench.gen_customers import generate

    messages, verify = tmp_path / "messages.data", tmp_path / "verify.csv"
    generated = generate(str(messages), str(verify), users=150, attrs=12, events=4000, max_events=40, dupes=0.1,
                         seed=4, anonymous=25)
    report = await _summaries_match(messages, verify)
    assert report["lines"] == generated["lines"] and report["skipped"] == {"anonymous": 25}


@pytest.mark.skipif(not (DATA / "messages.1.data").exists(), reason="optional: the seed's own sample (../shared/data/customerio) is not beside the repository")
async def test_the_seed_sample_file_matches_its_verify_file():
    report = await _summaries_match(DATA / "messages.1.data", DATA / "verify.1.csv")
    assert report["lines"] == 1044 and report["skipped"] == {"anonymous": 1}


async def test_load_lines_are_journaled_verbatim_and_compacted_with_their_event(tmp_path):
    import sqlite3

    settings = {"durability": "batch", "data_dir": str(tmp_path)}
    async with customers_app(**settings) as (herald, client):
        await _loaded(client)
        db = sqlite3.connect(tmp_path / "herald.db")
        assert db.execute("SELECT body FROM load_bodies").fetchall() == [(LINES,)]
        await herald.snapshot()
        assert db.execute("SELECT count(*) FROM load_bodies").fetchone() == (0,)
        db.close()
    async with customers_app(**settings) as (_, client):  # from the snapshot alone
        assert (await client.get("/customers/2")).json()["customer"]["events"] == {"page": 1}


async def test_serve_load_at_start_and_herald_load_into_a_data_dir(tmp_path):
    import trio

    from engine.cli import main

    data = tmp_path / "messages.data"
    data.write_bytes(LINES)
    # `herald serve --load customers=FILE`: loaded before the server says it is ready.
    async with customers_app(load=(("customers", str(data)),)) as (_, client):
        assert [c["id"] for c in (await client.get("/customers")).json()["customers"]] == [1, 2, 10]
    # `herald load customers FILE --data-dir DIR`, with no server running; then a server on that dir.
    status = await trio.to_thread.run_sync(main, ["load", "customers", str(data), "--data-dir", str(tmp_path / "d"),
                                                  "--quiet"])
    assert status == 0
    async with customers_app(durability="batch", data_dir=str(tmp_path / "d")) as (_, client):
        assert (await client.get("/customers/2")).json()["customer"]["events"] == {"page": 1}
