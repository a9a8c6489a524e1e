"""Account administration under ``/api/v1/admin``: the caller's organisation (and, for the platform
admin, every organisation), divisions, users, memberships, service accounts, API keys and the audit trail.

Every route needs the admin role; the finer rules (owners, divisions, tenants) live in
``atrium.accounts.admin``. See docs/accounts.md.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator

from atrium.accounts.admin import KeySpec, UserChanges
from atrium.accounts.admin_views import audit_view, division_view, key_view, org_view
from atrium.accounts.invitations import invitation_view
from atrium.accounts.passwords import MAX_PASSWORD_CHARS
from atrium.accounts.principal import Role
from atrium.http.deps import AccountsDep, ClientIp, Offset, PrincipalDep, ResourceId, require_role
from atrium.http.schemas import accounts as views
from atrium.http.schemas.errors import AUTHENTICATED, BODY, error_responses
from atrium.http.schemas.invitations import InvitationView

router = APIRouter(prefix="/api/v1/admin", tags=["accounts"], dependencies=[require_role("admin")],
                   responses=AUTHENTICATED)
_NOT_FOUND = error_responses(404)
_CONFLICT = error_responses(404, 409)  # 404: a division or user named in the body or path
_CREATE = {**BODY, **error_responses(409)}

ServiceRole = Literal["admin", "member", "viewer"]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Email = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=320)]
Password = Annotated[SecretStr, Field(min_length=8, max_length=MAX_PASSWORD_CHARS)]
ObjectId = Annotated[str, Field(min_length=1, max_length=64)]
Limit = Annotated[int, Query(ge=1, le=200)]
MAX_CURSOR = 2**63 - 1  # an audit event id is a 64-bit integer: a larger cursor would overflow the query


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrgCreate(Body):
    name: Name
    owner_key: bool = False  # also return an owner API key for the new organisation (shown once)


class DivisionCreate(Body):
    name: Name


class UserCreate(Body):
    email: Email
    name: Name
    role: Role = "member"
    password: Password | None = None
    division_id: ObjectId | None = None


class UserPatch(Body):
    name: Name | None = None
    role: Role | None = None
    division_id: ObjectId | None = None  # null clears it
    disabled: bool | None = None
    password: Password | None = None  # a reset: the user's sessions end


class MembershipCreate(Body):
    email: Email
    role: Role = "member"
    division_id: ObjectId | None = None


class ServiceAccountCreate(Body):
    name: Name
    role: ServiceRole = "member"
    division_id: ObjectId | None = None


class KeyCreate(Body):
    name: Name
    role: Role | None = None
    user_id: ObjectId | None = None
    service_account_id: ObjectId | None = None
    division_id: ObjectId | None = None
    expires_in_days: int | None = Field(None, ge=1, le=3650)
    expires_at: datetime | None = None
    requests_per_minute: int | None = Field(None, ge=1, le=1_000_000)
    tokens_per_minute: int | None = Field(None, ge=1, le=1_000_000_000)

    @model_validator(mode="after")
    def _one_of_each(self) -> KeyCreate:
        if self.user_id is not None and self.service_account_id is not None:
            raise ValueError("give user_id or service_account_id, not both")
        if self.expires_in_days is not None and self.expires_at is not None:
            raise ValueError("give expires_in_days or expires_at, not both")
        return self

    def spec(self) -> KeySpec:
        expires_at = self.expires_at
        if self.expires_in_days is not None:
            expires_at = datetime.now(UTC) + timedelta(days=self.expires_in_days)
        elif expires_at is not None and expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        return KeySpec(name=self.name, role=self.role, user_id=self.service_account_id or self.user_id,
                       service_account=self.service_account_id is not None, division_id=self.division_id,
                       expires_at=expires_at, requests_per_minute=self.requests_per_minute,
                       tokens_per_minute=self.tokens_per_minute)


# -- organisations ---------------------------------------------------------------------------------------

@router.get("/org", response_model=views.CallerOrg)
async def get_org(principal: PrincipalDep, accounts: AccountsDep, ip: ClientIp) -> views.CallerOrg:
    """The caller's organisation, with the caller's role and scope in it."""
    async with accounts.administer(principal, ip=ip) as admin:
        org = await admin.get_org(principal.org_id)
        platform = await admin.is_platform_admin()
    return views.CallerOrg.of_caller(org, principal, platform_admin=platform)


@router.post("/orgs", status_code=201, response_model=views.CreatedOrg, responses=_CREATE)
async def create_org(body: OrgCreate, principal: PrincipalDep, accounts: AccountsDep,
                     ip: ClientIp) -> views.CreatedOrg:
    """A new organisation (platform admin only); the caller becomes its owner."""
    async with accounts.administer(principal, ip=ip) as admin:
        org, key = await admin.create_org(body.name, owner_key=body.owner_key)
    return views.CreatedOrg.created(org, key)


@router.get("/orgs", response_model=views.OrgList)
async def list_orgs(principal: PrincipalDep, accounts: AccountsDep, ip: ClientIp, limit: Limit = 50,
                    offset: Offset = 0) -> views.OrgList:
    async with accounts.administer(principal, ip=ip) as admin:
        page = await admin.list_orgs(limit=limit, offset=offset)
    return views.OrgList(organizations=[views.OrgView.model_validate(org_view(org)) for org in page.items],
                         next_offset=page.next_offset)


# -- divisions -------------------------------------------------------------------------------------------

@router.post("/divisions", status_code=201, response_model=views.DivisionView, responses=_CREATE)
async def create_division(body: DivisionCreate, principal: PrincipalDep, accounts: AccountsDep,
                          ip: ClientIp) -> views.DivisionView:
    async with accounts.administer(principal, ip=ip) as admin:
        division = await admin.create_division(principal.org_id, body.name)
    return views.DivisionView.model_validate(division_view(division))


@router.delete("/divisions/{division_id}", status_code=204, response_class=Response, responses=_CONFLICT)
async def delete_division(division_id: ResourceId, principal: PrincipalDep, accounts: AccountsDep,
                          ip: ClientIp) -> None:
    async with accounts.administer(principal, ip=ip) as admin:
        await admin.delete_division(principal.org_id, division_id)


@router.get("/divisions", response_model=views.DivisionList)
async def list_divisions(principal: PrincipalDep, accounts: AccountsDep, ip: ClientIp, limit: Limit = 50,
                         offset: Offset = 0) -> views.DivisionList:
    async with accounts.administer(principal, ip=ip) as admin:
        page = await admin.list_divisions(principal.org_id, limit=limit, offset=offset)
    divisions = [views.DivisionView.model_validate(division_view(item)) for item in page.items]
    return views.DivisionList(divisions=divisions, next_offset=page.next_offset)


# -- users, memberships, service accounts ----------------------------------------------------------------

@router.post("/users", status_code=201, response_model=views.MemberView, responses={**BODY, **_CONFLICT})
async def create_user(body: UserCreate, principal: PrincipalDep, accounts: AccountsDep,
                      ip: ClientIp) -> views.MemberView:
    async with accounts.administer(principal, ip=ip) as admin:
        member = await admin.create_user(
            principal.org_id, email=body.email, name=body.name, role=body.role, division_id=body.division_id,
            password=body.password.get_secret_value() if body.password is not None else None)
    return views.MemberView.of(member, principal.org_id)


@router.get("/users", response_model=views.UserList)
async def list_users(principal: PrincipalDep, accounts: AccountsDep, ip: ClientIp, limit: Limit = 50,
                     offset: Offset = 0) -> views.UserList:
    async with accounts.administer(principal, ip=ip) as admin:
        page = await admin.list_users(principal.org_id, service=False, limit=limit, offset=offset)
    return views.UserList(users=[views.MemberView.of(m, principal.org_id) for m in page.items],
                          next_offset=page.next_offset)


@router.get("/users/{user_id}", response_model=views.MemberView, responses=_NOT_FOUND)
async def get_user(user_id: ResourceId, principal: PrincipalDep, accounts: AccountsDep,
                   ip: ClientIp) -> views.MemberView:
    async with accounts.administer(principal, ip=ip) as admin:
        return views.MemberView.of(await admin.get_user(principal.org_id, user_id), principal.org_id)


@router.patch("/users/{user_id}", response_model=views.MemberView, responses={**BODY, **_CONFLICT})
async def update_user(user_id: ResourceId, body: UserPatch, principal: PrincipalDep, accounts: AccountsDep,
                      ip: ClientIp) -> views.MemberView:
    changes = UserChanges(name=body.name, role=body.role, division_id=body.division_id,
                          set_division="division_id" in body.model_fields_set, disabled=body.disabled,
                          password=body.password.get_secret_value() if body.password is not None else None)
    async with accounts.administer(principal, ip=ip) as admin:
        member = await admin.update_user(principal.org_id, user_id, changes)
    return views.MemberView.of(member, principal.org_id)


@router.delete("/users/{user_id}", status_code=204, response_class=Response, responses=_CONFLICT)
async def delete_user(user_id: ResourceId, principal: PrincipalDep, accounts: AccountsDep, ip: ClientIp) -> None:
    """In the user's home organisation: delete the account. Elsewhere: remove them from this organisation."""
    async with accounts.administer(principal, ip=ip) as admin:
        await admin.delete_user(principal.org_id, user_id)


