"""Conversations and their messages (the owner's view and the admins')."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from atrium.http.schemas.common import Timestamp, View

if TYPE_CHECKING:
    from atrium.store.models import Conversation, Message


class ConversationView(View):
    id: str
    title: str
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: Conversation) -> ConversationView:
        return cls(id=row.id, title=row.title, created_at=row.created_at.isoformat(),
                   updated_at=row.updated_at.isoformat())


class ConversationList(View):
    conversations: list[ConversationView]


class MessageView(View):
    id: str
    role: str
    content: str
    status: Literal["pending", "complete", "error"]
    model: str | None
    sources: list[dict[str, Any]]
    usage: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: Timestamp

    @classmethod
    def of(cls, row: Message) -> MessageView:
        return cls(id=row.id, role=row.role, content=row.content, status=row.status, model=row.model,
                   sources=row.sources or [], usage=row.usage, error=row.error,
                   created_at=row.created_at.isoformat())


class MessageList(View):
    messages: list[MessageView]
    next_cursor: str | None = Field(None, description="Send it as `cursor` for the next page; null on the last.")


class AdminConversationView(View):
    """What an admin sees of a conversation: who owns it and when, not its title or messages."""

    id: str
    user_id: str | None
    api_key_id: str | None
    division_id: str | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: Conversation) -> AdminConversationView:
        return cls(id=row.id, user_id=row.user_id, api_key_id=row.api_key_id, division_id=row.division_id,
                   created_at=row.created_at.isoformat(), updated_at=row.updated_at.isoformat())


class AdminConversationList(View):
    conversations: list[AdminConversationView]
    next_offset: int | None
