"""Push notifications: a user hears when a job finishes or a flow waits for input.

``ports.py`` (the Notifier port), ``webpush.py`` and ``fcm.py`` (its adapters), ``delivery.py`` (retries,
``Retry-After``, the endpoint policy against SSRF), ``devices.py`` (the owner's devices), ``service.py``
(the use cases and hooks), ``wiring.py`` (built once from the ``notifications`` settings). See
docs/notifications.md.
"""
