"""What an organisation's admins may do with conversations that are not theirs: list their metadata (never
their messages) and erase them, audited. An unscoped admin covers the organisation, a division admin the
conversations created in its division."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.audit import record
from atrium.accounts.principal import Principal
from atrium.conversations import repository as repo
from atrium.errors import Forbidden, NotFound
from atrium.store.models import Conversation


def _administered(principal: Principal) -> list[object]:
    if not principal.has_role("admin"):
        raise Forbidden("This needs the admin role.")
    conditions: list[object] = [Conversation.org_id == principal.org_id]
    if principal.division_id is not None:
        conditions.append(Conversation.division_id == principal.division_id)
    return conditions


async def list_all(session: AsyncSession, principal: Principal, *, user_id: str | None, limit: int,
                   offset: int) -> list[Conversation]:
    """The conversations ``principal`` administers (``user_id``: of that owner only), newest first."""
    query = select(Conversation).where(*_administered(principal))  # type: ignore[arg-type]
    if user_id is not None:
        query = query.where(Conversation.user_id == user_id)
    rows = await session.scalars(query.order_by(Conversation.updated_at.desc(), Conversation.id)
                                 .limit(limit).offset(offset))
    return list(rows)


async def erase(session: AsyncSession, principal: Principal, conversation_id: str, *,
                ip: str | None) -> list[str]:
    """Erase another user's conversation (or one's own), with an audit row naming its owner."""
    conversation = await session.scalar(
        select(Conversation).where(*_administered(principal), Conversation.id == conversation_id))  # type: ignore[arg-type]
    if conversation is None:
        raise NotFound("No such conversation.")
    await record(session, "conversation.erase", actor=principal, org_id=principal.org_id,
                 target_type="conversation", target_id=conversation.id,
                 details={"owner_user_id": conversation.user_id, "owner_key_id": conversation.api_key_id,
                          "via": principal.via}, ip=ip)
    return await repo.erase(session, conversation)
