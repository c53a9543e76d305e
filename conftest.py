"""Herald's pytest plugins for this checkout's own tests, when the installed metadata predates one.

Installed (``pip install -e .``), both come through the ``pytest11`` entry points of
pyproject.toml; a checkout run with ``PYTHONPATH`` over an older install registers
here what its metadata does not name yet.
"""

from importlib.metadata import entry_points

_installed = {ep.value for ep in entry_points(group="pytest11")}
pytest_plugins = [module for module in ("engine.testing", "web.testing") if module not in _installed] + [
    "pytester",  # tests/test_testing_plugins.py runs an outside package's tests
]
