"""An interrupt reaches a streaming client whatever the stream modes it asked for, as the LangGraph
platform sends it: without ``updates``, as a ``values`` event ``{"__interrupt__": [...]}`` (the JS SDK's
``useStream`` reads it there, and asks for no mode at all when a component reads only ``interrupt``).
Over real HTTP with the official ``langgraph-sdk``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from atrium.app import create_app
from atrium.gateway.providers.fake import NO_ANSWER, FakeChatModel
from atrium.settings import Settings
from tests.conftest import ADMIN_KEY, LiveServer, free_port

QUESTION = {"question": "What is your name?"}


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[LangGraphClient]:
    app = create_app(settings, chat_model=FakeChatModel())
    async with LiveServer(app, free_port()) as live, get_client(url=live.url, api_key=ADMIN_KEY) as sdk:
        yield sdk


async def _events(client: LangGraphClient, thread_id: str, stream_mode: Any, assistant: str = "interviewer",
                  **run: Any) -> list[tuple[str, Any]]:
    return [(part.event, part.data) async for part in client.runs.stream(
        thread_id, assistant, stream_mode=stream_mode, **run)]


@pytest.mark.parametrize("stream_mode", [[], ["messages-tuple"], ["custom"]])
async def test_an_interrupt_comes_as_values_without_updates(client: LangGraphClient, stream_mode: list[str]) -> None:
    thread = await client.threads.create()
    events = await _events(client, thread["thread_id"], stream_mode,
                           input={"messages": [{"role": "user", "content": "Hello"}]})
    assert [name for name, _ in events] == ["metadata", "values", "end"]
    interrupts = events[1][1]["__interrupt__"]
    assert [item["value"] for item in interrupts] == [QUESTION] and interrupts[0]["id"]
    assert events[1][1].keys() == {"__interrupt__"}  # the interrupt alone, not the state
    # The resumed run streams no interrupt, and ends with the answer.
    resumed = await _events(client, thread["thread_id"], [*stream_mode, "values"], command={"resume": "Ada"})
    values = [data for name, data in resumed if name == "values"]
    assert not any("__interrupt__" in data for data in values)
    assert values[-1]["messages"][-1]["content"] == f"Ada: {NO_ANSWER}"


async def test_updates_asked_for_carry_the_interrupt_themselves(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    events = await _events(client, thread["thread_id"], ["updates"],
                           input={"messages": [{"role": "user", "content": "Hello"}]})
    assert [name for name, _ in events] == ["metadata", "updates", "end"]
    assert [item["value"] for item in events[1][1]["__interrupt__"]] == [QUESTION]


async def test_a_run_without_interrupt_sends_no_extra_values(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    events = await _events(client, thread["thread_id"], ["messages-tuple"], "echo",
                           input={"messages": [{"role": "user", "content": "Hi"}]})
    names = {name for name, _ in events}
    assert names == {"metadata", "messages", "end"}
    assert "".join(data[0]["content"] for name, data in events if name == "messages") == NO_ANSWER
