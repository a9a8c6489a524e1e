"""The guided-flow engine: a definition compiled into a LangGraph graph (LangGraph's own in-memory saver),
prompts as interrupts, validation and re-prompting, confirmation, suggestions with their fallback."""

from __future__ import annotations

import re
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from atrium.accounts.principal import Principal
from atrium.agents.context import AgentContext, AgentDeps
from atrium.agents.flows.definition import (
    ActionStep,
    Choice,
    ConfirmStep,
    FieldStep,
    FlowDefinition,
    FlowEnv,
    Invalid,
    SuggestionStep,
    validate,
)
from atrium.agents.flows.engine import compile_flow
from atrium.agents.flows.project import keyword_kinds, kind_of
from atrium.agents.flows.suggest import candidates, suggestions
from atrium.gateway.providers.fake import FakeChatModel

PRINCIPAL = Principal("org-a", "u-1", "member")


async def _taken(value: Any, env: FlowEnv) -> str | None:
    return "taken" if value == "bob" else None


async def _suggest(env: FlowEnv) -> list[str]:
    return await suggestions(env, "names please", count=2,
                             normalise=lambda raw: raw.lower() if re.fullmatch("[a-z]+", raw.lower()) else None,
                             fallback=["alpha", "beta", "gamma"])


ACTED: list[dict[str, Any]] = []


async def _act(env: FlowEnv) -> dict[str, Any]:
    ACTED.append(dict(env.values))
    return {"made": env.values["name"]}


DEMO = FlowDefinition(name="demo", title="Demo", description="", steps=(
    SuggestionStep("name", "text", "Name?", max_length=10, pattern=r"[a-z]+", pattern_error="letters only",
                   check=_taken, suggest=_suggest, count=2),
    FieldStep("color", "choice", "Color?", choices=(Choice("red"), Choice("blue", "Blue sky"))),
    FieldStep("tags", "multi_choice", "Tags?", choices=(Choice("a"), Choice("b"), Choice("c")), max_choices=2),
    ConfirmStep("ok", "Sure?", summary=lambda values: f"{values.get('name')}/{values.get('color')}", on_no="color"),
    ActionStep("make", _act),
))


class Run:
    def __init__(self, model: FakeChatModel) -> None:
        self.graph = compile_flow(DEMO, AgentDeps(chat=model), InMemorySaver())
        self.config: Any = {"configurable": {"thread_id": "t1"}}
        self.context = AgentContext(principal=PRINCIPAL, thread_id="t1", run_id="r1")

    async def prompt(self, payload: Any) -> dict[str, Any] | None:
        await self.graph.ainvoke(payload, self.config, context=self.context)
        snapshot = await self.graph.aget_state(self.config)
        return snapshot.interrupts[0].value if snapshot.interrupts else None

    async def answer(self, value: Any) -> dict[str, Any] | None:
        return await self.prompt(Command(resume=value))

    async def values(self) -> dict[str, Any]:
        return dict((await self.graph.aget_state(self.config)).values)


async def test_a_flow_prompts_validates_reprompts_and_acts() -> None:
    ACTED.clear()
    model = FakeChatModel(answer=lambda request: '{"suggestions": ["Zed", "x1", "Yan"]}')
    run = Run(model)
    first = await run.prompt({"values": {}})
    assert first is not None and first["step"] == "name" and first["kind"] == "text" and first["error"] is None
    assert first["suggestions"] == ["zed", "yan"]  # "x1" is not a usable value
    assert first["index"] == 1 and first["total"] == 4
    again = await run.answer("Bob9")
    assert again is not None and again["step"] == "name" and again["error"] == "letters only"
    again = await run.answer("bob")  # well-formed but refused by the check
    assert again is not None and again["step"] == "name" and again["error"] == "taken"
    assert again["suggestions"] == ["zed", "yan"] and len(model.requests) == 1  # not asked again on resume
    color = await run.answer("  ada ")
    assert color is not None and color["step"] == "color" and color["choices"][1] == {"value": "blue",
                                                                                       "label": "Blue sky"}
    tags = await run.answer("BLUE SKY")  # a label, any case
    assert tags is not None and tags["step"] == "tags"
    assert (await run.answer(["a", "b", "c"]))["error"] == "Choose at most 2."  # type: ignore[index]
    confirm = await run.answer("a, b")
    assert confirm is not None and confirm["kind"] == "confirm" and confirm["summary"] == "ada/blue"
    assert (await run.answer("maybe"))["error"] == "Answer yes or no."  # type: ignore[index]
    back = await run.answer("no")  # on_no: back to the color
    assert back is not None and back["step"] == "color"
    await run.answer("red")
    await run.answer(["c"])
    assert ACTED == []
    assert await run.answer(True) is None
    values = await run.values()
    assert values["outcome"] == "done" and values["result"] == {"made": "ada"}
    assert ACTED == [{"name": "ada", "color": "red", "tags": ["c"], "ok": True}]


