"""Invitations: how a user of another organisation joins this one (see ``atrium.accounts.invitations``).

The inviting organisation's admins (``/api/v1/admin/invitations``): invite an email (202, the same answer
whether or not it has an account; never the owner role), list, revoke. The invitee, with any credential of
their user (``/api/v1/invitations``): list their pending invitations, accept (the membership is created),
decline. See docs/accounts.md.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from atrium.accounts.admin import AccountAdmin, administer
from atrium.accounts.invitations import Invitee, answering, inbox_view, invitation_view
from atrium.accounts.principal import Principal
from atrium.container import Services
from atrium.http.deps import Offset, PrincipalDep, ResourceId, ServicesDep, require_role
from atrium.http.routes.accounts import Body, Email, ObjectId
from atrium.http.schemas import invitations as views
from atrium.http.schemas.errors import AUTHENTICATED, BODY, error_responses

router = APIRouter(tags=["invitations"], responses=AUTHENTICATED)
_NOT_FOUND = error_responses(404)
_CONFLICT = error_responses(404, 409)
_admins = [require_role("admin")]

InvitedRole = Literal["owner", "admin", "member", "viewer"]  # owner: refused with 403, not a schema error
Status = Literal["pending", "accepted", "declined", "revoked", "expired"]


class InvitationCreate(Body):
    email: Email
    role: InvitedRole = "member"
    division_id: ObjectId | None = None


def _ip(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


def _admin(services: Services, principal: Principal,
           request: Request) -> AbstractAsyncContextManager[AccountAdmin]:
    return administer(services.db, services.authenticator, services.sessions.passwords, principal,
                      ip=_ip(request))


def _invitee(services: Services, principal: Principal, request: Request) -> AbstractAsyncContextManager[Invitee]:
    return answering(services.db, services.authenticator, principal, ip=_ip(request))


# -- the inviting organisation ---------------------------------------------------------------------------

@router.post("/api/v1/admin/invitations", status_code=202, dependencies=_admins, response_model=views.InvitationView,
             responses={**BODY, **_CONFLICT})
async def create_invitation(body: InvitationCreate, principal: PrincipalDep, services: ServicesDep,
                            request: Request) -> dict[str, Any]:
    """Offer a role here to whoever holds ``email``; nothing changes until that user accepts."""
    async with _admin(services, principal, request) as admin:
        invitation = await admin.invite(principal.org_id, email=body.email, role=body.role,
                                        division_id=body.division_id)
    return invitation_view(invitation)


@router.get("/api/v1/admin/invitations", dependencies=_admins, response_model=views.InvitationList)
async def list_invitations(principal: PrincipalDep, services: ServicesDep, request: Request,
                           status: Status | None = None, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                           offset: Offset = 0) -> dict[str, Any]:
    async with _admin(services, principal, request) as admin:
        page = await admin.list_invitations(principal.org_id, status=status, limit=limit, offset=offset)
    return {"invitations": [invitation_view(item) for item in page.items], "next_offset": page.next_offset}


@router.delete("/api/v1/admin/invitations/{invitation_id}", status_code=204, dependencies=_admins,
               responses=_CONFLICT)
async def revoke_invitation(invitation_id: ResourceId, principal: PrincipalDep, services: ServicesDep,
                            request: Request) -> Response:
    async with _admin(services, principal, request) as admin:
        await admin.revoke_invitation(principal.org_id, invitation_id)
    return Response(status_code=204)


# -- the invitee -----------------------------------------------------------------------------------------

@router.get("/api/v1/invitations", response_model=views.Inbox)
async def my_invitations(principal: PrincipalDep, services: ServicesDep, request: Request) -> dict[str, Any]:
    """The caller's user's pending invitations, from every organisation."""
    async with _invitee(services, principal, request) as invitee:
        found = await invitee.mine()
    return {"invitations": [inbox_view(*item) for item in found]}


@router.post("/api/v1/invitations/{invitation_id}/accept", response_model=views.AcceptedInvitation,
             responses=_CONFLICT)
async def accept_invitation(invitation_id: ResourceId, principal: PrincipalDep, services: ServicesDep,
                            request: Request) -> dict[str, Any]:
    """Join the inviting organisation with the invited role (and division); log in there to act in it."""
    async with _invitee(services, principal, request) as invitee:
        invitation, membership = await invitee.accept(invitation_id)
        view = invitation_view(invitation)
    return {"id": view["id"], "status": view["status"], "answered_at": view["answered_at"],
            "membership": {"org_id": membership.org_id, "role": membership.role,
                           "division_id": membership.division_id}}


@router.post("/api/v1/invitations/{invitation_id}/decline", response_model=views.InvitationAnswer,
             responses=_CONFLICT)
async def decline_invitation(invitation_id: ResourceId, principal: PrincipalDep, services: ServicesDep,
                             request: Request) -> dict[str, Any]:
    async with _invitee(services, principal, request) as invitee:
        invitation = await invitee.decline(invitation_id)
        view = invitation_view(invitation)
    return {"id": view["id"], "status": view["status"], "answered_at": view["answered_at"]}
