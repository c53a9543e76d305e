"""Screenshots of the operator console for the docs (docs/operations/console.md): the overview and an actor's page.

Starts ``herald serve`` (``bench.console.served``), sends it a couple of
minutes of varied fitness traffic (so the charts have a line), adds one actor
with a delivered congratulation and a pending nudge, and saves what headless
Chromium shows as ``docs/img/console-overview.png`` and ``docs/img/console-actor.png``.

    python -m bench.screenshots [--seconds 150]
"""

import sys

if not __package__:  # run as a file, bench/ would shadow the engine package (see bench/__init__.py)
    sys.exit("run from the repository root: python -m bench.screenshots")

import argparse
import math
import random
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from .console import served

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "img"
UTC = timezone.utc


def _at(minutes_ago: float = 0.0) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


def traffic(client: httpx.Client, seconds: float) -> None:
    """One batch a second, its size swinging between a few and a few hundred events; a bad event now and then."""
    rng = random.Random(3)
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        size = int(120 + 100 * math.sin(elapsed / 20) + rng.randrange(40))
        batch = []
        for _ in range(size):
            user = f"user-{rng.randrange(2000):04d}"
            kind = rng.random()
            if kind < 0.6:
                batch.append({"type": "app_launch", "user_id": user, "timestamp": _at()})
            elif kind < 0.95:
                program = f"p-{rng.randrange(5)}"
                batch += [{"type": "training_program_started", "user_id": user, "timestamp": _at(45),
                           "training_program_id": program, "training_program_title": "Core Blast"},
                          {"type": "training_program_finished", "user_id": user, "timestamp": _at(),
                           "training_program_id": program}]
            else:
                batch.append({"type": "training_program_started", "user_id": user, "timestamp": _at()})  # no program
        client.post("/v1/events", json=batch)
        time.sleep(max(0.0, 1 - (time.monotonic() - started - elapsed)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, served(Path(tmp)) as url, httpx.Client(base_url=url) as client:
        traffic(client, args.seconds)
        client.post("/v1/events", json=[
            {"type": "training_program_started", "user_id": "ada", "timestamp": _at(42), "training_program_id": "p-7",
             "training_program_title": "HIIT 45", "device_id": "ada-phone"},
            {"type": "training_program_finished", "user_id": "ada", "timestamp": _at(1), "training_program_id": "p-7"},
            {"type": "app_launch", "user_id": "ada", "timestamp": _at()},
        ])
        time.sleep(11)  # one more sample of the rates (every 10 s), with the deliveries done
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                         args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
            page.goto(url + "/ui")
            page.screenshot(path=str(IMAGES / "console-overview.png"), full_page=True)
            page.goto(url + "/ui/actors/ada")
            page.screenshot(path=str(IMAGES / "console-actor.png"), full_page=True)
            browser.close()
    print(f"wrote {IMAGES / 'console-overview.png'} and {IMAGES / 'console-actor.png'}")


if __name__ == "__main__":
    main()
