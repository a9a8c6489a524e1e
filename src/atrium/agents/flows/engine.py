"""A ``FlowDefinition`` compiled into a LangGraph ``StateGraph``, every prompt an ``interrupt()``.

Nodes, in the definition's order: ``suggest_<id>`` (a ``SuggestionStep``'s proposals, computed once and
kept in the state, so that resuming the prompt does not call the model again), ``ask_<id>`` (one
``interrupt()`` with the typed prompt; the answer resumes it and is validated: an invalid answer is kept
as the step's error and the node runs again, re-prompting with it; the flow never advances past an
invalid answer), and ``act_<id>`` (the final action). A ``ConfirmStep`` answered ``no`` goes back to its
``on_no`` step or ends the flow as ``declined``.

Password steps take no plain password: the flows service validates the answer against the password
policy and hashes it *before* resuming the graph, and resumes with ``{"password_hash": ...}`` (or
``{"rejected": reason}``), so that neither the state nor the checkpoints (whose writes keep every resume
value) ever hold the password itself.

State (plain JSON): ``values`` (answers by step id), ``suggestions``, ``errors`` (per step, the error the
next prompt shows), ``outcome`` (``done``, ``declined``, ``failed``), ``result``, ``error``.
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.pregel import Pregel
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from atrium.agents.context import AgentContext, AgentDeps
from atrium.agents.flows.definition import (
    ActionStep,
    ConfirmStep,
    FieldStep,
    FlowDefinition,
    FlowEnv,
    Invalid,
    SuggestionStep,
    parse_yes_no,
    prompt_payload,
    validate,
)
from atrium.errors import AppError

PASSWORD_HASH = "password_hash"
PASSWORD_REJECTED = "rejected"


def _merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return {**(left or {}), **(right or {})}


class FlowState(TypedDict, total=False):
    values: Annotated[dict[str, Any], _merge]
    suggestions: Annotated[dict[str, Any], _merge]
    errors: Annotated[dict[str, Any], _merge]
    outcome: str
    result: dict[str, Any]
    error: dict[str, Any] | None


def node_of(step: FieldStep | ConfirmStep | ActionStep) -> str:
    if isinstance(step, ActionStep):
        return f"act_{step.id}"
    if isinstance(step, SuggestionStep) and step.suggest is not None:
        return f"suggest_{step.id}"
    return f"ask_{step.id}"


def _env(deps: AgentDeps, state: FlowState, runtime: Runtime[AgentContext]) -> FlowEnv:
    return FlowEnv(principal=runtime.context.principal, deps=deps, values=dict(state.get("values") or {}),
                   flow_id=runtime.context.thread_id)


def sealed_password(answer: Any) -> str:
    """The hash a password step is resumed with (see the module doc), or ``Invalid``."""
    if isinstance(answer, dict):
        if isinstance(answer.get(PASSWORD_REJECTED), str):
            raise Invalid(answer[PASSWORD_REJECTED])
        if isinstance(answer.get(PASSWORD_HASH), str) and answer[PASSWORD_HASH]:
            return str(answer[PASSWORD_HASH])
    raise Invalid("Send the password through the flows API (POST /api/v1/flows/{flow_id}/answer).")


def _asker(definition: FlowDefinition, step: FieldStep, deps: AgentDeps) -> Any:
    async def ask(state: FlowState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
        values = state.get("values") or {}
        suggestions = (state.get("suggestions") or {}).get(step.id)
        answer = interrupt(prompt_payload(definition, step, values, error=(state.get("errors") or {}).get(step.id),
                                          suggestions=suggestions))
        try:
            value = sealed_password(answer) if step.kind == "password" else validate(step, answer)
            if step.check is not None:
                problem = await step.check(value, _env(deps, state, runtime))
                if problem:
                    raise Invalid(problem)
        except Invalid as invalid:
            return {"errors": {step.id: str(invalid)}}
        return {"values": {step.id: value}, "errors": {step.id: None}}

    return ask


def _confirmer(definition: FlowDefinition, step: ConfirmStep) -> Any:
    def confirm(state: FlowState) -> dict[str, Any]:
        values = state.get("values") or {}
        answer = interrupt(prompt_payload(definition, step, values, error=(state.get("errors") or {}).get(step.id)))
        try:
            agreed = parse_yes_no(answer)
        except Invalid as invalid:
            return {"errors": {step.id: str(invalid)}}
        update: dict[str, Any] = {"values": {step.id: agreed}, "errors": {step.id: None}}
        if not agreed and step.on_no is None:
            update["outcome"] = "declined"
        return update

    return confirm


def _suggester(step: SuggestionStep, deps: AgentDeps) -> Any:
    async def suggest(state: FlowState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
        assert step.suggest is not None
        found = await step.suggest(_env(deps, state, runtime))
        return {"suggestions": {step.id: found[:step.count]}}

    return suggest


def _actor(step: ActionStep, deps: AgentDeps) -> Any:
    async def act(state: FlowState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
        try:
            result = await step.act(_env(deps, state, runtime))
        except AppError as failure:  # refused (a taken email, a role) or failed: the flow ends, said why
            return {"outcome": "failed", "error": {"code": failure.code, "message": failure.message}}
        return {"outcome": "done", "result": result, "error": None}

    return act


def compile_flow(definition: FlowDefinition, deps: AgentDeps,
                 checkpointer: BaseCheckpointSaver[Any]) -> Pregel[Any, Any, Any, Any]:
    graph = StateGraph(FlowState, context_schema=AgentContext)
    steps = list(definition.steps)
    entry = {step.id: node_of(step) for step in steps}
    for at, step in enumerate(steps):
        following = entry[steps[at + 1].id] if at + 1 < len(steps) else END
        if isinstance(step, ActionStep):
            graph.add_node(entry[step.id], _actor(step, deps))
            graph.add_edge(entry[step.id], END)
            continue
        ask = f"ask_{step.id}"
        if isinstance(step, SuggestionStep) and step.suggest is not None:
            graph.add_node(entry[step.id], _suggester(step, deps))
            graph.add_edge(entry[step.id], ask)
        if isinstance(step, ConfirmStep):
            graph.add_node(ask, _confirmer(definition, step))
            back = entry[step.on_no] if step.on_no is not None else END
            graph.add_conditional_edges(ask, _after_confirm(step, ask, following, back),
                                        list(dict.fromkeys([ask, following, back])))
        else:
            graph.add_node(ask, _asker(definition, step, deps))
            graph.add_conditional_edges(ask, _after_answer(step.id, ask, following),
                                        list(dict.fromkeys([ask, following])))
    graph.add_edge(START, entry[steps[0].id])
    return graph.compile(checkpointer=checkpointer, name=definition.name)


def _after_answer(step_id: str, again: str, following: str) -> Any:
    def route(state: FlowState) -> str:
        return again if (state.get("errors") or {}).get(step_id) else following

    return route


def _after_confirm(step: ConfirmStep, again: str, following: str, back: str) -> Any:
    def route(state: FlowState) -> str:
        if (state.get("errors") or {}).get(step.id):
            return again
        return following if (state.get("values") or {}).get(step.id) else back

    return route
