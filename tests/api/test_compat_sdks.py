"""The official SDKs against Atrium's vendor-compatible API over real HTTP: ``openai`` (AsyncOpenAI with
``base_url=<atrium>/v1``), ``anthropic`` (AsyncAnthropic with ``base_url=<atrium>``) and LangChain's
``ChatOpenAI``. The gateway behind them calls the fault-injecting upstream (see ``compat_env``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.api.compat_env import (
    ADMIN_KEY,
    DEFAULT_ANSWER,
    TOOL_ARGUMENTS,
    UPSTREAM_KEY,
    WEATHER_TOOL,
    server,
    upstream,
)
from tests.conftest import LiveServer
from tests.fault_upstream import FaultUpstream

__all__ = ["server", "upstream"]  # module-scoped fixtures used below

HELLO: list[Any] = [{"role": "user", "content": "Hello there"}]
WEATHER_ARGS = json.loads(TOOL_ARGUMENTS)
ANTHROPIC_WEATHER: Any = {"name": "get_weather", "description": "The weather in a city.",
                     "input_schema": WEATHER_TOOL["function"]["parameters"]}


# The SDKs read files when a client is built (package metadata, lazy imports): build them off the event
# loop, where the blocking-call guard does not look; once built they are async all the way.


async def openai_client(server: LiveServer, key: str = ADMIN_KEY) -> openai.AsyncOpenAI:
    return await asyncio.to_thread(openai.AsyncOpenAI, base_url=f"{server.url}/v1", api_key=key, max_retries=0)


async def anthropic_client(server: LiveServer, key: str = ADMIN_KEY) -> anthropic.AsyncAnthropic:
    return await asyncio.to_thread(anthropic.AsyncAnthropic, base_url=server.url, api_key=key, max_retries=0)


@pytest.fixture
async def oai(server: LiveServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with await openai_client(server) as sdk:
        yield sdk


@pytest.fixture
async def claude(server: LiveServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with await anthropic_client(server) as sdk:
        yield sdk


def text_of(message: Any) -> str:
    """The text of the first content block (which must be a text block)."""
    block = message.content[0]
    assert block.type == "text"
    return str(block.text)


def error_type(exc: anthropic.APIStatusError) -> str:
    body: Any = exc.body
    return str(body["error"]["type"])


# --- openai ---------------------------------------------------------------------------------------------


async def test_openai_completion_and_stream_agree(oai: openai.AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(model="gpt-test", messages=HELLO)
    assert completion.choices[0].message.content == DEFAULT_ANSWER
    assert completion.choices[0].finish_reason == "stop" and completion.model == "gpt-test"
    assert completion.usage is not None and completion.usage.completion_tokens == 15

    stream = await oai.chat.completions.create(model="gpt-test", messages=HELLO, stream=True,
                                               stream_options={"include_usage": True})
    texts, usage, finish = [], None, None
    async for chunk in stream:
        assert chunk.model == "gpt-test"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(texts) == completion.choices[0].message.content
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 15 and usage.total_tokens == usage.prompt_tokens + 15


async def test_openai_tool_round_trip(oai: openai.AsyncOpenAI, upstream: FaultUpstream) -> None:
    first = await oai.chat.completions.create(model="gpt-tool", messages=HELLO, tools=[WEATHER_TOOL])
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None and len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER_ARGS

    streamed = await oai.chat.completions.create(model="gpt-tool", messages=HELLO, tools=[WEATHER_TOOL],
                                                 stream=True)
    arguments, names = "", []
    async for chunk in streamed:
        for delta_call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            names += [delta_call.function.name] if delta_call.function and delta_call.function.name else []
            arguments += delta_call.function.arguments or "" if delta_call.function else ""
    assert names == ["get_weather"] and json.loads(arguments) == WEATHER_ARGS

    history: Any = [*HELLO, message.model_dump(exclude_none=True),
                    {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"}]
    answer = await oai.chat.completions.create(model="gpt-test", tools=[WEATHER_TOOL], messages=history)
    assert answer.choices[0].message.content == DEFAULT_ANSWER
    sent = upstream.requests[-1].body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": TOOL_ARGUMENTS}
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"}


async def test_openai_response_format_reaches_the_upstream(oai: openai.AsyncOpenAI, upstream: FaultUpstream) -> None:
    schema: Any = {"type": "json_schema", "json_schema": {
        "name": "answer", "strict": True,
        "schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}}
    await oai.chat.completions.create(model="gpt-test", messages=HELLO, response_format=schema)
    assert upstream.requests[-1].body["response_format"] == schema


async def test_openai_embeddings(oai: openai.AsyncOpenAI) -> None:
    floats = await oai.embeddings.create(model="embed-3", input=["red apple", "green pear"], encoding_format="float")
    packed = await oai.embeddings.create(model="embed-3", input=["red apple", "green pear"])  # SDK asks for base64
    assert [len(d.embedding) for d in floats.data] == [64, 64]
    for a, b in zip(floats.data, packed.data, strict=True):
        assert a.index == b.index
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
    assert floats.model == "embed-3" and floats.usage.prompt_tokens > 0
    short = await oai.embeddings.create(model="embed-3", input="red apple", dimensions=8)
    assert len(short.data[0].embedding) == 8


async def test_openai_models(oai: openai.AsyncOpenAI) -> None:
    models = {m.id: m for m in (await oai.models.list()).data}
    assert {"gpt-test", "gpt-alias", "claude-test", "resilient"} <= set(models)
    assert models["resilient"].owned_by == "atrium-route" and models["gpt-test"].owned_by == "up"
    assert (await oai.models.retrieve("gpt-alias")).id == "gpt-alias"


async def test_openai_typed_errors(oai: openai.AsyncOpenAI, server: LiveServer) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await oai.chat.completions.create(model="no-such-model", messages=HELLO)
    assert missing.value.code == "model_not_found"
    async with await openai_client(server, "atr_wrong_key_0123456789abcdefghij") as wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.list()
    with pytest.raises(openai.BadRequestError):
        await oai.chat.completions.create(model="gpt-test", messages=HELLO, n=2)
    with pytest.raises(openai.InternalServerError) as unavailable:
        await oai.chat.completions.create(model="gpt-503", messages=HELLO)
    assert unavailable.value.status_code == 503
    with pytest.raises(openai.RateLimitError):
        await oai.chat.completions.create(model="gpt-429", messages=HELLO, stream=True)
    assert UPSTREAM_KEY not in str(unavailable.value.body)


async def test_openai_stream_cut_midway_raises(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(model="gpt-cut", messages=HELLO, stream=True)
    texts: list[str] = []
    finishes: list[str] = []
    with pytest.raises(openai.APIError) as cut:
        async for chunk in stream:
            texts += [c.delta.content or "" for c in chunk.choices]
            finishes += [c.finish_reason for c in chunk.choices if c.finish_reason]
    assert "".join(texts) == "The quick" and finishes == []
    assert "broke" in cut.value.message


async def test_openai_fallback_names_the_model_that_served(oai: openai.AsyncOpenAI) -> None:
    raw = await oai.chat.completions.with_raw_response.create(model="resilient", messages=HELLO)
    assert raw.headers["x-atrium-model"] == "gpt-test"
    assert raw.parse().choices[0].message.content == DEFAULT_ANSWER
    async with oai.chat.completions.with_streaming_response.create(model="resilient", messages=HELLO,
                                                                   stream=True) as streamed:
        assert streamed.headers["x-atrium-model"] == "gpt-test"
        text = "".join([c.choices[0].delta.content or "" async for c in await streamed.parse() if c.choices])
    assert text == DEFAULT_ANSWER


# --- anthropic ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["claude-test", "gpt-test"])
async def test_anthropic_message_and_stream(claude: anthropic.AsyncAnthropic, model: str) -> None:
    message = await claude.messages.create(model=model, max_tokens=100, messages=HELLO)
    assert message.model == model and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert text_of(message) == DEFAULT_ANSWER
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 15 and message.usage.input_tokens > 0

    async with claude.messages.stream(model=model, max_tokens=100, messages=HELLO) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == DEFAULT_ANSWER
    assert text_of(final) == DEFAULT_ANSWER
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 15 and final.usage.input_tokens == message.usage.input_tokens


async def test_anthropic_max_tokens(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(model="gpt-test", max_tokens=3, messages=HELLO)
    assert text_of(message) == "The quick brown" and message.stop_reason == "max_tokens"


@pytest.mark.parametrize("model", ["claude-test", "gpt-test"])
async def test_anthropic_system_prompt_reaches_the_upstream(claude: anthropic.AsyncAnthropic,
                                                            upstream: FaultUpstream, model: str) -> None:
    await claude.messages.create(model=model, max_tokens=50, system="You answer in French.",
                                 messages=HELLO, stop_sequences=["END"],
                                 extra_body={"temperature": 0.5})  # this SDK version no longer sends it
    sent = upstream.requests[-1].body
    if model == "claude-test":
        assert sent["system"] == "You answer in French." and sent["messages"][0]["role"] == "user"
        assert sent["stop_sequences"] == ["END"]
    else:
        assert sent["messages"][0] == {"role": "system", "content": "You answer in French."}
        assert sent["stop"] == ["END"]
    assert sent["temperature"] == 0.5


@pytest.mark.parametrize(("model", "reason", "sequence"), [("claude-test", "stop_sequence", "fox"),
                                                         ("gpt-test", "end_turn", None)])
async def test_anthropic_stop_sequence_is_reported(claude: anthropic.AsyncAnthropic, model: str, reason: str,
                                                   sequence: str | None) -> None:
    """Anthropic's API names the stop sequence that ended the answer; an OpenAI-format upstream cannot say
    which (it reports ``stop`` either way), so its answer ends as ``end_turn``."""
    message = await claude.messages.create(model=model, max_tokens=100, messages=HELLO,
                                           stop_sequences=["END", "fox"])
    assert text_of(message) == "The quick brown "
    assert (message.stop_reason, message.stop_sequence) == (reason, sequence)
    async with claude.messages.stream(model=model, max_tokens=100, messages=HELLO,
                                      stop_sequences=["END", "fox"]) as stream:
        final = await stream.get_final_message()
    assert (text_of(final), final.stop_reason, final.stop_sequence) == ("The quick brown ", reason, sequence)


@pytest.mark.parametrize("model", ["claude-tool", "gpt-tool"])
async def test_anthropic_tool_use_round_trip(claude: anthropic.AsyncAnthropic, upstream: FaultUpstream,
                                             model: str) -> None:
    message = await claude.messages.create(model=model, max_tokens=100, messages=HELLO,
                                           tools=[ANTHROPIC_WEATHER])
    assert message.stop_reason == "tool_use"
    uses = [block for block in message.content if block.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].input == WEATHER_ARGS

    async with claude.messages.stream(model=model, max_tokens=100, messages=HELLO,
                                      tools=[ANTHROPIC_WEATHER]) as stream:
        final = await stream.get_final_message()
    streamed = [block for block in final.content if block.type == "tool_use"]
    assert final.stop_reason == "tool_use"
    assert [(b.name, b.input) for b in streamed] == [("get_weather", WEATHER_ARGS)]

    history: Any = [*HELLO, {"role": "assistant", "content": [b.model_dump() for b in message.content]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                                  "content": "18 degrees"}]}]
    answer = await claude.messages.create(model="gpt-test", max_tokens=100, tools=[ANTHROPIC_WEATHER],
                                          messages=history)
    assert text_of(answer) == DEFAULT_ANSWER
    sent = upstream.requests[-1].body["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == uses[0].id
    assert json.loads(sent[-2]["tool_calls"][0]["function"]["arguments"]) == WEATHER_ARGS
    assert sent[-1] == {"role": "tool", "tool_call_id": uses[0].id, "content": "18 degrees"}


async def test_anthropic_typed_errors(claude: anthropic.AsyncAnthropic, server: LiveServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        await claude.messages.create(model="no-such-model", max_tokens=10, messages=HELLO)
    assert error_type(missing.value) == "not_found_error"
    async with await anthropic_client(server, "atr_wrong_key_0123456789abcdefghij") as wrong:
        with pytest.raises(anthropic.AuthenticationError):
            await wrong.messages.create(model="gpt-test", max_tokens=10, messages=HELLO)
    with pytest.raises(anthropic.BadRequestError):
        await claude.messages.create(model="gpt-test", max_tokens=0, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError):
        await claude.messages.create(model="gpt-429", max_tokens=10, messages=HELLO)
    with pytest.raises(anthropic.InternalServerError) as unavailable:
        await claude.messages.create(model="gpt-503", max_tokens=10, messages=HELLO, stream=True)
    assert unavailable.value.status_code == 503
    assert error_type(unavailable.value) == "overloaded_error"


@pytest.mark.parametrize("model", ["claude-cut", "gpt-cut"])
async def test_anthropic_stream_cut_midway_raises(claude: anthropic.AsyncAnthropic, model: str) -> None:
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as cut:
        async with claude.messages.stream(model=model, max_tokens=100, messages=HELLO) as stream:
            async for text in stream.text_stream:
                texts.append(text)
    assert "".join(texts) == "The quick"
    assert error_type(cut.value) == "api_error"


# --- LangChain ------------------------------------------------------------------------------------------


@tool
def get_weather(city: str, unit: str = "celsius") -> str:
    """The weather in a city."""
    return f"18 degrees {unit} in {city}"


async def langchain_model(server: LiveServer, model: str) -> ChatOpenAI:
    return await asyncio.to_thread(ChatOpenAI, base_url=f"{server.url}/v1", api_key=ADMIN_KEY,
                                   model=model, max_retries=0)


async def test_langchain_invoke_and_stream(server: LiveServer) -> None:
    llm = await langchain_model(server, "gpt-test")
    answer = await llm.ainvoke("Hello there")
    assert answer.content == DEFAULT_ANSWER
    assert answer.response_metadata["model_name"] == "gpt-test"
    pieces = [chunk.content async for chunk in llm.astream("Hello there")]
    assert "".join(str(p) for p in pieces) == DEFAULT_ANSWER and len(pieces) > 3


async def test_langchain_bind_tools(server: LiveServer, upstream: FaultUpstream) -> None:
    llm = (await langchain_model(server, "gpt-tool")).bind_tools([get_weather])
    message = await llm.ainvoke("What is the weather in Paris?")
    assert isinstance(message, AIMessage)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", WEATHER_ARGS)]
    assert upstream.requests[-1].body["tools"][0]["function"]["name"] == "get_weather"

    gathered: Any = None
    async for chunk in llm.astream("What is the weather in Paris?"):
        gathered = chunk if gathered is None else gathered + chunk
    assert [(c["name"], c["args"]) for c in gathered.tool_calls] == [("get_weather", WEATHER_ARGS)]

    result = await get_weather.ainvoke(message.tool_calls[0]["args"])
    follow_up = await (await langchain_model(server, "gpt-test")).bind_tools([get_weather]).ainvoke([
        ("user", "What is the weather in Paris?"), message,
        ToolMessage(result, tool_call_id=message.tool_calls[0]["id"])])
    assert follow_up.content == DEFAULT_ANSWER
    assert upstream.requests[-1].body["messages"][-1]["content"] == "18 degrees celsius in Paris"
