"""The StreamLog backends (port: ``conversations/ports.py``): the replay buffer of answer streams.

``InProcessStreamLog`` keeps each stream in memory, for the embedded default (one process serves and
produces every answer). ``RedisStreamLog`` keeps each stream in a Redis Stream (``XADD`` with ``MAXLEN ~``,
``EXPIRE``; ``XREAD BLOCK`` to follow), so a client may resume on any replica an answer produced on
another; the producer's lease is a key with a time to live (``SET PX``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from atrium.conversations.ports import FINAL_EVENTS, StreamConflict, StreamEntry

DEFAULT_MAX_LEN = 10_000
DEFAULT_TTL_S = 300.0


@dataclass(slots=True)
class _Buffer:
    entries: deque[StreamEntry]
    expires_at: float
    last_seq: int = 0
    ended: bool = False


@dataclass(slots=True)
class _Lease:
    until: float


class InProcessStreamLog:
    """The streams of this process, in memory: at most ``max_len`` entries each (the oldest dropped), each
    stream forgotten ``ttl_s`` seconds after its last append (expired streams are swept as others append)."""

    def __init__(self, *, max_len: int = DEFAULT_MAX_LEN, ttl_s: float = DEFAULT_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max_len = max_len
        self._ttl_s = ttl_s
        self._clock = clock
        self._streams: dict[str, _Buffer] = {}
        self._leases: dict[str, _Lease] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._next_sweep = clock() + min(ttl_s, 60.0)

    async def append(self, stream: str, entries: Sequence[StreamEntry]) -> None:
        now = self._clock()
        self._sweep(now)
        buffer = self._live(stream, now)
        if buffer is None:
            buffer = self._streams[stream] = _Buffer(deque(maxlen=self._max_len), now + self._ttl_s)
        try:
            last = buffer.last_seq
            for entry in entries:  # all or nothing, as Redis's script
                if buffer.ended or entry.seq <= last:
                    raise StreamConflict(stream, last=buffer.last_seq, ended=buffer.ended)
                last = entry.seq
            for entry in entries:
                buffer.entries.append(entry)
                buffer.last_seq = entry.seq
                buffer.ended = entry.event in FINAL_EVENTS
        finally:
            buffer.expires_at = now + self._ttl_s
            waiter = self._waiters.pop(stream, None)
            if waiter is not None:
                waiter.set()

    async def read(self, stream: str, after: int = 0, *, block_s: float = 0.0,
                   limit: int = 1000) -> list[StreamEntry]:
        found = self._after(stream, after, limit)
        if found or block_s <= 0:
            return found
        waiter = self._waiters.setdefault(stream, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), block_s)
        return self._after(stream, after, limit)

    async def renew(self, stream: str, ttl_s: float) -> None:
        self._leases[stream] = _Lease(self._clock() + ttl_s)

    async def alive(self, stream: str) -> bool:
        lease = self._leases.get(stream)
        return lease is not None and lease.until > self._clock()

    async def release(self, stream: str) -> None:
        self._leases.pop(stream, None)

    async def forget(self, stream: str) -> None:
        self._streams.pop(stream, None)
        self._leases.pop(stream, None)

    async def aclose(self) -> None:
        self._streams.clear()
        self._leases.clear()
        for waiter in self._waiters.values():
            waiter.set()
        self._waiters.clear()

    def _after(self, stream: str, after: int, limit: int) -> list[StreamEntry]:
        buffer = self._live(stream, self._clock())
        if buffer is None:
            return []
        newer: list[StreamEntry] = []
        for entry in reversed(buffer.entries):  # a follower asks for the newest few: scan from the end
            if entry.seq <= after:
                break
            newer.append(entry)
        newer.reverse()
        return newer[:limit]

    def _live(self, stream: str, now: float) -> _Buffer | None:
        buffer = self._streams.get(stream)
        if buffer is not None and buffer.expires_at <= now:
            del self._streams[stream]
            return None
        return buffer

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(self._ttl_s, 60.0)
        for name in [name for name, buffer in self._streams.items() if buffer.expires_at <= now]:
            del self._streams[name]
        for name in [name for name, lease in self._leases.items() if lease.until <= now]:
            del self._leases[name]


# Appends a batch atomically: refuses ({0, last seq, ended}) when the stream has ended or a seq is not above
# its last, else adds every entry (trimmed to about MAXLEN), renews the time to live and answers {1, last, 0}.
# KEYS[1] the stream; ARGV: max_len, ttl_ms, then seq, event, data for each entry.
_APPEND = """
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last = 0
if #top > 0 then
  last = tonumber(string.match(top[1][1], '%-(%d+)$'))
  local fields = top[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'e' and (fields[i + 1] == 'done' or fields[i + 1] == 'error') then
      return {0, last, 1}
    end
  end
end
local top_seq = last
for i = 3, #ARGV, 3 do
  if tonumber(ARGV[i]) <= last then return {0, top_seq, 0} end
  last = tonumber(ARGV[i])
end
for i = 3, #ARGV, 3 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '0-' .. ARGV[i], 'e', ARGV[i + 1], 'd', ARGV[i + 2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, last, 0}
"""


@dataclass(slots=True)
class RedisStreamLog:
    """Redis Streams through one shared client (redis-py asyncio, built and closed by the container). A
    stream is the key ``{prefix}stream:{name}``, its entries have the ids ``0-{seq}``; the lease is
    ``{prefix}lease:{name}``. ``XREAD BLOCK`` holds a pooled connection while it waits, so a follower
    blocks for a short while at a time (``block_s``)."""

    client: Redis
    prefix: str = "atrium:answers:"
    max_len: int = DEFAULT_MAX_LEN
    ttl_s: float = DEFAULT_TTL_S
    _script: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._script = self.client.register_script(_APPEND)

    async def append(self, stream: str, entries: Sequence[StreamEntry]) -> None:
        if not entries:
            return
        args: list[str | int] = [self.max_len, max(1, int(self.ttl_s * 1000))]
        for entry in entries:
            args += [entry.seq, entry.event, json.dumps(entry.data, ensure_ascii=False)]
        added, last, ended = await self._script(keys=[self._stream(stream)], args=args)
        if not int(added):
            raise StreamConflict(stream, last=int(last), ended=bool(int(ended)))

    async def read(self, stream: str, after: int = 0, *, block_s: float = 0.0,
                   limit: int = 1000) -> list[StreamEntry]:
        key = self._stream(stream)
        block = max(1, int(block_s * 1000)) if block_s > 0 else None
        reply = await self.client.xread({key: f"0-{after}"}, count=limit, block=block)
        return [_entry(entry_id, fields) for entry_id, fields in _entries_of(reply)]

    async def renew(self, stream: str, ttl_s: float) -> None:
        await self.client.set(self._lease(stream), b"1", px=max(1, int(ttl_s * 1000)))

    async def alive(self, stream: str) -> bool:
        return bool(await self.client.exists(self._lease(stream)))

    async def release(self, stream: str) -> None:
        await self.client.delete(self._lease(stream))

    async def forget(self, stream: str) -> None:
        await self.client.delete(self._stream(stream), self._lease(stream))

    async def aclose(self) -> None:
        """Nothing of its own to close: the client belongs to the container."""

    def _stream(self, name: str) -> str:
        return f"{self.prefix}stream:{name}"

    def _lease(self, name: str) -> str:
        return f"{self.prefix}lease:{name}"


def _entries_of(reply: Any) -> list[tuple[Any, Any]]:
    """The entries of a one-stream ``XREAD`` reply, in RESP2 (a list of pairs) or RESP3 (a map) form."""
    if not reply:
        return []
    groups = reply.values() if isinstance(reply, dict) else (entries for _key, entries in reply)
    return [(item[0], item[1]) for entries in groups for item in entries]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(entry_id: Any, fields: Any) -> StreamEntry:
    values = {_text(name): _text(value) for name, value in dict(fields).items()}
    return StreamEntry(seq=int(_text(entry_id).rpartition("-")[2]), event=values["e"], data=json.loads(values["d"]))