@router.post("/memberships", status_code=202, response_model=InvitationView, responses={**BODY, **_CONFLICT})
async def add_membership(body: MembershipCreate, principal: PrincipalDep, accounts: AccountsDep,
                         ip: ClientIp) -> InvitationView:
    """Invite whoever holds ``email`` to a role here (as ``POST /api/v1/admin/invitations``): nothing
    changes until that user accepts, and the answer is the same whether or not the email has an account."""
    async with accounts.administer(principal, ip=ip) as admin:
        invitation = await admin.add_membership(principal.org_id, email=body.email, role=body.role,
                                                division_id=body.division_id)
    return InvitationView.model_validate(invitation_view(invitation))


@router.delete("/memberships/{user_id}", status_code=204, response_class=Response, responses=_CONFLICT)
async def remove_membership(user_id: ResourceId, principal: PrincipalDep, accounts: AccountsDep,
                            ip: ClientIp) -> None:
    async with accounts.administer(principal, ip=ip) as admin:
        await admin.remove_membership(principal.org_id, user_id)


@router.post("/service-accounts", status_code=201, response_model=views.MemberView, responses={**BODY, **_CONFLICT})
async def create_service_account(body: ServiceAccountCreate, principal: PrincipalDep, accounts: AccountsDep,
                                 ip: ClientIp) -> views.MemberView:
    async with accounts.administer(principal, ip=ip) as admin:
        member = await admin.create_service_account(principal.org_id, name=body.name, role=body.role,
                                                    division_id=body.division_id)
    return views.MemberView.of(member, principal.org_id)


