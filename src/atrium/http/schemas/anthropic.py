"""Anthropic's ``message`` object, loosely: the main fields, any other key allowed (``View``)."""

from __future__ import annotations

from typing import Any, Literal

from atrium.http.schemas.common import View


class ContentBlock(View):
    """A ``text`` block (``text``) or a ``tool_use`` block (``id``, ``name``, ``input``)."""

    type: Literal["text", "tool_use"] | str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None


class MessageUsage(View):
    input_tokens: int
    output_tokens: int


class AnthropicMessage(View):
    """A ``message`` object; with ``stream: true`` the answer is Anthropic's events (Server-Sent Events:
    ``message_start``, ``content_block_*``, ``message_delta``, ``message_stop``)."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[ContentBlock]
    stop_reason: str | None
    stop_sequence: str | None
    usage: MessageUsage
