"""The chat use case's answers through the assistant graph: ``POST /api/v1/chat/ask`` and chat over ``/ws``.

``ChatService`` keeps everything that makes an answer safe to ask for (the question committed before any
model call, the ``pending`` answer row, the detached ``AnswerRun`` and its journal, one stored outcome);
``ChatAssistant.answer`` only produces that outcome, by one run of the assistant graph (retrieve ->
classify -> answer | artifact | clarify | chitchat -> validate -> finish) and translates the graph's
custom events into the run's events:

* ``token`` -> ``token`` (``{"text"}``, as before);
* ``discard`` (validation withdrew a streamed draft; its replacement streams next) -> ``discard``: a client
  clears what it showed since the last ``discard``. It happens only when a draft is refused, so the usual
  sequence (``meta``, ``token``..., ``sources``, ``done``) is unchanged;
* ``step`` -> ``step`` (``{"node", "status", "ms"}``) only when the caller asked (``steps: true``).

The conversation store is the graph's state here: the graph is compiled once, without a checkpointer, and
each turn starts from the stored history (the one query the use case made before as well). With no
checkpoint to keep between its nodes, the chat runs the graph's one-step form (``build_turn_graph``: the
same nodes along the same routes, each still a ``step`` and a span), and the nodes hand their custom events
to the run directly (``EventSink``) rather than through LangGraph's output stream: the graph's per-step
machinery had made an answer cost ~16% more server CPU than the grounded answer before it
(docs/benchmarks.md). The usage of a turn is the sum over its model calls (classification, answer,
refinement), read off the gateway's events as they pass (``TalliedModel``), so an answer cut short is
still counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from atrium.accounts.principal import Principal
from atrium.agents.context import AssistantDeps
from atrium.agents.graph import build_turn_graph
from atrium.agents.nodes import EventSink, Searchable
from atrium.agents.state import sources_of
from atrium.conversations.generation import Outcome, error_of
from atrium.conversations.runs import AnswerRun
from atrium.errors import AppError
from atrium.gateway.ports import ChatEvent, ChatMessage, ChatModel, ChatRequest, Token, Usage

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Tally:
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0,
                                                            "total_tokens": 0})

    def add(self, prompt: int, completion: int) -> None:
        self.usage["prompt_tokens"] += prompt
        self.usage["completion_tokens"] += completion
        self.usage["total_tokens"] += prompt + completion


# The turn being answered: set around one graph run (LangGraph's tasks inherit it), read by TalliedModel.
_TALLY: ContextVar[_Tally | None] = ContextVar("atrium_chat_turn_tally", default=None)


class TalliedModel:
    """A ChatModel wrapper that adds each call's usage to the current turn's tally: the provider's
    ``Usage`` when it comes, else the tokens streamed (a cut or failed call still counts)."""

    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", "tallied")

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        tally = _TALLY.get()
        if tally is None:
            async for event in self.inner.stream(request):
                yield event
            return
        streamed, exact = 0, None
        try:
            async for event in self.inner.stream(request):
                if isinstance(event, Token):
                    streamed += 1
                elif isinstance(event, Usage):
                    exact = (event.prompt_tokens, event.completion_tokens)
                yield event
        finally:
            tally.add(*(exact or (0, streamed)))

    async def ready(self) -> bool:
        return await self.inner.ready()

    async def aclose(self) -> None:
        return None  # the inner model belongs to the gateway, which closes it


class ChatAssistant:
    """The assistant graph as the chat use case runs it. ``deps`` are the graph's collaborators; the
    model is the chat service's own (``ChatService.model``), given per call: the graph is compiled once per
    model, so once in a running app."""

    def __init__(self, deps: AssistantDeps) -> None:
        self.deps = deps
        self._compiled: tuple[ChatModel, CompiledStateGraph[Any]] | None = None

    def graph(self, model: ChatModel) -> CompiledStateGraph[Any]:
        if self._compiled is None or self._compiled[0] is not model:
            graph = build_turn_graph(replace(self.deps, model=TalliedModel(model)))
            self._compiled = (model, graph)
        return self._compiled[1]

    async def answer(self, principal: Principal, run: AnswerRun, question: str, *, model: ChatModel,
                     history: Callable[[], Awaitable[Sequence[ChatMessage]]], collections: Sequence[str],
                     endpoint: str, steps: bool, store: Callable[[Outcome], Awaitable[None]]) -> Outcome:
        """Answer ``question`` (after the conversation's ``history``) into ``run`` and ``store`` the outcome
        once: complete, failed (with the text streamed so far) or interrupted at shutdown. ``collections``
        are the ones already resolved for ``principal``; model calls are metered under ``endpoint``."""
        graph = self.graph(model)
        tally = _Tally()
        outcome = Outcome(usage=tally.usage)
        parts: list[str] = []

        def relay(event: dict[str, Any]) -> None:  # each custom event of the graph, as the node writes it
            kind = event.get("type")
            if kind == "token":
                parts.append(event["text"])
                run.emit("token", text=event["text"])
            elif kind == "discard":
                parts.clear()
                run.emit("discard", node=event.get("node"))
            elif kind == "step" and steps:
                run.emit("step", node=event["node"], status=event["status"], ms=event["ms"])

        reset = _TALLY.set(tally)
        try:
            past = await history()
            inputs: dict[str, Any] = {"messages": [*({"role": m.role, "content": m.text} for m in past),
                                   {"role": "user", "content": question}],
                      "collections": list(collections)}
            config: RunnableConfig = {"configurable": {"principal": principal, "endpoint": endpoint,
                                                       "searchable": Searchable(tuple(collections)),
                                                       "events": EventSink(relay)}}
            final: dict[str, Any] = {}
            # The custom events reach ``relay`` directly; the stream carries each node's update only
            # ({node: update}; the outcome's channels have no reducer, so the last write is the value).
            with self.deps.graph_runs.run("assistant", {"atrium.endpoint": endpoint}):
                async for chunk in graph.astream(inputs, config, stream_mode="updates"):
                    for update in cast(dict[str, Any], chunk).values():
                        if isinstance(update, dict):
                            final.update(update)
            outcome.text = "".join(parts)
            outcome.sources = sources_of(final)
            outcome.model = final.get("model")
            outcome.error = final.get("error")
            if final.get("artifact"):
                outcome.artifacts = [dict(final["artifact"])]
        except asyncio.CancelledError:
            outcome.text = "".join(parts)
            outcome.error = {"code": "interrupted", "message": "The server stopped before the answer ended."}
            await asyncio.shield(store(outcome))
            raise
        except AppError as exc:
            outcome.text = "".join(parts)
            log.info("answer run ended with %s", exc.code)
            outcome.error = error_of(exc)
        except Exception as exc:  # the run must always end with a stored answer and a final event
            log.exception("answer run failed")
            outcome.text = "".join(parts)
            outcome.error = error_of(exc)
        finally:
            _TALLY.reset(reset)
        await store(outcome)
        return outcome