@router.get("/service-accounts", response_model=views.ServiceAccountList)
async def list_service_accounts(principal: PrincipalDep, accounts: AccountsDep, ip: ClientIp,
                                limit: Limit = 50, offset: Offset = 0) -> views.ServiceAccountList:
    async with accounts.administer(principal, ip=ip) as admin:
        page = await admin.list_users(principal.org_id, service=True, limit=limit, offset=offset)
    return views.ServiceAccountList(service_accounts=[views.MemberView.of(m, principal.org_id) for m in page.items],
                                    next_offset=page.next_offset)


# -- API keys --------------------------------------------------------------------------------------------

@router.post("/keys", status_code=201, response_model=views.CreatedKey, responses={**BODY, **_NOT_FOUND})
async def create_key(body: KeyCreate, principal: PrincipalDep, accounts: AccountsDep,
                     ip: ClientIp) -> views.CreatedKey:
    """A new key; ``key`` in the answer is its only appearance in clear text."""
    async with accounts.administer(principal, ip=ip) as admin:
        created = await admin.create_key(principal.org_id, body.spec())
    return views.CreatedKey.created(created)


@router.get("/keys", response_model=views.KeyList)
async def list_keys(principal: PrincipalDep, accounts: AccountsDep, ip: ClientIp, limit: Limit = 50,
                    offset: Offset = 0, include_revoked: bool = False) -> views.KeyList:
    async with accounts.administer(principal, ip=ip) as admin:
        page = await admin.list_keys(principal.org_id, include_revoked=include_revoked, limit=limit,
                                     offset=offset)
    keys = [views.KeyView.model_validate(key_view(key, used)) for key, used in page.items]
    return views.KeyList(keys=keys, next_offset=page.next_offset)


@router.delete("/keys/{key_id}", status_code=204, response_class=Response, responses=_NOT_FOUND)
async def revoke_key(key_id: ResourceId, principal: PrincipalDep, accounts: AccountsDep, ip: ClientIp) -> None:
    """Revoke a key; every replica refuses it from the moment this answers."""
    async with accounts.administer(principal, ip=ip) as admin:
        await admin.revoke_key(principal.org_id, key_id)


@router.post("/keys/{key_id}/rotate", status_code=201, response_model=views.RotatedKey, responses=_NOT_FOUND)
async def rotate_key(key_id: ResourceId, principal: PrincipalDep, accounts: AccountsDep,
                     ip: ClientIp) -> views.RotatedKey:
    """Revoke a key and issue its replacement (same settings); the new ``key`` is shown once."""
    async with accounts.administer(principal, ip=ip) as admin:
        created = await admin.rotate_key(principal.org_id, key_id)
    return views.RotatedKey.rotated(created, key_id)


# -- audit -----------------------------------------------------------------------------------------------

@router.get("/audit", response_model=views.AuditList)
async def list_audit(principal: PrincipalDep, accounts: AccountsDep, ip: ClientIp, limit: Limit = 50,
                     cursor: Annotated[int | None, Query(ge=1, le=MAX_CURSOR)] = None,
                     action: Annotated[str | None, Query(max_length=100,
                                                         pattern=r"^[a-z_]+(\.[a-z_]+)*(\.\*)?$")] = None,
                     ) -> views.AuditList:
    """The organisation's audit trail, newest first. ``action``: exact (``key.create``) or a prefix
    (``key.*``); ``cursor``: the ``next_cursor`` of the previous page."""
    async with accounts.administer(principal, ip=ip) as admin:
        events, next_cursor = await admin.list_audit(principal.org_id, action=action, before=cursor, limit=limit)
    return views.AuditList(events=[views.AuditEvent.model_validate(audit_view(event)) for event in events],
                           next_cursor=next_cursor)
