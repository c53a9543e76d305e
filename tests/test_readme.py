"""The README's plugin example works as written."""

import re
import types
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


async def test_readme_plugin_and_its_test_run(autojump_clock):
    blocks = python_blocks()
    plugin_src = next(b for b in blocks if "@hookimpl" in b)
    test_src = next(b for b in blocks if "Simulation(" in b)
    streaks = types.ModuleType("streaks")
    exec(compile(plugin_src, "README:plugin", "exec"), streaks.__dict__)
    namespace = {"streaks": streaks}
    exec(compile(test_src, "README:test", "exec"), namespace)
    await namespace["test_weekly_streak"](autojump_clock)