async def test_suggestions_fall_back_when_the_model_answers_garbage_or_fails() -> None:
    run = Run(FakeChatModel())  # answers "I don't know based on the provided documents."
    first = await run.prompt({"values": {}})
    assert first is not None and first["suggestions"] == ["alpha", "beta"]
    failing = Run(FakeChatModel(fail_before_first=True, error_code="model_unavailable"))
    prompt = await failing.prompt({"values": {}})
    assert prompt is not None and prompt["suggestions"] == ["alpha", "beta"]


def test_candidates_are_read_defensively() -> None:
    assert candidates('Sure! {"suggestions": ["a", "b"]} hope it helps') == ["a", "b"]
    assert candidates('```json\n{"names": ["x", 3, "y"]}\n```') == ["x", "y"]
    assert candidates('["one", "two"]') == ["one", "two"]
    assert candidates("1. ada\n- bob\n* 'cy'") == ["ada", "bob", "cy"]
    assert candidates("") == []
    assert [kind_of(value) for value in ("Software", "rockets", " event ")] == ["software", None, "event"]
    assert keyword_kinds("A mobile app and its API for the launch campaign")[:2] == ["software", "marketing"]
    assert keyword_kinds("Nothing in particular") == ["other"]


@pytest.mark.parametrize(("step", "answer", "expected"), [
    (FieldStep("e", "email", "?"), " Ada@Example.ORG ", "ada@example.org"),
    (FieldStep("e", "email", "?"), "not-an-email", Invalid),
    (FieldStep("e", "email", "?"), "a@b", Invalid),
    (FieldStep("t", "text", "?", max_length=100), "x" * 101, Invalid),
    (FieldStep("t", "text", "?", max_length=100), "x" * 100, "x" * 100),
    (FieldStep("t", "text", "?"), "   ", Invalid),
    (FieldStep("t", "text", "?", required=False), None, ""),
    (FieldStep("t", "text", "?"), ["list"], Invalid),
    (FieldStep("t", "text", "?"), True, Invalid),
    (FieldStep("b", "boolean", "?"), "Yes", True),
    (FieldStep("b", "boolean", "?"), "perhaps", Invalid),
    (FieldStep("c", "choice", "?", choices=(Choice("a"),)), "z", Invalid),
    (FieldStep("m", "multi_choice", "?", choices=(Choice("a"), Choice("b"))), ["b", "a", "b"], ["b", "a"]),
    (FieldStep("m", "multi_choice", "?", choices=(Choice("a"),)), [], Invalid),
    (FieldStep("m", "multi_choice", "?", choices=(Choice("a"),)), [1], Invalid),
])
def test_validation_rules(step: FieldStep, answer: Any, expected: Any) -> None:
    if expected is Invalid:
        with pytest.raises(Invalid):
            validate(step, answer)
    else:
        assert validate(step, answer) == expected


def test_a_definition_is_checked_when_declared() -> None:
    with pytest.raises(ValueError, match="last step"):
        FlowDefinition(name="x", title="x", description="", steps=(FieldStep("a", "text", "?"),))
    with pytest.raises(ValueError, match="unique"):
        FlowDefinition(name="x", title="x", description="", steps=(
            FieldStep("a", "text", "?"), FieldStep("a", "text", "?"), ActionStep("b", _act)))
    with pytest.raises(ValueError, match="on_no"):
        FlowDefinition(name="x", title="x", description="", steps=(
            ConfirmStep("a", "?", on_no="zzz"), ActionStep("b", _act)))
