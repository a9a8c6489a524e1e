"""The run feed (numbered events, replay from any point, stream-mode filters) and the translation of
LangGraph's stream into the platform's events."""

from __future__ import annotations

import asyncio

from langgraph.types import Interrupt

from atrium.agents.feed import RunFeed
from atrium.agents.streaming import MessageToken, StreamTranslator, graph_modes, jsonable


async def test_a_listener_gets_every_event_from_where_it_starts() -> None:
    feed = RunFeed("run")
    feed.publish("metadata", {"run_id": "run"})
    feed.publish("values", {"n": 1})

    async def listen(after: int) -> list[int]:
        return [item.id async for item in feed.listen(after=after)]

    late = asyncio.create_task(listen(0))
    await asyncio.sleep(0)
    feed.publish("custom", {"n": 2})
    feed.publish("end", None)
    feed.close()
    assert await late == [1, 2, 3]
    assert await listen(-1) == [0, 1, 2, 3]
    assert [item.event async for item in feed.listen(modes={"custom"})] == ["metadata", "custom", "end"]


async def test_a_slow_listener_skips_what_the_buffer_dropped() -> None:
    feed = RunFeed("run", max_events=3)
    for n in range(6):
        feed.publish("values", {"n": n})
    feed.close()
    assert [item.id async for item in feed.listen()] == [3, 4, 5]


def test_tokens_become_message_and_custom_events() -> None:
    translator = StreamTranslator(["messages", "custom", "values"])
    first = translator.translate("custom", MessageToken("m1", "Hello", "answer"))
    second = translator.translate("custom", MessageToken("m1", " world", "answer"))
    assert [event for event, _ in first] == ["custom", "messages/metadata", "messages/partial"]
    assert second[-1] == ("messages/partial", [second[-1][1][0]]) and second[-1][1][0]["content"] == "Hello world"
    assert translator.translate("updates", {"answer": {}}) == []  # not asked for
    assert translator.finish()[0][1][0]["content"] == "Hello world"
    assert graph_modes(["messages"]) == ["custom", "updates"] and graph_modes([]) == ["updates"]
    assert graph_modes(["updates", "values"]) == ["values", "updates"]


def test_an_interrupt_comes_as_values_when_updates_were_not_asked_for() -> None:
    """As the platform streams it (``useStream`` reads the interrupt from a ``values`` event)."""
    pending = {"__interrupt__": (Interrupt(value={"question": "Name?"}, id="i1"),)}
    expected = {"__interrupt__": [{"value": {"question": "Name?"}, "id": "i1"}]}
    assert StreamTranslator(["messages-tuple"]).translate("updates", pending) == [("values", expected)]
    assert StreamTranslator([]).translate("updates", pending) == [("values", expected)]
    assert StreamTranslator(["values"]).translate("updates", {"ask_name": {"name": "Ada"}}) == []
    assert StreamTranslator(["values"]).translate("updates", {"__interrupt__": ()}) == []  # a breakpoint
    assert StreamTranslator(["updates"]).translate("updates", pending) == [("updates", expected)]


def test_interrupts_and_objects_become_json() -> None:
    value = jsonable({"__interrupt__": (Interrupt(value={"question": "Name?"}, id="i1"),), "n": {1, 2}})
    assert value["__interrupt__"] == [{"value": {"question": "Name?"}, "id": "i1"}]
    assert sorted(value["n"]) == [1, 2]
