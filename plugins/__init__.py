"""Herald's bundled plugins, one package per domain.

Each is registered in the ``herald`` entry-point group by Herald's own
distribution, exactly as a third-party plugin would be; the engine never
imports them.
"""
