"""Invitations: the inviting organisation's view and the invitee's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from atrium.accounts.invitations import invitation_view
from atrium.accounts.principal import Role
from atrium.http.schemas.common import Timestamp, View

if TYPE_CHECKING:
    from atrium.store.models import Invitation, Membership

Status = Literal["pending", "accepted", "declined", "revoked", "expired"]


class InvitationView(View):
    id: str
    email: str
    role: Role
    division_id: str | None
    status: Status
    created_at: Timestamp | None
    expires_at: Timestamp | None
    answered_at: Timestamp | None
    invited_by_user_id: str | None
    invited_by_key_id: str | None


class InvitationList(View):
    invitations: list[InvitationView]
    next_offset: int | None


class InboxItem(View):
    """An invitation as its invitee sees it: which organisation offers what."""

    id: str
    org_id: str
    org_name: str
    role: Role
    division_id: str | None
    division_name: str | None
    status: Status
    created_at: Timestamp | None
    expires_at: Timestamp | None
    answered_at: Timestamp | None


class Inbox(View):
    invitations: list[InboxItem]


class InvitationAnswer(View):
    id: str
    status: Status
    answered_at: Timestamp | None

    @classmethod
    def of(cls, invitation: Invitation) -> InvitationAnswer:
        view = invitation_view(invitation)
        return cls(id=view["id"], status=view["status"], answered_at=view["answered_at"])


class NewMembership(View):
    org_id: str
    role: Role
    division_id: str | None


class AcceptedInvitation(InvitationAnswer):
    membership: NewMembership

    @classmethod
    def accepted(cls, invitation: Invitation, membership: Membership) -> AcceptedInvitation:
        answer = InvitationAnswer.of(invitation)
        return cls(id=answer.id, status=answer.status, answered_at=answer.answered_at,
                   membership=NewMembership(org_id=membership.org_id, role=membership.role,
                                            division_id=membership.division_id))
