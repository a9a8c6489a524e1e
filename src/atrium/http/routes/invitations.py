"""Invitations: how a user of another organisation joins this one (see ``atrium.accounts.invitations``).

The inviting organisation's admins (``/api/v1/admin/invitations``): invite an email (202, the same answer
whether or not it has an account; never the owner role), list, revoke. The invitee, with any credential of
their user (``/api/v1/invitations``): list their pending invitations, accept (the membership is created),
decline. See docs/accounts.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from atrium.accounts.invitations import inbox_view, invitation_view
from atrium.http.deps import AccountsDep, ClientIp, Offset, PrincipalDep, ResourceId, require_role
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


# -- the inviting organisation ---------------------------------------------------------------------------

@router.post("/api/v1/admin/invitations", status_code=202, dependencies=_admins, response_model=views.InvitationView,
             responses={**BODY, **_CONFLICT})
async def create_invitation(body: InvitationCreate, principal: PrincipalDep, accounts: AccountsDep,
                            ip: ClientIp) -> views.InvitationView:
    """Offer a role here to whoever holds ``email``; nothing changes until that user accepts."""
    async with accounts.administer(principal, ip=ip) as admin:
        invitation = await admin.invite(principal.org_id, email=body.email, role=body.role,
                                        division_id=body.division_id)
    return views.InvitationView.model_validate(invitation_view(invitation))


@router.get("/api/v1/admin/invitations", dependencies=_admins, response_model=views.InvitationList)
async def list_invitations(principal: PrincipalDep, accounts: AccountsDep, ip: ClientIp,
                           status: Status | None = None, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                           offset: Offset = 0) -> views.InvitationList:
    async with accounts.administer(principal, ip=ip) as admin:
        page = await admin.list_invitations(principal.org_id, status=status, limit=limit, offset=offset)
    invitations = [views.InvitationView.model_validate(invitation_view(item)) for item in page.items]
    return views.InvitationList(invitations=invitations, next_offset=page.next_offset)


@router.delete("/api/v1/admin/invitations/{invitation_id}", status_code=204, dependencies=_admins,
               response_class=Response, responses=_CONFLICT)
async def revoke_invitation(invitation_id: ResourceId, principal: PrincipalDep, accounts: AccountsDep,
                            ip: ClientIp) -> None:
    async with accounts.administer(principal, ip=ip) as admin:
        await admin.revoke_invitation(principal.org_id, invitation_id)


# -- the invitee -----------------------------------------------------------------------------------------

@router.get("/api/v1/invitations", response_model=views.Inbox)
async def my_invitations(principal: PrincipalDep, accounts: AccountsDep, ip: ClientIp) -> views.Inbox:
    """The caller's user's pending invitations, from every organisation."""
    async with accounts.answering(principal, ip=ip) as invitee:
        found = await invitee.mine()
    return views.Inbox(invitations=[views.InboxItem.model_validate(inbox_view(*item)) for item in found])


@router.post("/api/v1/invitations/{invitation_id}/accept", response_model=views.AcceptedInvitation,
             responses=_CONFLICT)
async def accept_invitation(invitation_id: ResourceId, principal: PrincipalDep, accounts: AccountsDep,
                            ip: ClientIp) -> views.AcceptedInvitation:
    """Join the inviting organisation with the invited role (and division); log in there to act in it."""
    async with accounts.answering(principal, ip=ip) as invitee:
        invitation, membership = await invitee.accept(invitation_id)
        return views.AcceptedInvitation.accepted(invitation, membership)


@router.post("/api/v1/invitations/{invitation_id}/decline", response_model=views.InvitationAnswer,
             responses=_CONFLICT)
async def decline_invitation(invitation_id: ResourceId, principal: PrincipalDep, accounts: AccountsDep,
                             ip: ClientIp) -> views.InvitationAnswer:
    async with accounts.answering(principal, ip=ip) as invitee:
        return views.InvitationAnswer.of(await invitee.decline(invitation_id))
