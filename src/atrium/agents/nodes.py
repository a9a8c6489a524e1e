"""The assistant graph's nodes. Each calls the use-case layer (retrieval, tools) and the gateway's one
model call only, and reports itself as a ``step`` event on LangGraph's custom stream; answer tokens go to
that stream too (``{"type": "token", ...}``), and a draft that validation refuses is withdrawn with
``{"type": "discard"}`` before its replacement streams. A caller that only relays these events passes an
``EventSink`` (``configurable.events``) and gets each at once, not through the graph's output stream.

The guard pipeline runs once per turn, stage by stage, as in ``GroundedUseCase``: *input* on the user's
message and *context* on the retrieved chunks (``retrieve``), *context* on what a tool reads (``tools``),
*output* on the answer as it streams. Each node that runs a stage is admitted anew (the policy lookup is
cached): a turn can resume on another process after a restart, so nothing of the pipeline is kept in
memory between nodes. The model calls carry the stages already applied (``ChatRequest.guarded``).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.runtime import get_runtime

from atrium.accounts.principal import Principal
from atrium.agents import artifacts as artifact_rules
from atrium.agents.calls import Reply, call_model
from atrium.agents.intent import DEFAULT_INTENT, classify_messages, parse_intent, rule_intent
from atrium.agents.state import (
    MAX_PASSAGE_CHARS,
    AssistantState,
    clip,
    hit_source,
    last_user_message,
    sources_of,
    turn_reset,
)
from atrium.agents.tools import PLAN_PROMPT, TOOL_SPECS, ToolBox, parse_plan, wants_tool
from atrium.agents.validation import check_claims
from atrium.errors import AppError, Unauthorized
from atrium.gateway.ports import CallContext, ChatMessage, ChatRequest, Task, ToolCall
from atrium.guard.sanitize import MarkdownSanitizer
from atrium.knowledge.answering import NO_ANSWER, SYSTEM_PROMPT, relevant

if TYPE_CHECKING:
    from atrium.agents.context import AssistantDeps
    from atrium.guard.pipeline import Admitted

log = logging.getLogger(__name__)

ENDPOINT = "/threads/runs"
CLARIFY_PROMPT = ("The user's last message is too vague to act on. Ask them exactly one short question about what "
                  "they want to know or have written, in the context of the conversation. Reply with the question "
                  "only.\nExample: Message: and the other one?\nQuestion: Which document or topic do you mean?")
DEFAULT_CLARIFICATION = "Could you say a little more about what you need?"
CHITCHAT_PROMPT = ("You are Atrium, a friendly assistant for a team's documents. Reply to the user in one or two "
                   "short sentences. Do not state facts; offer to answer questions about their documents.")
REFINE_NOTE = ("\nYour previous answer had sentences the sources do not support: {problem}. Answer again using "
               "only the sources, citing [n] after each sentence, or say that you don't know.")

Node = TypeVar("Node", bound=Callable[..., Awaitable[dict[str, Any]]])


@dataclass(frozen=True, slots=True)
class Searchable:
    """The collections a caller's use case has already resolved for its principal
    (``CollectionDirectory.searchable``), passed as ``configurable.searchable`` so ``retrieve`` does not
    resolve them again. An object, not a list: a client's JSON config cannot forge it."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EventSink:
    """Where a run's custom events go instead of LangGraph's ``custom`` stream, as ``configurable.events``:
    a caller that only relays them (the chat use case) takes each at once, without a trip through the
    graph's output stream. An object, not a callable: a client's JSON config cannot forge it."""

    emit: Callable[[dict[str, Any]], None]


def writer_of(config: RunnableConfig) -> Callable[[dict[str, Any]], None]:
    """The custom-event writer of the run: its ``EventSink``, else LangGraph's stream writer."""
    sink = (config.get("configurable") or {}).get("events")
    return sink.emit if isinstance(sink, EventSink) else get_stream_writer()


def principal_of(config: RunnableConfig) -> Principal:
    """The caller, never stored in state: the run context's (``AgentContext.principal``, as the agents API
    runs a graph), else ``config["configurable"]["principal"]`` (a direct ``astream``, the chat use case)."""
    principal = getattr(get_runtime().context, "principal", None)
    if principal is None:
        principal = (config.get("configurable") or {}).get("principal")
    if not isinstance(principal, Principal):
        raise Unauthorized("An assistant run needs the caller's principal in its config.")
    return principal


