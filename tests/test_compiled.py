"""The optional compiled build (mypyc, docs/operations/compiled.md): one list of hot modules, and
``herald --version`` saying truly whether they run compiled. The rest of the suite runs unchanged on
both builds (CI runs it again after ``make compiled``)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from engine._compiled import HOT_MODULES, build_description, compiled_modules

ROOT = Path(__file__).resolve().parent.parent


def _on_disk_compiled() -> list[str]:
    """The hot modules whose import resolves to an extension module rather than their ``.py``."""
    return [name for name in HOT_MODULES if not importlib.util.find_spec(name).origin.endswith(".py")]


def test_the_build_script_compiles_the_modules_the_engine_reports_on():
    spec = importlib.util.spec_from_file_location("mypyc_build", ROOT / "mypyc_build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert [path[: -len(".py")].replace("/", ".") for path in build.MODULES] == list(HOT_MODULES)
    assert all((ROOT / path).is_file() for path in build.MODULES)


def test_version_says_whether_the_hot_path_runs_compiled():
    expected = _on_disk_compiled()
    assert compiled_modules() == expected
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main(['--version']))"],
                            capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    line = result.stdout.strip()
    assert line.startswith("herald ") and line.endswith(f"({build_description()})")
    if not expected:
        assert "(pure Python)" in line
    elif len(expected) == len(HOT_MODULES):
        assert "(compiled with mypyc (all 6 hot modules))" in line
    else:
        assert all(name in line for name in expected)
