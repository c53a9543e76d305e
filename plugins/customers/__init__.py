"""Customers: customer.io-style summaries of attributes and events (seed 004).

Message lines (``attributes`` and ``event``) become per-customer summaries on
the customers' actors (:mod:`.model`, :mod:`.messages`); :mod:`.api` serves the
seed's ``/customers`` REST API and :mod:`.ui` a small web UI at ``/ui/customers``.
Files load in bulk with ``herald load customers FILE``.
"""

from .model import Customer

__all__ = ["Customer"]
