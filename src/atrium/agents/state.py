"""The assistant's state per thread: small on purpose, since every step of every turn is checkpointed.

It holds ids and short texts: the recent messages (plain dicts, each clipped), the turn's sources as small
dicts (a 300-character snippet, never the document), the guarded text of those sources only while the
turn runs (``passages``, emptied when it ends), and the artifact's id and title, never its content. The
caller (``Principal``) is not state: it comes with each run's config.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, TypedDict

from atrium.knowledge import answering
from atrium.knowledge.answering import Source
from atrium.knowledge.service import SearchHit

Intent = Literal["qa", "artifact", "clarify", "chitchat"]
INTENTS: tuple[Intent, ...] = ("qa", "artifact", "clarify", "chitchat")

MAX_MESSAGES = 12  # the last six exchanges are kept; older ones leave the state
MAX_MESSAGE_CHARS = 2000
MAX_PASSAGE_CHARS = 1200
MAX_TOOL_RESULT_CHARS = 1200

_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "ai": "assistant", "system": "system"}


def keep_recent(left: Sequence[Mapping[str, Any]] | None,
                right: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None) -> list[dict[str, str]]:
    """The messages channel's reducer: append, normalise to ``{"role", "content"}`` (the LangGraph SDK's
    ``{"type": "human", ...}`` is accepted too) and keep the last ``MAX_MESSAGES``, each clipped."""
    new = [right] if isinstance(right, Mapping) else list(right or ())
    merged = [plain_message(message) for message in (*(left or ()), *new)]
    return [message for message in merged if message["content"]][-MAX_MESSAGES:]


def plain_message(message: Mapping[str, Any]) -> dict[str, str]:
    role = _ROLES.get(str(message.get("role") or message.get("type") or "user"), "user")
    content = message.get("content", "")
    if not isinstance(content, str):  # OpenAI-style parts: keep the text
        content = "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return {"role": role, "content": content[:MAX_MESSAGE_CHARS]}


class AssistantState(TypedDict, total=False):
    """One thread's state. ``messages`` is the conversation; the rest describes the current (or last) turn."""

    messages: Annotated[list[dict[str, str]], keep_recent]
    collections: list[str] | None  # the collections the caller asked to search (None: every readable one)
    question: str  # the turn's question after the guard's input stage
    sources: list[dict[str, Any]]  # Source.to_dict() of each retrieved chunk or tool result, numbered
    passages: list[str]  # what the model is shown of each source (guarded); emptied when the turn ends
    intent: Intent
    intent_by: str  # "rule", "model" or "default"
    tool_calls: list[dict[str, str]]  # calls the model asked for and not yet run: {id, name, arguments}
    tool_rounds: int
    tool_log: list[dict[str, Any]]  # what ran this turn: {name, ok, note}
    draft: str  # the answer under validation
    attempt: int  # answer attempts this turn (1, or 2 after a refinement)
    problem: str  # why the last draft was refused (sent with the refinement)
    answer: str  # the turn's final answer
    artifact: dict[str, Any] | None  # {id, kind, title, description} of the artifact made this turn
    model: str | None
    error: dict[str, str] | None  # {code, message} when the turn failed


def turn_reset() -> dict[str, Any]:
    """What a new turn starts from (everything but the messages and the requested collections)."""
    return {"question": "", "sources": [], "passages": [], "intent": "qa", "intent_by": "default",
            "tool_calls": [], "tool_rounds": 0, "tool_log": [], "draft": "", "attempt": 0, "problem": "",
            "answer": "", "artifact": None, "model": None, "error": None}


def sources_of(state: Mapping[str, Any]) -> list[Source]:
    return [Source(**{key: value for key, value in source.items() if key in Source.__slots__})
            for source in state.get("sources") or ()]


def hit_source(number: int, hit: SearchHit, shown: str, query: str = "") -> Source:
    """A retrieved chunk as the turn's ``number``-th source; ``shown``: its text after the context stage
    (the snippet is its window around the best match with ``query``)."""
    return answering.hit_source(number, hit, shown, query)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def last_user_message(messages: Iterable[Mapping[str, str]]) -> str:
    for message in reversed(list(messages)):
        if message.get("role") == "user":
            return message.get("content", "")
    return ""
