"""A file loaded in chunks (engine/_bulk.py): no snapshot between its chunks, one after the last."""

from __future__ import annotations

import orjson
import trio

from engine import Config
from engine.host import Herald
from engine._bulk import load_file
from plugins.customers import hooks as customers


def _lines(n: int) -> bytes:
    return b"".join(orjson.dumps({"id": f"m{i}", "type": "attributes", "user_id": str(i % 40 + 1),
                                  "data": {"seen": str(i)}, "timestamp": 1_500_000_000 + i}) + b"\n"
                    for i in range(n))


async def test_a_file_load_snapshots_once_after_its_last_chunk(tmp_path):
    path = tmp_path / "messages.data"
    path.write_bytes(_lines(2_000))
    config = Config(data_dir=str(tmp_path / "data"), durability="batch", snapshot_every=100, log_level="WARNING")
    herald = Herald(config, customers_host(config))
    taken: list[int] = []
    snapshot = herald.snapshot

    async def counted():
        taken.append(herald.seq)
        return await snapshot()

    herald.snapshot = counted  # type: ignore[method-assign]
    async with herald.running():
        await herald.wait_ready()
        report = await load_file(herald, "customers", path, chunk_bytes=8_192)
        assert report.applied == 2_000 and herald.seq > 5  # many chunks, each over snapshot_every lines
        assert taken == []  # none started between the chunks
        with trio.fail_after(30):
            while herald.snapshot_seq < herald.seq:
                await trio.sleep(0.01)
        assert taken == [herald.seq]  # one, covering the whole file
        state = herald.engine.actor("7").states["customers"]
    again = Herald(config, customers_host(config))
    async with again.running():
        await again.wait_ready()
        assert again.progress["to_replay"] == 0
        assert again.engine.actor("7").states["customers"] == state
        assert state.attributes == {"seen": "1966"}


def customers_host(config: Config):
    from engine.host import PluginHost

    return PluginHost.from_objects(config, [customers])
