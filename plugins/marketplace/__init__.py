"""Marketplace: poll a provider's XML feed and serve ``GET /search`` over every plan ever on sale (seed 002).

:mod:`.feed` reads the XML safely; :mod:`.poller` turns changed plans into
events on each plan's actor (:mod:`.model`); :mod:`.search` answers from an
in-memory index; :mod:`.mock` stands in for the provider.
"""
