"""The error a plugin's declarations, or the states it left on disk, are refused with (one line)."""

from __future__ import annotations

__all__ = ["PluginError"]


class PluginError(Exception):
    """A plugin cannot be found, its declarations conflict, or its stored states cannot be read."""
