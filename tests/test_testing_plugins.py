"""Herald's pytest plugins serve a package outside this repository: its tests get ``app_client``."""

from __future__ import annotations

from importlib.metadata import entry_points

PLUGIN = '''
import attrs
from quart import Blueprint
from engine import EventType, hookimpl
from web import json_response

@attrs.frozen
class Count:
    n: int = 0

@hookimpl
def herald_state_type():
    return Count

@hookimpl
def herald_event_types(config):
    return [EventType("tick", lambda state, event: (Count(state.n + 1), ()))]

@hookimpl
def herald_routes(context):
    bp = Blueprint("ticks", __name__)

    @bp.get("/ticks/<key>")
    async def ticks(key):
        state = context.state(key, "ticks")
        return json_response({"n": state.n if state else 0})

    return [bp]
'''

TEST = '''
import ticks

async def test_ticks(app_client):
    async with app_client([ticks], admin_token="a-long-admin-token") as (herald, client):
        auth = {"authorization": "Bearer a-long-admin-token"}
        event = {"type": "tick", "key": "k1", "timestamp": "2021-02-28T16:00:00Z"}
        assert (await client.post("/v1/event", json=event, headers=auth)).status_code == 202
        assert (await client.get("/ticks/k1")).json() == {"n": 1}
'''


def test_an_outside_package_tests_its_route_with_the_app_client_fixture(pytester):
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(ticks=PLUGIN, test_ticks=TEST)
    pytester.syspathinsert()
    installed = {ep.value for ep in entry_points(group="pytest11")}
    # As an installed Herald's entry points register them (an older install's metadata may miss one).
    extra = [arg for module in ("engine.testing", "web.testing") if module not in installed for arg in ("-p", module)]
    result = pytester.runpytest_inprocess(*extra, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
