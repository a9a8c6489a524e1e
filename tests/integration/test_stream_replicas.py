"""Resumable streams in the scale profile (Redis Streams, a shared database): a stream produced on one
replica is resumed on another; and when the producing process is killed (``kill -9``), a reader on the
other replica gets a typed ``producer_lost`` error and the message is marked failed, never a silent
truncation."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from atrium.app import create_app
from atrium.gateway.providers.fake import FakeChatModel
from atrium.settings import Settings
from atrium.store.models import Message
from tests.api.helpers import ingest
from tests.api.stream_helpers import FAST_LEASES, parse_events, read_events, resume_path, tokens_of
from tests.conftest import ADMIN_KEY, LiveServer, RunningApp, free_port, make_settings, run_app

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
ROOT = Path(__file__).resolve().parents[2]


def _replica(tmp_path: Path, name: str, redis_url: str) -> Settings:
    return make_settings(tmp_path / name, database_url=f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}",
                         redis_url=redis_url, streams=FAST_LEASES, knowledge={"reconcile_interval_s": 60})


def _two_tokens(events: list) -> bool:  # type: ignore[type-arg]
    return sum(event.name == "token" for event in events) == 2


async def _stored(running: RunningApp, message_id: str) -> Message:
    async with running.services.db.system_session() as session:
        row = await session.get(Message, message_id)
    assert row is not None
    return row


async def test_a_stream_produced_on_one_replica_is_resumed_on_another(tmp_path: Path, redis_url: str) -> None:
    producer = create_app(_replica(tmp_path, "a", redis_url), chat_model=FakeChatModel(token_delay=0.1))
    async with LiveServer(producer, free_port()) as server, \
            httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as client:
        await ingest(client)
        async with run_app(_replica(tmp_path, "b", redis_url)) as other:
            async with client.stream("POST", "/api/v1/chat/ask",
                                     json={"message": "How long do refunds take?", "stream": True}) as response:
                first = await read_events(response, until=_two_tokens)
            resumed = await other.client.get(resume_path(first[0].data), headers={"Last-Event-ID": str(first[-1].id)})
            rest = parse_events(resumed.text)
            assert rest[0].id == first[-1].id + 1 and rest[-1].name == "done"
            assert tokens_of(first) + tokens_of(rest) == rest[-1].data["answer"]
            assert (await _stored(other, first[0].data["message_id"])).status == "complete"


@pytest.fixture
async def producer_process(tmp_path: Path, redis_url: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Replica A in its own process (uvicorn), sharing the database and Redis with the test's replica."""
    port = free_port()
    settings = _replica(tmp_path, "a", redis_url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
           "ATRIUM_DATA_DIR": str(settings.data_dir), "ATRIUM_DATABASE_URL": settings.resolved_database_url,
           "ATRIUM_REDIS_URL": redis_url, "ATRIUM_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY, "ATRIUM_CHAT__PROVIDER": "fake",
           "ATRIUM_EMBEDDING__PROVIDER": "hash", "ATRIUM_KNOWLEDGE__DEMO_COLLECTION": "false",
           "ATRIUM_KNOWLEDGE__MIN_RELEVANCE": "0.05", "ATRIUM_STREAMS__HEARTBEAT_S": "0.1",
           "ATRIUM_STREAMS__LEASE_S": "0.5"}
    log = tmp_path / "producer.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.integration.stream_producer",
                                                       str(port), cwd=ROOT, env=env, stdout=output, stderr=output)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as probe:
            for _ in range(600):
                if process.returncode is not None:
                    pytest.fail(f"the producer process exited: {log.read_text()[-2000:]}")
                try:
                    if (await probe.get("/ready")).status_code < 500:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"the producer process did not start: {log.read_text()[-2000:]}")
        yield process, url
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_killing_the_producing_process_ends_the_reader_with_a_typed_error(
        tmp_path: Path, redis_url: str, producer_process: tuple[asyncio.subprocess.Process, str]) -> None:
    process, url = producer_process
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:
        await ingest(client)
        async with client.stream("POST", "/api/v1/chat/ask",
                                 json={"message": "How long do refunds take?", "stream": True}) as response:
            first = await read_events(response, until=_two_tokens)
            await asyncio.sleep(0.1)  # the second token is journaled; the next comes 0.3 s later
            process.kill()  # SIGKILL: no shutdown, no final event, no stored answer
            await process.wait()
    meta = first[0].data
    async with run_app(_replica(tmp_path, "b", redis_url)) as other:
        resumed = await other.client.get(resume_path(meta), headers={"Last-Event-ID": str(first[-1].id)})
        rest = parse_events(resumed.text)
        assert rest, resumed.text
        assert rest[-1].name == "error" and rest[-1].data["code"] == "producer_lost", rest
        assert [event.id for event in rest] == list(range(first[-1].id + 1, first[-1].id + 1 + len(rest)))
        stored = await _stored(other, meta["message_id"])
        assert stored.status == "error" and stored.error == {"code": "producer_lost",
                                                             "message": rest[-1].data["message"]}
        assert stored.content == tokens_of(first) + tokens_of(rest)  # what was streamed, nothing more
        # Any later reader ends the same way, from the buffer.
        again = parse_events((await other.client.get(resume_path(meta))).text)
        assert again[0].name == "meta" and again[-1].data["code"] == "producer_lost"