def step(name: str, *, starts_turn: bool = False) -> Callable[[Node], Node]:
    """Times a node, traces it as the span ``assistant.<name>`` (``AssistantDeps.tracer``) and reports it as
    a ``step`` event (node, status, ms); a refused or failed step ends the turn with its error in the state
    (``error``), which the routing sends to ``finish``. A failed first step still clears the last turn's
    results (``starts_turn``)."""
    span_name = f"assistant.{name}"

    def wrap(node: Node) -> Node:
        @functools.wraps(node)
        async def run(self: AssistantNodes, state: AssistantState, config: RunnableConfig) -> dict[str, Any]:
            started, status = time.perf_counter(), "error"
            with self.deps.tracer.start_as_current_span(span_name, attributes={"atrium.node": name}) as span:
                try:
                    update = await node(self, state, config)
                    status = "ok"
                    return update
                except AppError as exc:
                    log.info("assistant step %s ended with %s", name, exc.code)
                    span.set_attribute("atrium.error_code", exc.code)
                    return {**(turn_reset() if starts_turn else {}),
                            "error": {"code": exc.code, "message": exc.message}}
                finally:
                    span.set_status(status)
                    writer_of(config)({"type": "step", "node": name, "status": status,
                                         "ms": round((time.perf_counter() - started) * 1000, 3)})
        return cast(Node, run)
    return wrap


