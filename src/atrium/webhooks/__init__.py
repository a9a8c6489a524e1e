"""Signed webhooks: an organisation's admins register URLs (``registry.py``) that are told of its jobs' ends,
signed in the Standard Webhooks format and sent through the egress guard (``dispatch.py``)."""
