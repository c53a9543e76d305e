"""Analytics: "The Eye" (seed 003). Trusted applications send page and form events per session.

Payloads are journaled and acknowledged at once, then checked (:mod:`.validation`:
generic rules plus a JSON Schema per event type) by the session actor's handler
(:mod:`.model`); valid events and one error row per invalid field land in an
indexed store (:mod:`.store`) served by :mod:`.api`. :mod:`.client` is a
reusable Python client.
"""
