"""The assistant graph on the bundled local model (Qwen2.5-Coder 0.5B on llama.cpp), which has no native
tool calling: one grounded answer (the rules classify, the model answers from the retrieved source,
validation accepts it, the tokens stream through LangGraph's custom stream), and one tool call through
the structured-output (JSON) stand-in."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from atrium.errors import ModelUnavailable
from atrium.gateway.local_models import assemble_model
from atrium.gateway.providers.llama_server import LlamaServerConfig, ManagedLlamaServer
from atrium.gateway.providers.local_llama import LocalChatModel
from atrium.knowledge.answering import NO_ANSWER
from tests.agent_helpers import MEMBER, assistant, knowledge_world, sqlite_saver, turn

pytestmark = pytest.mark.integration

LOCAL_MODEL = "qwen2.5-coder-0.5b"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (extra `local`)")
    shared = os.environ.get("TEST_MODEL_CACHE_DIR")
    cache = Path(shared) if shared else tmp_path_factory.getbasetemp() / "model-cache"
    try:
        return assemble_model(LOCAL_MODEL, cache)
    except ModelUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
async def local(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalChatModel]:
    config = LlamaServerConfig(model=LOCAL_MODEL, cache_dir=model_path.parent, log_dir=tmp_path_factory.mktemp("logs"),
                               model_path=model_path, n_ctx=2048)
    model = LocalChatModel(ManagedLlamaServer(config), ready_timeout_s=120.0, request_timeout_s=120.0)
    await model.start()
    try:
        yield model
    finally:
        await model.aclose()


async def test_a_grounded_answer_on_the_local_model(local: LocalChatModel, tmp_path: Path) -> None:
    async with knowledge_world(tmp_path) as world, sqlite_saver(tmp_path / "checkpoints.sqlite") as saver:
        with anyio.fail_after(300):
            result = await turn(assistant(world, local, saver), "How long do refunds take?")
    state = result.state
    assert state["intent"] == "qa" and state["sources"][0]["source"] == "refunds.md"
    assert state["answer"] and state["answer"] != NO_ANSWER, state
    assert "14" in state["answer"]
    assert any(source["cited"] for source in state["sources"])
    assert result.streamed == state["answer"]
    assert result.steps[-2:] == ["validate", "finish"]


async def test_a_tool_call_through_the_json_stand_in_on_the_local_model(local: LocalChatModel,
                                                                         tmp_path: Path) -> None:
    async with knowledge_world(tmp_path) as world, sqlite_saver(tmp_path / "checkpoints.sqlite") as saver:
        with anyio.fail_after(300):
            result = await turn(assistant(world, local, saver), "Create a project called Falcon for the spring launch")
    [record] = world.projects.projects.values()
    assert "Falcon" in record.title and record.user_id == MEMBER.user_id
    assert result.state["tool_log"][0]["name"] == "create_project" and result.state["tool_log"][0]["ok"] is True
    assert record.id in result.state["answer"]
