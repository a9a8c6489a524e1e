"""Account administration (``/api/v1/admin``): organisations, divisions, users, keys, the audit trail."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from atrium.accounts.principal import Role
from atrium.http.schemas.common import Timestamp, View


class OrgView(View):
    id: str
    name: str
    created_at: Timestamp | None


class CallerOrg(OrgView):
    """The caller's organisation, with the caller's role and scope in it."""

    role: Role
    division_id: str | None
    platform_admin: bool


class OrgList(View):
    organizations: list[OrgView]
    next_offset: int | None


class DivisionView(View):
    id: str
    name: str
    created_at: Timestamp | None


class DivisionList(View):
    divisions: list[DivisionView]
    next_offset: int | None


class MemberView(View):
    """A user (or service account) as a member of the organisation."""

    id: str
    email: str
    name: str
    role: Role
    division_id: str | None
    is_service: bool
    disabled: bool
    disabled_at: Timestamp | None
    home_org: bool
    has_password: bool
    created_at: Timestamp | None


class UserList(View):
    users: list[MemberView]
    next_offset: int | None


class ServiceAccountList(View):
    service_accounts: list[MemberView]
    next_offset: int | None


class KeyView(View):
    """Everything about an API key but its secret."""

    id: str
    name: str
    prefix: str
    role: Role
    user_id: str | None
    division_id: str | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    created_at: Timestamp | None
    expires_at: Timestamp | None
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None


class CreatedKey(KeyView):
    key: str = Field(description="The key in clear text: shown this once, stored only as a hash.")


class RotatedKey(CreatedKey):
    replaces: str = Field(description="The id of the key this one replaces (now revoked).")


class KeyList(View):
    keys: list[KeyView]
    next_offset: int | None


class CreatedOrg(OrgView):
    owner_key: CreatedKey | None


class AuditEvent(View):
    id: int
    action: str
    actor_user_id: str | None
    actor_key_id: str | None
    target_type: str | None
    target_id: str | None
    outcome: str
    details: dict[str, Any] | None
    ip: str | None
    request_id: str | None
    created_at: Timestamp | None


class AuditList(View):
    events: list[AuditEvent]
    next_cursor: int | None
