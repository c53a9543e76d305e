"""The optional compiled build: the engine's hot path compiled with mypyc, in place.

    python3 mypyc_build.py            # compile (needs mypy and a C compiler: pip install -e '.[compiled]')
    python3 mypyc_build.py --clean    # back to pure Python: remove the compiled modules

``make compiled`` and ``make pure`` run these. Each module below gets an extension module next to its
``.py`` (Python imports the extension first), and all of them share one library,
``engine/_native__mypyc*.so``; ``herald --version`` says which modules run compiled. A plain
``pip install -e .`` never runs this: Herald is pure Python unless this is run, and the same code and
tests run both ways (docs/operations/compiled.md).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys

#: The modules compiled: the path of every event (parse, apply, the timers, the actors, the clock) and
#: the bundled fitness plugin's rules. Keep in step with ``engine._compiled.HOT_MODULES``.
MODULES = (
    "engine/_actor.py",
    "engine/_clock.py",
    "engine/_timers.py",
    "engine/_event.py",
    "engine/_engine.py",
    "plugins/fitness/rules.py",
)
#: The library the compiled modules share (one group, so that they call each other natively).
GROUP = "engine._native"
BUILD_DIR = "build/mypyc"


def _compiled_files() -> list[str]:
    found = glob.glob("engine/_native__mypyc*.so") + glob.glob("engine/_native__mypyc*.pyd")
    for path in MODULES:
        stem = path[: -len(".py")]
        found += glob.glob(stem + ".*.so") + glob.glob(stem + ".*.pyd")
    return sorted(found)


def clean() -> None:
    """Remove the compiled modules and the build directory: Herald runs as pure Python again."""
    for path in _compiled_files():
        os.remove(path)
        print(f"removed {path}")
    shutil.rmtree(BUILD_DIR, ignore_errors=True)


def build() -> None:
    try:
        from mypyc.build import mypycify
    except ImportError:
        sys.exit("mypyc is not installed: pip install -e '.[compiled]' (it comes with mypy)")
    from setuptools import Distribution

    clean()
    # mypy type-checks what the modules import too; only the compiled modules' own typing must be clean.
    extensions = mypycify(["--follow-imports=silent", *MODULES], opt_level="3", group_name=GROUP,
                          target_dir=BUILD_DIR)
    dist = Distribution({"name": "herald-compiled", "ext_modules": extensions})
    command = dist.get_command_obj("build_ext")
    command.inplace = True
    command.build_temp = os.path.join(BUILD_DIR, "temp")
    dist.run_command("build_ext")
    print("compiled: " + ", ".join(_compiled_files()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules (back to pure Python)")
    args = parser.parse_args()
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    clean() if args.clean else build()


if __name__ == "__main__":
    main()
