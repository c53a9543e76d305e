"""The documentation: the README's two commands first, a site (mkdocs.yml, docs/) with every page in its
navigation and every setting on its settings page, and a strict build with no broken link, anchor or API
reference.

The code examples of the README and of every page run in tests/test_examples.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine._config import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
SETTINGS_PAGE = DOCS / "operations" / "settings.md"

# The README's two commands: install and serve on embedded defaults; install and run the tests.
SERVE = "python3 -m pip install -e . && herald serve"
TEST = "python3 -m pip install -e '.[test]' && python3 -m pytest"


def test_the_readme_starts_with_its_two_commands():
    blocks = re.findall(r"```\w*\n(.*?)```", README, re.S)
    assert [b.strip() for b in blocks[:2]] == [SERVE, TEST]
    assert README.index(blocks[0]) < README.index("\n## ")  # before any section
    assert TEST in (ROOT / ".ci" / "run").read_text()  # CI runs the README's test command


def test_the_readme_stays_short_and_its_links_resolve():
    assert len(README.splitlines()) <= 120, "the README is the two commands, what Herald is, a tour and links"
    links = [link.split("#")[0] for link in re.findall(r"\]\(([^)\s]+)\)", README) if "://" not in link]
    assert links, "the README links to the documentation"
    assert [link for link in links if not (ROOT / link).exists()] == []


def _nav_pages() -> list[str]:
    return re.findall(r"^\s*-\s.*?([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)


def test_every_page_is_in_the_navigation():
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    nav = _nav_pages()
    assert sorted(nav) == pages  # no page left out of the navigation, none listed that does not exist
    assert len(nav) == len(set(nav))


def test_every_setting_is_on_the_settings_page():
    """Each engine setting, and each ``HERALD_*`` variable the code reads or names, is in the settings table."""
    page = SETTINGS_PAGE.read_text()
    named = {s.env for s in SETTINGS}
    for path in [ROOT / "server.py", *(p for d in ("engine", "web", "plugins") for p in (ROOT / d).rglob("*.py"))]:
        if "tests" not in path.parts:
            named |= set(re.findall(r"\bHERALD_[A-Z][A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    named = {n for n in named if not n.endswith("_")}  # prefixes such as HERALD_<PLUGIN>_ in prose
    named -= {"HERALD_API"}  # a plugin module's attribute (docs/plugins.md), not a setting
    assert sorted(n for n in named if f"`{n}`" not in page) == []


def test_make_docs_serves_the_site():
    makefile = (ROOT / "Makefile").read_text()
    target = makefile.split("\ndocs:\n")[1].split("\n\n")[0]
    assert "'.[docs]'" in target and "mkdocs serve" in target


@pytest.mark.slow
def test_the_site_builds_strict(tmp_path):
    """``mkdocs build --strict``: a broken link or anchor, a page outside the navigation, or an API
    reference (``::: engine...``, ``[name][engine.Name]``) that does not resolve fails the build."""
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        pytest.skip("mkdocs is not installed (python3 -m pip install -e '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    site = tmp_path / "site"
    api = (site / "reference" / "engine" / "index.html").read_text()
    assert 'id="engine.Notify"' in api and 'id="engine.EventType"' in api  # rendered from the docstrings
    assert 'id="engine.testing.Simulation"' in (site / "reference" / "testing" / "index.html").read_text()
    assert 'id="engine.hookspecs.herald_event_types"' in (site / "reference" / "hooks" / "index.html").read_text()
    assert 'href="http://127.0.0.1:8000/docs"' in (site / "http-api" / "index.html").read_text()  # the server's OpenAPI page
