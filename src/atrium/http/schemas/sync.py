"""``GET /api/v1/sync``: the changes of the caller's conversations and messages since a cursor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from atrium.http.schemas.common import Timestamp, View
from atrium.http.schemas.conversations import ConversationView, MessageView

if TYPE_CHECKING:
    from atrium.conversations.changes import SyncItem, SyncPage


class ChangeView(View):
    """One entity changed: upserted (its current state attached) or deleted (a conversation's deletion
    takes its messages with it)."""

    entity: Literal["conversation", "message"]
    id: str
    op: Literal["upsert", "delete"]
    conversation_id: str
    changed_at: Timestamp
    conversation: ConversationView | None = Field(
        None, description="The conversation as it is now (an upserted conversation); null if deleted since.")
    message: MessageView | None = Field(
        None, description="The message as it is now (an upserted message); null if deleted since.")

    @classmethod
    def of(cls, item: SyncItem) -> ChangeView:
        change = item.change
        return cls(entity=change.entity, id=change.entity_id, op=change.op,
                   conversation_id=change.conversation_id, changed_at=change.created_at.isoformat(),
                   conversation=ConversationView.of(item.conversation) if item.conversation else None,
                   message=MessageView.of(item.message) if item.message else None)


class SyncResponse(View):
    changes: list[ChangeView] = Field(description="Oldest first; an entity changed more than once is listed "
                                                  "once, at its last change.")
    next_cursor: str = Field(description="Send it as `cursor` next time (the same one when nothing changed).")
    has_more: bool = Field(description="More changes are ready now: ask again at once with `next_cursor`.")

    @classmethod
    def of(cls, page: SyncPage) -> SyncResponse:
        return cls(changes=[ChangeView.of(item) for item in page.items], next_cursor=page.next_cursor,
                   has_more=page.has_more)
