"""The audit trail: one append-only row per security-relevant action (logins, key creation and
revocation, role and policy changes, admin actions).

Rows are written in the caller's transaction, so an action and its audit row commit together. Details
are scrubbed before they are stored: fields named like secrets are dropped and anything that looks like
a key, token or password in a value is masked, so the trail never holds a secret.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.principal import Principal
from atrium.store.models import AuditEvent
from atrium.telemetry.logging import redact, request_id_var

_SECRET_FIELDS = ("password", "secret", "token", "raw_key", "api_key", "authorization", "credential")


def scrub(details: dict[str, Any] | None) -> dict[str, Any] | None:
    """``details`` without secret-named fields, with secret-looking values masked (recursively)."""
    if details is None:
        return None
    clean: dict[str, Any] = {}
    for name, value in details.items():
        if any(marker in name.lower() for marker in _SECRET_FIELDS):
            continue
        clean[name] = _scrub_value(value)
    return clean


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return scrub(value)
    if isinstance(value, list | tuple):
        return [_scrub_value(item) for item in value]
    return value


async def record(session: AsyncSession, action: str, *, actor: Principal | None = None,
                 org_id: str | None = None, target_type: str | None = None, target_id: str | None = None,
                 outcome: str = "success", details: dict[str, Any] | None = None,
                 ip: str | None = None) -> None:
    """Add an audit row to ``session``'s transaction. ``org_id`` defaults to the actor's org."""
    session.add(AuditEvent(
        org_id=org_id if org_id is not None else (actor.org_id if actor is not None else None),
        actor_user_id=actor.user_id if actor is not None else None,
        actor_key_id=actor.api_key_id if actor is not None else None,
        action=action, target_type=target_type, target_id=target_id, outcome=outcome,
        details=scrub(details), ip=ip, request_id=request_id_var.get()))
