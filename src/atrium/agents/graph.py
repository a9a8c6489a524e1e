"""The assistant graph (LangGraph): retrieve -> classify -> answer | artifact | clarify | chitchat ->
validate -> finish.

```
retrieve ─> classify ─┬─> answer <─> tools        (qa: tool calls, native or planned, loop back)
                      │     └──> validate ─┬─> finish        (every claim backed by a source)
                      │            ^       └─> answer        (refine once; then "I don't know")
                      ├─> artifact ───────────> finish       (typed, parsed strictly, refined once)
                      ├─> clarify ────────────> finish       (one question)
                      └─> chitchat ───────────> finish
```

Run it with the caller in the config, and stream ``custom`` for steps and tokens::

    graph = build_assistant_graph(deps, checkpointer)
    config = {"configurable": {"thread_id": thread, "principal": principal}}
    async for mode, chunk in graph.astream({"messages": [{"role": "user", "content": question}]}, config,
                                           stream_mode=["custom", "values", "updates"]):
        ...

A step that is refused (a guard, a budget, a collection the caller may not read) ends the turn at
``finish`` with ``error`` set in the state. ``build_turn_graph`` is the same graph in one super-step, for a
caller that keeps no checkpoint between nodes (the chat use case, ``chat_turns.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import GraphRecursionError
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from atrium.agents.context import AssistantDeps
from atrium.agents.nodes import AssistantNodes
from atrium.agents.state import AssistantState, keep_recent

ASSISTANT_ID = "assistant"


NodeFn = Callable[..., Awaitable[dict[str, Any]]]  # (state, config) -> update
Route = Callable[[Mapping[str, Any]], str]
TURN_NODE = "turn"
MAX_TURN_STEPS = 25  # as LangGraph's default recursion limit: the routes end a turn far sooner


def _topology(nodes: AssistantNodes) -> dict[str, tuple[NodeFn, Route | str, tuple[str, ...]]]:
    """Each node: its function, then its route (or its one successor) and the nodes that route can take."""
    return {
        "retrieve": (nodes.retrieve, _unless_failed("classify"), ("classify", "finish")),
        "classify": (nodes.classify, _by_intent, ("answer", "artifact", "clarify", "chitchat", "finish")),
        "answer": (nodes.answer, _after_answer, ("tools", "validate", "finish")),
        "tools": (nodes.tools, _unless_failed("answer"), ("answer", "finish")),
        "validate": (nodes.validate, _after_validate, ("answer", "finish")),
        "artifact": (nodes.artifact, "finish", ()),
        "clarify": (nodes.clarify, "finish", ()),
        "chitchat": (nodes.chitchat, "finish", ()),
        "finish": (nodes.finish, END, ()),
    }


def build_assistant_graph(deps: AssistantDeps,
                          checkpointer: BaseCheckpointSaver[Any] | None) -> CompiledStateGraph[Any]:
    """The compiled assistant graph over ``deps``, its threads kept by ``checkpointer``.

    A node that branches routes itself: it returns ``Command(update, goto)``, its route read off the state
    with its update applied (``_routed``). The same routes as conditional edges cost a traced runnable
    (callback runs, tasks) per super-step; the graph, its updates and its checkpoints are the same."""
    graph: StateGraph[Any] = StateGraph(AssistantState)
    topology = _topology(AssistantNodes(deps))
    for name, (node, route, destinations) in topology.items():
        if isinstance(route, str):
            graph.add_node(name, node)
            graph.add_edge(name, route)
        else:
            graph.add_node(name, _routed(node, route), destinations=destinations)
    graph.add_edge(START, "retrieve")
    return graph.compile(checkpointer=checkpointer, name=ASSISTANT_ID)


def build_turn_graph(deps: AssistantDeps) -> CompiledStateGraph[Any]:
    """The assistant graph in one super-step, for a caller that keeps no checkpoint (the chat use case).

    Its one node, ``turn``, runs the assistant graph's nodes along the same routes, each node on the state
    the ones before it left (the ``messages`` reducer applied), and writes what they wrote. Every node
    still reports its ``step`` event and its span: only the super-steps between them are gone, whose
    bookkeeping (tasks, callback runs, an in-memory checkpoint each) was most of the CPU the graph added
    to a chat answer (docs/benchmarks.md, issue 13)."""
    topology = _topology(AssistantNodes(deps))

    async def turn(state: AssistantState, config: RunnableConfig) -> dict[str, Any]:
        current: dict[str, Any] = dict(state)
        written: dict[str, Any] = {}
        added: list[dict[str, str]] = []
        name = "retrieve"
        for _ in range(MAX_TURN_STEPS):
            node, route, _ = topology[name]
            update = await node(cast(AssistantState, current), config)
            if "messages" in update:
                added += keep_recent((), update["messages"])
                current["messages"] = keep_recent(current.get("messages"), update["messages"])
                update = {key: value for key, value in update.items() if key != "messages"}
            current.update(update)
            written.update(update)
            name = route if isinstance(route, str) else route(current)
            if name == END:
                return {**written, "messages": added} if added else written
        raise GraphRecursionError(f"The assistant turn took more than {MAX_TURN_STEPS} steps.")

    graph: StateGraph[Any] = StateGraph(AssistantState)
    graph.add_node(TURN_NODE, turn)
    graph.add_edge(START, TURN_NODE)
    graph.add_edge(TURN_NODE, END)
    return graph.compile(name=ASSISTANT_ID)


def _routed(node: NodeFn, route: Route) -> Callable[..., Awaitable[Command[str]]]:
    """``node`` followed by its ``route``, which reads the state as the node's update leaves it (the routed
    channels are plain values: no reducer to apply)."""
    async def run(state: AssistantState, config: RunnableConfig) -> Command[str]:
        update = await node(state, config)
        return Command(update=update, goto=route({**state, **update}))
    run.__name__ = getattr(node, "__name__", "node")
    return run


def _unless_failed(target: str) -> Route:
    def route(state: Mapping[str, Any]) -> str:
        return "finish" if state.get("error") else target
    return route


def _by_intent(state: Mapping[str, Any]) -> str:
    if state.get("error"):
        return "finish"
    return {"qa": "answer", "artifact": "artifact", "clarify": "clarify", "chitchat": "chitchat"}.get(
        state.get("intent", "qa"), "answer")


def _after_answer(state: Mapping[str, Any]) -> str:
    if state.get("error"):
        return "finish"
    return "tools" if state.get("tool_calls") else "validate"


def _after_validate(state: Mapping[str, Any]) -> str:
    if state.get("error") or state.get("answer"):
        return "finish"
    return "answer"  # refused once: refine
