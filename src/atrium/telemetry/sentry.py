"""Optional Sentry error reporting (``telemetry.sentry.dsn``; unset: the SDK is not even imported).

Errors reach Sentry through the logs: every record logged at ERROR (an unhandled exception answered 500,
a failed job, a crashed model...) becomes an event, records at INFO and above its breadcrumbs. Those
records are redacted when created (``telemetry/logging.py``); ``before_send`` redacts the whole event
again (exception values, breadcrumbs, tags, contexts) and tags it with the request id and trace id. No
library is patched beyond ``logging`` (no automatic integrations), no request body, cookie, user or local
variable is sent, and Sentry's own tracing stays off (traces go through OpenTelemetry).

The Sentry SDK keeps its client process-wide (that is how it works); :class:`SentryReporter` installs it
and, on ``close``, flushes and removes it again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

from atrium.telemetry.logging import redact_value, request_id_var
from atrium.telemetry.otel import current_trace_ids
from atrium.telemetry.settings import SentrySettings

if TYPE_CHECKING:
    from sentry_sdk._types import DataCollectionUserOptions

log = logging.getLogger(__name__)


_OFF = {"mode": "off"}
# What the SDK may gather by itself: no user, cookie, header, body, query, SQL data, model input or output,
# frame variable.
_NOTHING_PRIVATE: dict[str, Any] = {
    "user_info": False, "cookies": _OFF, "http_headers": {"request": _OFF}, "http_bodies": [],
    "url_query_params": _OFF, "gen_ai": {"inputs": False, "outputs": False}, "database_query_data": False,
    "stack_frame_variables": False}


def before_send(event: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any] | None:
    """The event with every credential masked, and tagged with the request and trace ids."""
    cleaned = redact_value(event)
    if not isinstance(cleaned, dict):
        return None
    tags = cleaned.setdefault("tags", {})
    request_id = request_id_var.get()
    if request_id is not None and isinstance(tags, dict):
        tags["request_id"] = request_id
    ids = current_trace_ids()
    if ids is not None and isinstance(tags, dict):
        tags["trace_id"], tags["span_id"] = ids
    return cleaned


class SentryReporter:
    """The Sentry client of this process, installed from ``settings`` (a DSN is required)."""

    def __init__(self, settings: SentrySettings) -> None:
        import sentry_sdk
        from sentry_sdk.integrations.dedupe import DedupeIntegration
        from sentry_sdk.integrations.logging import LoggingIntegration

        assert settings.dsn is not None
        sentry_sdk.init(
            dsn=settings.dsn.get_secret_value(), environment=settings.environment, release=settings.release,
            default_integrations=False, auto_enabling_integrations=False,
            integrations=[LoggingIntegration(level=logging.INFO, event_level=logging.ERROR), DedupeIntegration()],
            before_send=before_send,  # type: ignore[arg-type]
            data_collection=cast("DataCollectionUserOptions", _NOTHING_PRIVATE), max_request_body_size="never",
            traces_sample_rate=None, attach_stacktrace=False)
        self.client = sentry_sdk.get_client()

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (blocking: call it from a thread), then uninstall the client."""
        import sentry_sdk

        try:
            self.client.flush(timeout=timeout_s)
            self.client.close(timeout=timeout_s)
        except Exception:
            log.warning("Sentry: events could not be sent at shutdown", exc_info=True)
        if sentry_sdk.get_client() is self.client:
            sentry_sdk.get_global_scope().set_client(None)
