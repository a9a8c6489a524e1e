"""A run's LangGraph stream in the platform API's event format (what ``langgraph-sdk`` reads).

Events: ``metadata`` (``{run_id, attempt}``), then per requested stream mode ``values``, ``updates``,
``custom``, ``debug``, ``tasks``, ``checkpoints`` as LangGraph produces them (without ``updates``, an
interrupt still comes, as a ``values`` event ``{"__interrupt__": [...]}``), and for the message modes:
``messages`` -> ``messages/metadata`` then ``messages/partial`` (the AI message so far) and, at the end,
``messages/complete``; ``messages-tuple`` -> ``messages`` (``[chunk, metadata]``). Then ``error``
(``{error: code, message}``) if the run failed, and ``end``.

Atrium's graphs call the gateway's ``ChatModel``, not a LangChain model, so LangGraph's own ``messages``
mode sees no tokens: a node streams its answer with ``emit_token`` (a ``MessageToken`` on the custom
stream), which the ``StreamTranslator`` turns into the message events, and into a ``custom`` event
``{type: "token", message_id, text}`` when ``custom`` is asked for.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.types import Interrupt

STREAM_MODES = ("values", "updates", "custom", "messages", "messages-tuple", "debug", "tasks", "checkpoints")
_GRAPH_MODES = ("values", "updates", "custom", "debug", "tasks", "checkpoints")
_MESSAGE_MODES = ("messages", "messages-tuple")


@dataclasses.dataclass(frozen=True, slots=True)
class MessageToken:
    """A piece of the AI message ``message_id`` that node ``node`` is streaming."""

    message_id: str
    text: str
    node: str = ""


def emit_token(message_id: str, text: str, node: str = "") -> None:
    """Stream a token of an AI message from inside a node (see the module doc)."""
    get_stream_writer()(MessageToken(message_id, text, node))


def graph_modes(requested: Iterable[str]) -> list[str]:
    """The LangGraph stream modes a run needs for the modes a client asked for: always ``updates``, where
    LangGraph reports an interrupt (see ``StreamTranslator.translate``)."""
    asked = set(requested)
    modes = [mode for mode in _GRAPH_MODES if mode in asked]
    if asked & set(_MESSAGE_MODES) and "custom" not in modes:
        modes.append("custom")
    if "updates" not in modes:
        modes.append("updates")
    return modes


def ai_message(message_id: str, text: str) -> dict[str, Any]:
    """An AI message as LangChain serialises one (the shape the SDKs' message helpers read)."""
    return {"type": "ai", "id": message_id, "content": text, "additional_kwargs": {}, "response_metadata": {},
            "tool_calls": [], "invalid_tool_calls": [], "name": None, "example": False}


class StreamTranslator:
    """LangGraph ``(mode, chunk)`` pairs -> the platform's ``(event, data)`` pairs, for one run."""

    def __init__(self, requested: Iterable[str]) -> None:
        self.requested = set(requested)
        self._texts: dict[str, str] = {}

    def translate(self, mode: str, chunk: Any) -> list[tuple[str, Any]]:
        if mode == "custom" and isinstance(chunk, MessageToken):
            return self._token(chunk)
        if mode == "updates" and "updates" not in self.requested:
            # As the platform does: an interrupt reaches the client as a ``values`` event
            # ``{"__interrupt__": [...]}`` whatever the modes asked for (``useStream`` reads it there).
            if isinstance(chunk, dict) and chunk.get("__interrupt__"):
                return [("values", jsonable(chunk))]
            return []
        if mode not in self.requested:
            return []
        return [(mode, jsonable(chunk))]

    def _token(self, token: MessageToken) -> list[tuple[str, Any]]:
        events: list[tuple[str, Any]] = []
        if "custom" in self.requested:
            events.append(("custom", {"type": "token", "message_id": token.message_id, "text": token.text}))
        first = token.message_id not in self._texts
        self._texts[token.message_id] = self._texts.get(token.message_id, "") + token.text
        metadata = {"langgraph_node": token.node}
        if "messages" in self.requested:
            if first:
                events.append(("messages/metadata", {token.message_id: {"metadata": metadata}}))
            events.append(("messages/partial", [ai_message(token.message_id, self._texts[token.message_id])]))
        if "messages-tuple" in self.requested:
            events.append(("messages", [{**ai_message(token.message_id, token.text), "type": "AIMessageChunk"},
                                        metadata]))
        return events

    def finish(self) -> list[tuple[str, Any]]:
        """The ``messages/complete`` events of every message streamed (``messages`` mode)."""
        if "messages" not in self.requested:
            return []
        return [("messages/complete", [ai_message(message_id, text)]) for message_id, text in self._texts.items()]


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: state values, interrupts, LangChain messages (pydantic), dataclasses."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    if isinstance(value, Interrupt):
        return {"value": jsonable(value.value), "id": value.id}
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: jsonable(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, uuid.UUID | bytes):
        return value.hex() if isinstance(value, bytes) else str(value)
    return str(value)
