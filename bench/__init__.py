"""Herald's benchmarks; run them as modules from the repository root (see README.md).

They must run as ``python -m bench.X``: run as files, ``bench/`` would come
first on ``sys.path`` and ``bench/engine.py`` / ``bench/http.py`` would shadow
the ``engine`` package and the standard library's ``http``.
"""
