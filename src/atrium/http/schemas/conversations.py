"""Conversations and their messages (the owner's view and the admins')."""

from __future__ import annotations

from typing import Any, Literal

from atrium.http.schemas.common import Timestamp, View


class ConversationView(View):
    id: str
    title: str
    created_at: Timestamp
    updated_at: Timestamp


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


class MessageList(View):
    messages: list[MessageView]


class AdminConversationView(View):
    """What an admin sees of a conversation: who owns it and when, not its title or messages."""

    id: str
    user_id: str | None
    api_key_id: str | None
    division_id: str | None
    created_at: Timestamp
    updated_at: Timestamp


class AdminConversationList(View):
    conversations: list[AdminConversationView]
    next_offset: int | None
