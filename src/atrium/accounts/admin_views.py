"""How accounts look to a client (the admin API's JSON, ``atrium users|keys list --json``): never a
password hash, never a key's hash or raw value (except ``created_key_view``, shown once)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from atrium.accounts.admin_base import CreatedKey, Member, aware
from atrium.store.models import ApiKey, AuditEvent, Division, Organization


def iso(moment: datetime | None) -> str | None:
    return aware(moment).isoformat() if moment is not None else None


def org_view(org: Organization) -> dict[str, Any]:
    return {"id": org.id, "name": org.name, "created_at": iso(org.created_at)}


def division_view(division: Division) -> dict[str, Any]:
    return {"id": division.id, "name": division.name, "created_at": iso(division.created_at)}


def member_view(member: Member, org_id: str) -> dict[str, Any]:
    user, membership = member.user, member.membership
    return {"id": user.id, "email": user.email, "name": user.name, "role": membership.role,
            "division_id": membership.division_id, "is_service": user.is_service,
            "disabled": user.disabled_at is not None, "disabled_at": iso(user.disabled_at),
            "home_org": user.org_id == org_id, "has_password": user.password_hash is not None,
            "created_at": iso(user.created_at)}


def key_view(key: ApiKey, last_used_at: datetime | None = None) -> dict[str, Any]:
    """Everything about a key but its secret: never the raw key, never its hash."""
    return {"id": key.id, "name": key.name, "prefix": key.prefix, "role": key.role, "user_id": key.user_id,
            "division_id": key.division_id, "requests_per_minute": key.requests_per_minute,
            "tokens_per_minute": key.tokens_per_minute, "created_at": iso(key.created_at),
            "expires_at": iso(key.expires_at), "revoked_at": iso(key.revoked_at),
            "last_used_at": iso(last_used_at)}


def created_key_view(created: CreatedKey) -> dict[str, Any]:
    return {**key_view(created.row), "key": created.raw}


def audit_view(event: AuditEvent) -> dict[str, Any]:
    return {"id": event.id, "action": event.action, "actor_user_id": event.actor_user_id,
            "actor_key_id": event.actor_key_id, "target_type": event.target_type, "target_id": event.target_id,
            "outcome": event.outcome, "details": event.details, "ip": event.ip, "request_id": event.request_id,
            "created_at": iso(event.created_at)}
