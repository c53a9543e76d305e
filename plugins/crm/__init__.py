"""CRM integration (seed 000): internal Kafka topics in; the client's CRM and a public event stream out.

:mod:`.contracts` decodes the internal events; :mod:`.model` holds each user's
actor rules; :mod:`.delivery` sends CRM calls and public messages in order per
user; :mod:`.keystore` encrypts personal fields per user (erasure destroys the
key); :mod:`.mock_crm` is the client's API in memory; :mod:`.producer` stands
in for the event producer.
"""