class AssistantNodes:
    def __init__(self, deps: AssistantDeps) -> None:
        self.deps = deps
        self.settings = deps.settings

    # -- retrieve ---------------------------------------------------------------------------------------
    @step("retrieve", starts_turn=True)
    async def retrieve(self, state: AssistantState, config: RunnableConfig) -> dict[str, Any]:
        principal = principal_of(config)
        update = turn_reset()
        guard = await self._admit(principal)
        question = last_user_message(state.get("messages") or ())
        if guard is not None:
            question = await guard.question(question)
        update["question"] = question
        answerer = self.deps.answerer
        resolved = (config.get("configurable") or {}).get("searchable")
        names = list(resolved.names) if isinstance(resolved, Searchable) else \
            await answerer.knowledge.directory.searchable(principal, state.get("collections"))
        hits = await answerer.knowledge.search(principal.org_id, question, mode="hybrid", limit=answerer.top_k,
                                               collections=names) if question.strip() else []
        chosen = relevant(hits, answerer.min_relevance)
        texts = [hit.chunk.text for hit in chosen]
        shown = texts
        if guard is not None and chosen:
            passages = guard.context(texts)
            kept = [i for i, passage in enumerate(passages) if passage.prompt.strip()]
            chosen = [chosen[i] for i in kept]
            texts, shown = [passages[i].prompt for i in kept], [passages[i].shown for i in kept]
        update["sources"] = [hit_source(i, hit, text).to_dict()
                             for i, (hit, text) in enumerate(zip(chosen, shown, strict=True), start=1)]
        update["passages"] = [clip(text, MAX_PASSAGE_CHARS) for text in texts]
        return update

    # -- classify ---------------------------------------------------------------------------------------
    @step("classify")
    async def classify(self, state: AssistantState, config: RunnableConfig) -> dict[str, Any]:
        question = state.get("question", "")
        intent = rule_intent(question, has_sources=bool(state.get("sources")))
        if intent is not None:
            return {"intent": intent, "intent_by": "rule"}
        request = self._request(principal_of(config), config, classify_messages(question, self._history(state)),
                                task="classify", max_tokens=20, temperature=0.0, stream=False,
                                response_format={"type": "json_object"})
        try:
            reply = await call_model(self.deps.model, request)
        except AppError as exc:  # classification is advisory: the safe default answers from sources
            log.info("intent classification failed (%s); using %s", exc.code, DEFAULT_INTENT)
            return {"intent": DEFAULT_INTENT, "intent_by": "default"}
        parsed = parse_intent(reply.text)
        return {"intent": parsed or DEFAULT_INTENT, "intent_by": "model" if parsed else "default"}

    # -- answer (qa) ------------------------------------------------------------------------------------
    @step("answer")
    async def answer(self, state: AssistantState, config: RunnableConfig) -> dict[str, Any]:
        principal, question = principal_of(config), state.get("question", "")
        attempt, rounds = state.get("attempt", 0), state.get("tool_rounds", 0)
        native = self.settings.native_tools
        if not native and attempt == 0 and rounds == 0 and wants_tool(question):
            call = await self._plan(principal, config, state)
            if call is not None:
                return {"tool_calls": [{"id": call.id, "name": call.name, "arguments": call.arguments}]}
        offer_tools = native and rounds < self.settings.max_tool_rounds and (
            bool(state.get("sources")) or wants_tool(question))
        if not state.get("sources") and not offer_tools:
            self._emit_token(config, "answer", NO_ANSWER, attempt + 1)
            return {"draft": NO_ANSWER, "attempt": attempt + 1}
        guard = await self._admit(principal)
        sanitizer = output_stage(guard)
        request = self._request(principal, config, self._answer_messages(state), task="qa",
                                tools=TOOL_SPECS if offer_tools else ())
        try:
            reply = await call_model(self.deps.model, request, sanitizer=sanitizer,
                                     on_text=lambda text: self._emit_token(config, "answer", text, attempt + 1))
        except AppError as exc:
            if not (offer_tools and exc.code == "unsupported_capability"):
                raise
            # The route's models declare no tool calling after all: answer from the sources alone.
            request = replace(request, tools=(), tool_choice=None, route=None)
            reply = await call_model(self.deps.model, request, sanitizer=output_stage(guard),
                                     on_text=lambda text: self._emit_token(config, "answer", text, attempt + 1))
        if reply.tool_calls and offer_tools:
            if reply.text:
                writer_of(config)({"type": "discard", "node": "answer", "attempt": attempt + 1})
            return {"tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in reply.tool_calls],
                    "model": reply.model}
        return {"draft": reply.text, "attempt": attempt + 1, "model": reply.model}

    async def _plan(self, principal: Principal, config: RunnableConfig, state: AssistantState) -> ToolCall | None:
        """The structured-output stand-in for tool calling: one JSON call naming at most one tool."""
        messages = (ChatMessage("system", PLAN_PROMPT), ChatMessage("user", f"Message: {state.get('question', '')}"))
        request = self._request(principal, config, messages, task="classify", max_tokens=120, temperature=0.0,
                                stream=False, response_format={"type": "json_object"})
        try:
            return parse_plan((await call_model(self.deps.model, request)).text)
        except AppError as exc:
            log.info("tool planning failed (%s): answering without tools", exc.code)
            return None

    # -- tools ------------------------------------------------------------------------------------------
    @step("tools")
    async def tools(self, state: AssistantState, config: RunnableConfig) -> dict[str, Any]:
        principal = principal_of(config)
        answerer = self.deps.answerer
        box = ToolBox(answerer.knowledge, self.deps.artifacts, self.deps.projects, principal,
                      await self._admit(principal))
        sources, passages = list(state.get("sources") or ()), list(state.get("passages") or ())
        log_entries = list(state.get("tool_log") or ())
        for raw in state.get("tool_calls") or ():
            call = ToolCall(id=raw["id"], name=raw["name"], arguments=raw["arguments"])
            result = await box.run(call, first_number=len(sources) + 1)
            sources += [source.to_dict() for source in result.sources]
            passages += result.passages
            log_entries.append({"id": call.id, "name": call.name, "arguments": clip(call.arguments, 500),
                                "ok": result.ok, "note": result.note,
                                "numbers": [source.number for source in result.sources]})
        return {"sources": sources, "passages": passages, "tool_log": log_entries, "tool_calls": [],
                "tool_rounds": state.get("tool_rounds", 0) + 1}

    # -- validate ---------------------------------------------------------------------------------------
    @step("validate")
    async def validate(self, state: AssistantState, config: RunnableConfig) -> dict[str, Any]:
        draft, sources = state.get("draft", ""), sources_of(state)
        verdict = check_claims(draft, sources, state.get("passages") or [])
        if verdict.backed:
            return {"answer": draft, "sources": [source.to_dict() for source in verdict.cited], "problem": ""}
        writer_of(config)({"type": "discard", "node": "validate", "attempt": state.get("attempt", 0)})
        if state.get("attempt", 0) < 2:
            return {"problem": "; ".join(f'"{clip(sentence, 160)}"' for sentence in verdict.unbacked[:3])}
        self._emit_token(config, "validate", NO_ANSWER, state.get("attempt", 0))
        return {"answer": NO_ANSWER, "problem": "",
                "sources": [{**source.to_dict(), "cited": False, "cited_by": None} for source in sources]}

    # -- artifact ---------------------------------------------------------------------------------------
    @step("artifact")
    async def artifact(self, state: AssistantState, config: RunnableConfig) -> dict[str, Any]:
        principal, question = principal_of(config), state.get("question", "")
        hint = artifact_rules.kind_hint(question)
        context = self._sources_text(state)
        draft, reply, problem = None, Reply(), ""
        for _ in range(2):  # the first try, and one refinement with the parser's reason
            request = self._request(principal, config,
                                    artifact_rules.artifact_messages(question, hint, context, problem),
                                    task="artifact", max_tokens=self.settings.artifact_max_tokens, stream=False,
                                    response_format={"type": "json_object"})
            reply = await call_model(self.deps.model, request)
            parsed = artifact_rules.parse_artifact(reply.text, hint)
            if not isinstance(parsed, str):
                draft = parsed
                break
            problem = parsed
        if draft is None:
            draft = artifact_rules.fallback_artifact(reply.text, question)
        if draft is None:
            return {"error": {"code": "artifact_failed", "message": "The model produced no artifact."}}
        if draft.kind == "markdown":  # the output stage, as on an answer
            sanitizer = output_stage(await self._admit(principal))
            draft = artifact_rules.ArtifactDraft(draft.kind, draft.title, draft.description,
                                                 sanitizer.feed(draft.content) + sanitizer.finish())
        thread_id = (config.get("configurable") or {}).get("thread_id")
        stored = await self.deps.artifacts.save(principal, draft, thread_id=str(thread_id) if thread_id else None)
        answer = f"I made the {stored.kind} artifact \"{stored.title}\" ({stored.id})."
        self._emit_token(config, "artifact", answer, 1)
        return {"artifact": {"id": stored.id, "kind": stored.kind, "title": stored.title,
                             "description": clip(stored.description, 300)},
                "answer": answer, "model": reply.model, "draft": ""}

    # -- clarify and chitchat ---------------------------------------------------------------------------
    @step("clarify")
    async def clarify(self, state: AssistantState, config: RunnableConfig) -> dict[str, Any]:
        messages = (ChatMessage("system", CLARIFY_PROMPT), *self._history_messages(state),
                    ChatMessage("user", f"Message: {state.get('question', '')}\nQuestion:"))
        request = self._request(principal_of(config), config, messages, task="chat", max_tokens=60, stream=False)
        reply = await call_model(self.deps.model, request, sanitizer=await self._sanitizer(config))
        question = one_question(reply.text) or DEFAULT_CLARIFICATION
        self._emit_token(config, "clarify", question, 1)
        return {"answer": question, "model": reply.model}

    @step("chitchat")
    async def chitchat(self, state: AssistantState, config: RunnableConfig) -> dict[str, Any]:
        messages = (ChatMessage("system", CHITCHAT_PROMPT), *self._history_messages(state),
                    ChatMessage("user", state.get("question", "")))
        request = self._request(principal_of(config), config, messages, task="chat", max_tokens=80)
        reply = await call_model(self.deps.model, request, sanitizer=await self._sanitizer(config),
                                 on_text=lambda text: self._emit_token(config, "chitchat", text, 1))
        return {"answer": reply.text.strip(), "model": reply.model}

    # -- finish -----------------------------------------------------------------------------------------
    @step("finish")
    async def finish(self, state: AssistantState, config: RunnableConfig) -> dict[str, Any]:
        """The turn's end: the answer joins the conversation; the turn's passages and drafts leave the state."""
        answer = state.get("answer", "") if not state.get("error") else ""
        return {"messages": [{"role": "assistant", "content": answer}], "passages": [], "draft": "",
                "tool_calls": []}

    # -- helpers ----------------------------------------------------------------------------------------
    async def _admit(self, principal: Principal) -> Admitted | None:
        return await self.deps.guard.admit(principal.org_id) if self.deps.guard is not None else None

    async def _sanitizer(self, config: RunnableConfig) -> MarkdownSanitizer:
        return output_stage(await self._admit(principal_of(config)))

    def _request(self, principal: Principal, config: RunnableConfig, messages: tuple[ChatMessage, ...], *,
                 task: Task, max_tokens: int | None = None, temperature: float | None = None, stream: bool = True,
                 tools: tuple[dict[str, Any], ...] = (), response_format: dict[str, Any] | None = None) -> ChatRequest:
        endpoint = str((config.get("configurable") or {}).get("endpoint") or ENDPOINT)
        context = CallContext(org_id=principal.org_id, user_id=principal.user_id, api_key_id=principal.api_key_id,
                              endpoint=endpoint, task=task)
        return ChatRequest(messages=messages, max_tokens=max_tokens or self.settings.max_tokens,
                           temperature=self.settings.temperature if temperature is None else temperature,
                           context=context, stream=stream, tools=tools, tool_choice="auto" if tools else None,
                           response_format=response_format,
                           guarded=frozenset({"input", "context"}) if self.deps.guard is not None else frozenset())

    def _answer_messages(self, state: AssistantState) -> tuple[ChatMessage, ...]:
        system = SYSTEM_PROMPT + (REFINE_NOTE.format(problem=state["problem"]) if state.get("problem") else "")
        user = f"Sources:\n{self._sources_text(state)}\n\nQuestion: {state.get('question', '')}\nAnswer:"
        calls = [entry for entry in state.get("tool_log") or () if self.settings.native_tools]
        followed: list[ChatMessage] = []
        if calls:  # the tool protocol: what the model asked for, and what each call gave (its sources above)
            followed.append(ChatMessage("assistant", "", tool_calls=tuple(
                ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"]) for c in calls)))
            followed += [ChatMessage("tool", f"{c['note']} {json.dumps(c['numbers'])}", tool_call_id=c["id"])
                         for c in calls]
        return (ChatMessage("system", system), *self._history_messages(state), ChatMessage("user", user), *followed)

    @staticmethod
    def _sources_text(state: AssistantState) -> str:
        return "\n\n".join(f"[{source['number']}] {source['title']} — {source['heading']}\n{text}"
                           for source, text in zip(state.get("sources") or (), state.get("passages") or (),
                                                   strict=False))

    def _history(self, state: AssistantState) -> list[dict[str, str]]:
        """The answered exchanges before this turn's question (the last message is the question itself).
        A question left without an answer (refused by the guard, failed) never re-enters a prompt."""
        earlier = list(state.get("messages") or ())[:-1]
        kept = [message for i, message in enumerate(earlier)
                if message["role"] == "assistant"
                or (i + 1 < len(earlier) and earlier[i + 1]["role"] == "assistant")]
        return kept[-self.settings.history_messages:]

    def _history_messages(self, state: AssistantState) -> tuple[ChatMessage, ...]:
        return tuple(ChatMessage("assistant" if m["role"] == "assistant" else "user", m["content"])
                     for m in self._history(state))

    @staticmethod
    def _emit_token(config: RunnableConfig, node: str, text: str, attempt: int) -> None:
        writer_of(config)({"type": "token", "node": node, "text": text, "attempt": attempt})


def output_stage(guard: Admitted | None) -> MarkdownSanitizer:
    """The *output* stage for one answer: the tenant's sanitiser (answers are sanitised, guard or not)."""
    return guard.output() if guard is not None else MarkdownSanitizer()


def one_question(text: str) -> str | None:
    """The first question in ``text`` (a clarification asks exactly one), or None."""
    end = text.find("?")
    if end < 0:
        return None
    start = max(text.rfind(mark, 0, end) for mark in (".", "!", "\n")) + 1
    question = text[start:end + 1].strip()
    return question if len(question) > 3 else None
