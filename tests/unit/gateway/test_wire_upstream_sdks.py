"""The fault upstream checked against the official OpenAI and Anthropic SDKs, so that what the adapters are
tested against is what those vendors send (streams, tool calls, errors, embeddings, models, Azure paths)."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.fault_upstream import TOOL_ARGUMENTS, FaultUpstream


async def test_the_anthropic_sdk_reads_the_upstream(upstream: FaultUpstream) -> None:
    client = anthropic.AsyncAnthropic(base_url=upstream.root_url, api_key="sk-ant-test", max_retries=0)
    messages = [{"role": "user", "content": "hi there"}]
    async with client.messages.stream(model="ok", max_tokens=5, messages=messages) as stream:  # type: ignore[arg-type]
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "The quick brown fox jumps"
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == ("max_tokens", 2, 5)
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    async with client.messages.stream(model="tool", max_tokens=50, messages=messages, tools=tools) as stream:  # type: ignore[arg-type]
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(block.type, getattr(block, "input", None)) for block in final.content] == [
        ("text", None), ("tool_use", {"city": "Paris", "unit": "celsius"})
    ]
    with pytest.raises(anthropic.APIStatusError) as raised:
        await client.messages.create(model="status-529", max_tokens=5, messages=messages)  # type: ignore[arg-type]
    assert raised.value.status_code == 529 and type(raised.value).__name__ == "OverloadedError"


async def test_the_openai_sdk_reads_the_upstream(upstream: FaultUpstream) -> None:
    client = openai.AsyncOpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0)
    stream = await client.chat.completions.create(
        model="tool", messages=[{"role": "user", "content": "x"}], stream=True, stream_options={"include_usage": True}
    )
    arguments, usage = "", None
    async for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            arguments += call.function.arguments or "" if call.function else ""
        usage = chunk.usage or usage
    assert arguments == TOOL_ARGUMENTS and usage is not None and usage.completion_tokens == 3
    embeddings = await client.embeddings.create(model="ok", input=["hello world"])  # the SDK asks for base64
    assert len(embeddings.data[0].embedding) == 64 and embeddings.usage.prompt_tokens == 2
    assert "ok" in [model.id async for model in await client.models.list()]
    azure = openai.AsyncAzureOpenAI(azure_endpoint=upstream.root_url, api_key="k", api_version="2024-10-21",
                                    max_retries=0)
    answer = await azure.chat.completions.create(model="ok", messages=[{"role": "user", "content": "x"}])
    assert (answer.choices[0].message.content or "").startswith("The quick brown fox")
    assert upstream.requests[-1].path == "/openai/deployments/ok/chat/completions"
