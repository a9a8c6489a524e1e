"""An artifact written by the model: the prompt, the one model call, and reading its answer strictly.

The model is asked for one JSON object (``kind``, ``title``, ``description``, ``content``: the shapes of
``content.py``), shown an example of the kind wanted (small local models follow an example far better than
a description), and, when the caller names a collection, the numbered passages retrieved from it. Its
answer must parse as that object and pass the same checks as a caller's content; if it does not, the model
is asked once more, told what was wrong. A second failure is ``GatewayError`` with the code
``invalid_model_output`` (502): the model, not the caller, failed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from atrium.conversations.artifacts.content import EXAMPLES, KINDS, Draft, Kind, check_kind, draft
from atrium.errors import GatewayError, InvalidRequest, error_for
from atrium.gateway.ports import CallContext, ChatMessage, ChatModel, ChatRequest, Done, ErrorEvent, Token
from atrium.gateway.streams import ChatStream

SYSTEM_PROMPT = (
    "You write artifacts: documents, code, checklists, tables and JSON data that an application stores and "
    "shows. Answer with exactly one JSON object and nothing else, with the keys \"kind\", \"title\" (at most "
    "200 characters), \"description\" (one sentence) and \"content\". The content depends on the kind:\n"
    "- markdown: {\"text\": \"<Markdown>\"}\n"
    "- code: {\"language\": \"<language>\", \"code\": \"<source code>\"}\n"
    "- checklist: {\"items\": [{\"text\": \"<item>\", \"done\": false}]}\n"
    "- table: {\"columns\": [\"<name>\"], \"rows\": [[\"<cell>\"]]} (one cell per column in every row)\n"
    "- json: {\"data\": <any JSON value>}"
)
REPAIR = ("That answer is not a valid artifact: {problem}. Answer again with only the corrected JSON object, "
          "nothing before or after it.")
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Generated:
    kind: Kind
    draft: Draft
    model: str | None


def prompt_messages(prompt: str, kind: str | None, passages: Sequence[str]) -> list[ChatMessage]:
    """The model's messages for ``prompt`` (a kind wanted or the model's choice; retrieved ``passages``)."""
    parts = []
    if passages:
        numbered = "\n\n".join(f"[{number}] {text}" for number, text in enumerate(passages, start=1))
        parts.append(f"Use these sources where they help:\n{numbered}")
    parts.append(f"Request: {prompt}")
    if kind is not None:
        parts.append(f"Kind: {kind}\nExample of a {kind} artifact:\n{json.dumps(EXAMPLES[kind])}")
    else:
        parts.append(f"Kind: the one that fits the request best ({', '.join(KINDS)})\n"
                     f"Example of a markdown artifact:\n{json.dumps(EXAMPLES['markdown'])}")
    parts.append("Answer with the JSON object only.")
    return [ChatMessage("system", SYSTEM_PROMPT), ChatMessage("user", "\n\n".join(parts))]


def parse_answer(text: str, kind: str | None) -> tuple[Kind, Draft]:
    """The model's answer as a checked artifact (``InvalidRequest`` naming the first problem)."""
    data = _json_object(text)
    found = data.get("kind", kind)
    if not isinstance(found, str):
        raise InvalidRequest("\"kind\" must be a string")
    if kind is not None and found != kind:
        raise InvalidRequest(f"\"kind\" must be {kind!r}, not {found!r}")
    title, description = data.get("title"), data.get("description", "")
    if not isinstance(title, str):
        raise InvalidRequest("\"title\" must be a string")
    if not isinstance(description, str):
        raise InvalidRequest("\"description\" must be a string")
    return check_kind(found), draft(found, title, description, data.get("content"))


def _json_object(text: str) -> dict[str, Any]:
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text.strip()
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise InvalidRequest(f"it is not JSON ({exc.args[0] if exc.args else 'unreadable'})") from None
    if not isinstance(data, dict):
        raise InvalidRequest("it is not a JSON object")
    return data


class ArtifactWriter:
    """Asks ``model`` (the gateway's stack, guard included) for an artifact; one repair attempt."""

    def __init__(self, model: ChatModel, *, max_tokens: int, temperature: float) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature

    async def write(self, messages: list[ChatMessage], kind: str | None, *, context: CallContext,
                    guarded: frozenset[str]) -> Generated:
        answer, model = await self._call(messages, context, guarded)
        try:
            found, checked = parse_answer(answer, kind)
        except InvalidRequest as first:
            messages = [*messages, ChatMessage("assistant", answer),
                        ChatMessage("user", REPAIR.format(problem=first.message))]
            answer, model = await self._call(messages, context, guarded)
            try:
                found, checked = parse_answer(answer, kind)
            except InvalidRequest as second:
                raise GatewayError(f"The model did not write a valid artifact, twice: {second.message}.",
                                   code="invalid_model_output") from None
        return Generated(found, checked, model)

    async def _call(self, messages: list[ChatMessage], context: CallContext,
                    guarded: frozenset[str]) -> tuple[str, str | None]:
        request = ChatRequest(messages=tuple(messages), max_tokens=self.max_tokens, temperature=self.temperature,
                              response_format={"type": "json_object"}, context=context, guarded=guarded,
                              stream=False)
        parts: list[str] = []
        model: str | None = None
        async with ChatStream(self.model.stream(request)) as events:
            async for event in events:
                if isinstance(event, Token):
                    parts.append(event.text)
                elif isinstance(event, ErrorEvent):
                    raise error_for(event.code, event.message, retryable=event.retryable,
                                    retry_after=event.retry_after)
                elif isinstance(event, Done):
                    model = event.model
        return "".join(parts), model
