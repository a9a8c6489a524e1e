"""Account administration (``/api/v1/admin``): organisations, divisions, users, keys, the audit trail."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from atrium.accounts.admin_views import created_key_view, member_view, org_view
from atrium.accounts.principal import Role
from atrium.http.schemas.common import Timestamp, View

if TYPE_CHECKING:
    from atrium.accounts.admin_base import CreatedKey as NewKey
    from atrium.accounts.admin_base import Member
    from atrium.accounts.principal import Principal
    from atrium.store.models import Organization


class OrgView(View):
    id: str
    name: str
    created_at: Timestamp | None


class CallerOrg(OrgView):
    """The caller's organisation, with the caller's role and scope in it."""

    role: Role
    division_id: str | None
    platform_admin: bool

    @classmethod
    def of_caller(cls, org: Organization, principal: Principal, *, platform_admin: bool) -> CallerOrg:
        return cls(**org_view(org), role=principal.role, division_id=principal.division_id,
                   platform_admin=platform_admin)


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

    @classmethod
    def of(cls, member: Member, org_id: str) -> MemberView:
        """``member`` as a member of ``org_id`` (``home_org``: whether that is the user's home)."""
        return cls.model_validate(member_view(member, org_id))


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

    @classmethod
    def created(cls, created: NewKey) -> CreatedKey:
        return cls(**created_key_view(created))


class RotatedKey(CreatedKey):
    replaces: str = Field(description="The id of the key this one replaces (now revoked).")

    @classmethod
    def rotated(cls, created: NewKey, replaces: str) -> RotatedKey:
        return cls(**created_key_view(created), replaces=replaces)


class KeyList(View):
    keys: list[KeyView]
    next_offset: int | None


class CreatedOrg(OrgView):
    owner_key: CreatedKey | None

    @classmethod
    def created(cls, org: Organization, owner_key: NewKey | None) -> CreatedOrg:
        return cls(**org_view(org), owner_key=CreatedKey.created(owner_key) if owner_key is not None else None)


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
