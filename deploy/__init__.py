"""Deployment files (``nginx.conf``: the caching front) and the code that runs them in tests and benches."""
