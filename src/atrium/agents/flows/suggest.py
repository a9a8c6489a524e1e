"""Values a flow proposes, asked of the gateway's one model and read defensively.

The model is asked for ``{"suggestions": [...]}``; what comes back is read leniently (a JSON object, a
bare JSON array, or one value per line with bullets, numbers and quotes stripped) and strictly at once:
only candidates the step accepts are kept. A model that fails, refuses or answers garbage (the fake model
answers "I don't know...") yields nothing, and each flow then fills its list from deterministic rules: a
flow always has suggestions, whatever the model does.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable

from atrium.agents.calls import call_model, json_object
from atrium.agents.flows.definition import FlowEnv
from atrium.errors import AppError
from atrium.gateway.ports import CallContext, ChatMessage, ChatRequest

log = logging.getLogger(__name__)
ENDPOINT = "/api/v1/flows"  # what the flows' model calls are metered under
_SYSTEM = ("You suggest values for a form field. Answer with JSON only, exactly of the form "
           '{"suggestions": ["first", "second", "third"]}. No explanation.')
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")
MAX_CANDIDATES = 20


def candidates(text: str) -> list[str]:
    """The values a model's answer lists, in its order (see the module doc); possibly none."""
    found: list[object] = []
    data = json_object(text)
    if data is not None:
        listed = data.get("suggestions")
        if not isinstance(listed, list):
            listed = next((value for value in data.values() if isinstance(value, list)), [])
        found = list(listed)
    else:
        start, end = text.find("["), text.rfind("]")
        try:
            value = json.loads(text[start:end + 1]) if 0 <= start < end else None
        except ValueError:
            value = None
        if isinstance(value, list):
            found = list(value)
        else:
            found = [_BULLET.sub("", line).strip().strip("\"'`,") for line in text.splitlines()]
    return [item.strip() for item in found[:MAX_CANDIDATES] if isinstance(item, str) and item.strip()]


async def ask_model(env: FlowEnv, instruction: str, *, max_tokens: int = 96) -> list[str]:
    """The model's candidate values for ``instruction``, or ``[]`` if it fails (it never blocks a flow)."""
    principal = env.principal
    request = ChatRequest(
        messages=(ChatMessage("system", _SYSTEM), ChatMessage("user", instruction)), max_tokens=max_tokens,
        temperature=0.2, context=CallContext(org_id=principal.org_id, user_id=principal.user_id,
                                             api_key_id=principal.api_key_id, endpoint=ENDPOINT, task="chat"))
    try:
        reply = await call_model(env.deps.chat, request)
    except AppError as failure:
        log.info("flow suggestions: the model call failed (%s); deterministic ones are used", failure.code)
        return []
    return candidates(reply.text)


async def suggestions(env: FlowEnv, instruction: str, *, count: int, normalise: Callable[[str], str | None],
                      fallback: list[str], accept: Callable[[str], Awaitable[bool]] | None = None) -> list[str]:
    """Up to ``count`` distinct values: the model's first, then ``fallback``'s; each ``normalise``d (None:
    unusable) and kept only if ``accept`` (an async check, e.g. "is this username free?") says so."""
    chosen: list[str] = []
    for raw in [*await ask_model(env, instruction), *fallback]:
        value = normalise(raw)
        if value is None or value in chosen:
            continue
        if accept is not None and not await accept(value):
            continue
        chosen.append(value)
        if len(chosen) == count:
            break
    return chosen
