"""Two small real graphs that exercise every feature of the agents API until the assistant graph lands:

* ``echo``: answers the conversation through the gateway's ``ChatModel`` (so a run is metered, limited and
  guarded like any model call), streaming the answer's tokens (``emit_token``);
* ``interviewer``: first asks for the caller's name with ``interrupt()`` (the run ends ``interrupted``; a
  run with ``{"command": {"resume": "Ada"}}`` answers it), then answers like ``echo``, greeting by name.

State is plain JSON: ``messages`` (LangChain-shaped dicts, ``{"type": "human"|"ai", "content", "id"}``;
input may use ``{"role": "user", ...}`` as the SDKs send) and ``name``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.pregel import Pregel
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from atrium.agents.context import AgentContext, AgentDeps
from atrium.agents.streaming import MessageToken, ai_message
from atrium.errors import error_for
from atrium.gateway.ports import CallContext, ChatMessage, ChatRequest, ErrorEvent, MessageRole, Token
from atrium.gateway.streams import ChatStream

_TYPES = {"user": "human", "human": "human", "assistant": "ai", "ai": "ai", "system": "system"}
_ROLES: dict[str, MessageRole] = {"human": "user", "ai": "assistant", "system": "system"}
QUESTION = "What is your name?"


def _normalised(message: Any) -> dict[str, Any]:
    if isinstance(message, str):
        message = {"type": "human", "content": message}
    if not isinstance(message, dict):
        raise TypeError("a message is a string or an object with content")
    kind = _TYPES.get(str(message.get("type") or message.get("role") or "human"), "human")
    return {**{k: v for k, v in message.items() if k != "role"}, "type": kind,
            "content": str(message.get("content", "")), "id": str(message.get("id") or uuid.uuid4())}


def add_messages(left: list[dict[str, Any]] | None, right: Any) -> list[dict[str, Any]]:
    """Append ``right`` (one message or a list) to ``left``; a message with an id already there replaces it."""
    merged = list(left or [])
    for message in (right if isinstance(right, list) else [right]):
        new = _normalised(message)
        at = next((i for i, old in enumerate(merged) if old.get("id") == new["id"]), None)
        if at is None:
            merged.append(new)
        else:
            merged[at] = new
    return merged


class ConversationState(TypedDict, total=False):
    messages: Annotated[list[dict[str, Any]], add_messages]
    name: str


def _answerer(deps: AgentDeps, node: str) -> Any:
    async def answer(state: ConversationState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
        principal = runtime.context.principal
        messages = [ChatMessage(_ROLES[m["type"]], m["content"]) for m in state.get("messages", [])
                    if m["type"] in _ROLES]
        if state.get("name"):
            messages.insert(0, ChatMessage("system", f"The user's name is {state['name']}."))
        request = ChatRequest(messages=tuple(messages), context=CallContext(
            org_id=principal.org_id, user_id=principal.user_id, api_key_id=principal.api_key_id,
            endpoint="/threads/runs", task="chat"))
        message_id = f"run-{runtime.context.run_id}-{uuid.uuid4().hex[:8]}"
        parts: list[str] = []
        async with ChatStream(deps.chat.stream(request)) as events:
            async for event in events:
                if isinstance(event, Token):
                    parts.append(event.text)
                    runtime.stream_writer(MessageToken(message_id, event.text, node))
                elif isinstance(event, ErrorEvent):
                    raise error_for(event.code, event.message, retryable=event.retryable)
        text = "".join(parts)
        if state.get("name"):
            text = f"{state['name']}: {text}"
        return {"messages": [ai_message(message_id, text)]}

    return answer


def ask_name(state: ConversationState) -> dict[str, Any]:
    if state.get("name"):
        return {}
    answer = interrupt({"question": QUESTION})
    return {"name": str(answer)[:200]}


def build_echo_graph(deps: AgentDeps, checkpointer: BaseCheckpointSaver[Any]) -> Pregel[Any, Any, Any, Any]:
    graph = StateGraph(ConversationState, context_schema=AgentContext)
    graph.add_node("answer", _answerer(deps, "answer"))
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return graph.compile(checkpointer=checkpointer, name="echo")


def build_interviewer_graph(deps: AgentDeps,
                            checkpointer: BaseCheckpointSaver[Any]) -> Pregel[Any, Any, Any, Any]:
    graph = StateGraph(ConversationState, context_schema=AgentContext)
    graph.add_node("ask_name", ask_name)
    graph.add_node("answer", _answerer(deps, "answer"))
    graph.add_edge(START, "ask_name")
    graph.add_edge("ask_name", "answer")
    graph.add_edge("answer", END)
    return graph.compile(checkpointer=checkpointer, name="interviewer")
