"""Intent of a turn: qa, artifact, clarify or chitchat.

A cheap rule pass decides the clear cases without a model call (greetings, "write a checklist...",
a bare "what about it?"). The rest goes to one structured (JSON) model call, read by a strict parser;
anything it cannot read falls back to ``qa``, the safe default: a grounded answer, or "I don't know".
This works with the bundled 0.5B-1.5B local models, which follow a short JSON instruction with an example
but not a long schema.
"""

from __future__ import annotations

import re
from typing import Any

from atrium.agents.calls import json_object
from atrium.agents.state import INTENTS, Intent
from atrium.gateway.ports import ChatMessage

DEFAULT_INTENT: Intent = "qa"

_GREETING = re.compile(
    r"^\s*(hi|hello|hey|hiya|good (morning|afternoon|evening)|thanks?( you)?|thank you( very much)?|cheers|"
    r"bye|goodbye|see you|how are you( doing)?|nice to meet you|ok(ay)?|cool|great)\b[\s!.,?]*"
    r"(atrium|there|everyone|all)?[\s!.,?]*$", re.IGNORECASE)
_MAKE = r"(write|create|generate|draft|make|produce|build|prepare|give me|put together|turn .{1,40} into)"
_THING = (r"(document|doc|markdown|report|memo|template|readme|checklist|check list|to-?do list|table|csv|"
          r"spreadsheet|json|code|script|function|class|snippet|program|query|sql|list of steps)")
_ARTIFACT = re.compile(rf"\b{_MAKE}\b.{{0,60}}\b{_THING}s?\b|\b(as|in(to)?) (a )?(table|csv|json|checklist)\b",
                       re.IGNORECASE)
_VAGUE = re.compile(r"^\s*(and|so|but)?\s*(what about|how about)?\s*(it|this|that|them|those|these|the thing|"
                    r"help|more|why|how|what)?\s*\??\s*$", re.IGNORECASE)
# Asking for a tool's action (a project record, an artifact by id) is a question for the answer node and its
# tools, not a request to write an artifact: small models tend to classify "create a project" as one.
_TOOL_ACTION = re.compile(r"\b(create|start|open|add|set up)\s+(a\s+|an\s+|the\s+|new\s+)*project\b"
                          r"(?!\s+(plan|document|doc|report|template|checklist|brief|table))"
                          r"|\b(read|show|open|summari[sz]e)\b.{0,30}\bart_\w+", re.IGNORECASE)
_WORD = re.compile(r"\w+")

CLASSIFY_PROMPT = (
    "Classify the user's last message. Reply with only a JSON object like {\"intent\": \"qa\"}.\n"
    "intent is one of:\n"
    "qa: a question to answer from documents\n"
    "artifact: a request to write a document, code, checklist, table or JSON\n"
    "clarify: too vague to act on without asking what they mean\n"
    "chitchat: greetings, thanks or small talk\n"
    "Example: Message: Write a checklist for onboarding\n{\"intent\": \"artifact\"}"
)


def rule_intent(message: str, *, has_sources: bool) -> Intent | None:
    """The intent when a rule is sure of it, else None (the model decides)."""
    if _GREETING.match(message):
        return "chitchat"
    if _TOOL_ACTION.search(message):
        return "qa"
    if _ARTIFACT.search(message):
        return "artifact"
    words = _WORD.findall(message)
    if not words or (_VAGUE.match(message) and not has_sources):
        return "clarify"
    # A question with relevant sources is one to answer from them; a short one too ("refunds?"), unless
    # it is vague ("why?"), which the model decides.
    if message.rstrip().endswith("?") and has_sources and (len(words) >= 3 or not _VAGUE.match(message)):
        return "qa"
    return None


def classify_messages(message: str, history: list[dict[str, str]]) -> tuple[ChatMessage, ...]:
    recent = "".join(f"{m['role']}: {m['content'][:200]}\n" for m in history[-4:])
    context = f"Earlier messages:\n{recent}\n" if recent else ""
    return (ChatMessage("system", CLASSIFY_PROMPT), ChatMessage("user", f"{context}Message: {message}"))


def parse_intent(reply: str) -> Intent | None:
    """The intent a classification reply names, strictly: a JSON object whose ``intent`` is one of
    ``INTENTS``; a reply that is exactly one of the names is accepted too (small models drop the braces)."""
    value: Any = json_object(reply)
    name = value.get("intent") if value is not None else reply.strip().strip('."\'').lower()
    if isinstance(name, str) and name.strip().lower() in INTENTS:
        return next(intent for intent in INTENTS if intent == name.strip().lower())
    return None
