"""The local model runs in its own process: its death never takes the API process (this test process)
down, a stream it was serving ends with a retryable ``model_unavailable``, the supervisor brings it back,
and it never outlives the API process.

Servers here start one after another (never two llama.cpp servers at once on a 2-core machine).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from atrium.errors import ModelUnavailable
from atrium.gateway.local_models import assemble_model
from atrium.gateway.ports import ChatEvent, ChatMessage, ChatRequest, Done, ErrorEvent, Token
from atrium.gateway.providers.llama_server import LlamaServerConfig, ManagedLlamaServer
from atrium.gateway.providers.local_llama import LocalChatModel

pytestmark = pytest.mark.integration

LOCAL_MODEL = "qwen2.5-coder-0.5b"
LONG = ChatRequest(messages=(ChatMessage("user", "Write the numbers from 1 to 300, one per line."),),
                   max_tokens=400, temperature=0.0)
SHORT = ChatRequest(messages=(ChatMessage("user", "Say hello."),), max_tokens=8, temperature=0.0)


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting for its reaper is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no procfs: fall back to a signal probe
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (extra `local`)")
    try:
        return assemble_model(LOCAL_MODEL, tmp_path_factory.getbasetemp() / "model-cache")
    except ModelUnavailable as exc:
        pytest.skip(str(exc))


def config(model_path: Path, log_dir: Path, **overrides: object) -> LlamaServerConfig:
    settings: dict[str, object] = {"model": LOCAL_MODEL, "cache_dir": model_path.parent, "log_dir": log_dir,
                                   "model_path": model_path, "n_ctx": 1024, "restart_backoff_s": 0.2}
    settings.update(overrides)
    return LlamaServerConfig(**settings)  # type: ignore[arg-type]


async def collect(model: LocalChatModel, request: ChatRequest) -> list[ChatEvent]:
    return [event async for event in model.stream(request)]


def test_server_dies_with_its_parent(model_path: Path, tmp_path: Path) -> None:
    """kill -9 of the API process (here: a child Python process running a ManagedLlamaServer) must not
    leave the llama.cpp server behind."""
    script = (
        "import asyncio\n"
        "from pathlib import Path\n"
        "from atrium.gateway.providers.llama_server import LlamaServerConfig, ManagedLlamaServer\n"
        "async def main():\n"
        f"    server = ManagedLlamaServer(LlamaServerConfig(model={LOCAL_MODEL!r}, cache_dir=Path({str(tmp_path)!r}),"
        f" log_dir=Path({str(tmp_path)!r}), model_path=Path({str(model_path)!r}), n_ctx=512))\n"
        "    await server.start()\n"
        "    print(server.pid, flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"the parent did not start a server (exit {parent.poll()})"
        server_pid = int(line)
        assert alive(server_pid)
    finally:
        parent.kill()
        parent.wait()
    assert wait_dead(server_pid), "the llama.cpp server outlived its parent"


async def test_aclose_terminates_the_process(model_path: Path, tmp_path: Path) -> None:
    server = ManagedLlamaServer(config(model_path, tmp_path))
    await server.start()
    pid = server.pid
    assert pid is not None and alive(pid)
    await server.aclose()
    assert not alive(pid)
    assert server.is_healthy() is False
    with pytest.raises(ModelUnavailable, match="closed"):
        await server.wait_ready(1.0)


async def test_a_server_that_cannot_start_fails_fast_with_its_log(model_path: Path, tmp_path: Path) -> None:
    server = ManagedLlamaServer(config(model_path, tmp_path, extra_args=("--n_ctx", "-5")))
    try:
        with pytest.raises(ModelUnavailable, match="exited with code") as caught:
            await server.start()
        assert "validation error" in caught.value.message  # the server's own output says why
        started = time.monotonic()
        with pytest.raises(ModelUnavailable):
            await server.wait_ready(30.0)  # backing off after a failed launch: fail now, do not wait 30 s
        assert time.monotonic() - started < 5.0
    finally:
        await server.aclose()


@pytest.fixture(scope="module")
async def local(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalChatModel]:
    server = ManagedLlamaServer(config(model_path, tmp_path_factory.mktemp("isolation-logs")))
    model = LocalChatModel(server, ready_timeout_s=60.0, request_timeout_s=60.0)
    await model.start()
    try:
        yield model
    finally:
        await model.aclose()


async def healthy_server_of(model: LocalChatModel) -> ManagedLlamaServer:
    server = model._server
    await server.wait_ready(60.0)
    return server


async def test_kill_mid_stream_ends_with_model_unavailable_then_recovers(local: LocalChatModel) -> None:
    server = await healthy_server_of(local)
    victim = server.pid
    assert victim is not None
    restarts = server.restarts
    events: list[ChatEvent] = []
    async for event in local.stream(LONG):
        events.append(event)
        if isinstance(event, Token) and sum(isinstance(e, Token) for e in events) == 5:
            os.kill(victim, signal.SIGKILL)
    assert sum(isinstance(e, Token) for e in events) >= 5
    assert not any(isinstance(e, Done) for e in events)
    assert events[-1] == ErrorEvent(code="model_unavailable", message=events[-1].message, retryable=True)  # type: ignore[union-attr]
    assert sum(isinstance(e, ErrorEvent) for e in events) == 1

    # This process is still here; the next request waits for the supervisor's restart and succeeds.
    after = await collect(local, SHORT)
    assert isinstance(after[-1], Done), after[-1]
    assert server.pid not in (None, victim)
    assert server.restarts == restarts + 1
    assert not alive(victim)
    assert await local.ready()


async def test_a_request_racing_a_crash_is_served_by_the_restarted_server(local: LocalChatModel) -> None:
    server = await healthy_server_of(local)
    victim = server.pid
    assert victim is not None
    os.kill(victim, signal.SIGKILL)  # the supervisor has not noticed yet when the request starts
    events = await collect(local, SHORT)
    assert isinstance(events[-1], Done), events[-1]
    assert server.pid != victim


async def test_supervisor_restarts_an_idle_server(local: LocalChatModel) -> None:
    server = await healthy_server_of(local)
    victim = server.pid
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    for _ in range(600):
        if server.is_healthy() and server.pid != victim:
            break
        await asyncio.sleep(0.05)
    assert server.is_healthy() and server.pid != victim, "no restart without any request"


async def test_a_prompt_longer_than_the_context_is_reported_as_such(local: LocalChatModel) -> None:
    too_long = ChatRequest(messages=(ChatMessage("user", "word " * 1500),), max_tokens=8)
    events = await collect(local, too_long)
    assert events == [ErrorEvent(code="context_length_exceeded", message=events[-1].message)]  # type: ignore[union-attr]
    assert "1024" in events[-1].message  # type: ignore[union-attr]
    assert isinstance((await collect(local, SHORT))[-1], Done)
