"""Generate customer.io message files of the seed's shape, with their expected summary.

Shaped like the assignment's second dataset by default: 10,000 users, 20
attributes each, 300,000 events, 10 % duplicated event lines, anonymous
events, attribute messages out of timestamp order (the newest value often
comes first), keys and values with spaces. Writes the messages file and a
verify CSV in the format ``shared/tools/verify_customers.py`` reads.

    python -m bench.gen_customers --out /tmp/messages.2.data --verify /tmp/verify.2.csv
"""

from __future__ import annotations

import argparse
import random
import sys
import uuid

import orjson

WORDS = ("backup", "compress", "connect", "navigate", "parse", "index", "quantify", "bypass", "hack", "override",
         "program", "reboot", "transmit", "calculate", "generate", "input", "synthesize", "copy")
COLOURS = ("lime", "coral", "indigo", "sienna", "teal", "salmon", "orchid", "peru", "tan", "navy", "plum", "khaki",
           "dark magenta", "spring green", "steel blue")
NAMES = ("Ana", "Ben", "Chloe", "Dev", "Eve", "Finn", "Gus", "Hana", "Ivo", "Jade", "Kai", "Lena", "Milo", "Nora")
CITIES = ("Lake Kilback", "Coralieborough", "Deangelofurt", "Port Amelia", "New Ross", "Vanessaborough")


def _attribute_names(rng: random.Random, n: int) -> list[str]:
    names = ["email", "created_at", "first_name", "last_name", "city", "ip"]
    while len(names) < n:
        a, b = rng.choice(WORDS + tuple(c.split()[0] for c in COLOURS)), rng.choice(COLOURS + NAMES)
        name = f"{a}{b.lower()}" if rng.random() < 0.8 else f"{a} {b.lower()}"
        if name not in names:
            names.append(name)
    return names


def _value(rng: random.Random, user: int, name: str) -> str:
    if name == "email":
        return f"{rng.choice(NAMES).lower()}{user}@example{rng.randint(1, 99)}.com"
    if name == "created_at":
        return str(rng.randint(1_540_000_000, 1_559_000_000))
    if name == "ip":
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    if name == "city":
        return rng.choice(CITIES)
    if name.endswith("name"):
        return rng.choice(NAMES)
    return f"{rng.choice(WORDS).title()}{rng.choice(NAMES)}" + (" Jr" if rng.random() < 0.05 else "")


def generate(out: str, verify: str | None, users: int, attrs: int, events: int, max_events: int, dupes: float,
             seed: int, anonymous: int = 600) -> dict[str, int]:
    rng = random.Random(seed)
    end = 1_560_980_000
    start = end - 1_320_000
    event_names = [f"{rng.choice(WORDS)}{rng.choice(COLOURS).replace(' ', '')}" for _ in range(max_events)]
    lines: list[bytes] = []
    latest: dict[int, dict[str, tuple[int, str]]] = {}
    counts: dict[int, dict[str, int]] = {}

    def attributes_line(user: int, values: dict[str, str], ts: int) -> bytes:
        return orjson.dumps({"data": values, "id": str(uuid.UUID(int=rng.getrandbits(128))), "timestamp": ts,
                             "type": "attributes", "user_id": str(user)}, option=orjson.OPT_SORT_KEYS)

    names = _attribute_names(rng, attrs)
    for user in range(1, users + 1):
        mine = latest.setdefault(user, {})
        # Several updates per user, in random timestamp order; the newest at the dataset's end time.
        for _ in range(rng.randint(20, 40)):
            ts = rng.randint(start, end - 1)
            values = {name: _value(rng, user, name) for name in rng.sample(names, rng.randint(1, 5))}
            lines.append(attributes_line(user, values, ts))
            for name, value in values.items():
                if name not in mine or mine[name][0] <= ts:
                    mine[name] = (ts, value)
        final = {name: _value(rng, user, name) for name in names}
        lines.append(attributes_line(user, final, end))
        for name, value in final.items():
            mine[name] = (end, value)
    for _ in range(events):
        user = rng.randint(1, users)
        name = rng.choice(event_names)
        payload = {f"{rng.choice(COLOURS)}{' ' if rng.random() < 0.1 else ''}": rng.choice(NAMES)}
        line = orjson.dumps({"data": payload, "id": str(uuid.UUID(int=rng.getrandbits(128))), "name": name,
                             "timestamp": rng.randint(start, end), "type": "event", "user_id": str(user)},
                            option=orjson.OPT_SORT_KEYS)
        lines.append(line)
        user_counts = counts.setdefault(user, {})
        user_counts[name] = user_counts.get(name, 0) + 1
        if rng.random() < dupes:
            lines.append(line)
    for _ in range(anonymous):
        lines.append(orjson.dumps({"data": {}, "id": str(uuid.UUID(int=rng.getrandbits(128))), "name": "page",
                                   "timestamp": rng.randint(start, end), "type": "event"},
                                  option=orjson.OPT_SORT_KEYS))
    # Shuffle everything but keep each user's final attributes in a block at the end (like the seed's files).
    finals = [line for line in lines if b'"timestamp":%d' % end in line and b'"attributes"' in line]
    final_set = set(map(id, finals))
    rest = [line for line in lines if id(line) not in final_set]
    rng.shuffle(rest)
    rng.shuffle(finals)
    cut = len(finals) // 10
    body = rest + finals[:cut]
    rng.shuffle(body)
    with open(out, "wb") as file:
        for line in body + finals[cut:]:
            file.write(line + b"\n")
    if verify:
        with open(verify, "w") as file:
            for user in sorted(latest, key=str):
                attributes = ",".join(f"{k}={v}" for k, (_, v) in sorted(latest[user].items()))
                events_part = ",".join(f"{k}={v}" for k, v in sorted(counts.get(user, {}).items()))
                file.write(f"{user},{attributes},{events_part}\n")
    return {"lines": len(body) + len(finals) - cut, "users": users}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--verify")
    parser.add_argument("--count", type=int, default=10_000, help="users")
    parser.add_argument("--attrs", type=int, default=20)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--maxevents", type=int, default=500, help="distinct event names")
    parser.add_argument("--dupes", type=float, default=10, help="percent of event lines duplicated")
    parser.add_argument("--seed", type=int, default=1560980000)
    args = parser.parse_args(argv)
    result = generate(args.out, args.verify, args.count, args.attrs, args.events, args.maxevents, args.dupes / 100,
                      args.seed)
    print(f"wrote {result['lines']:,} lines for {result['users']:,} users to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
