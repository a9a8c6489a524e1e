"""The conversations room's port: ``StreamLog``, the replay buffer of answer streams.

Every event of an answer run (``meta``, ``token``..., ``sources``, then ``done`` or ``error``) is appended
to the run's stream under its sequence number (1, 2, 3...; the SSE ``id``), so a client that lost the
stream reads the rest after the last id it saw, from any replica. The producing run also holds a lease on
its stream, renewed by a heartbeat: a stream without a final event whose lease has lapsed was abandoned
(its process died), which a reader turns into a typed error instead of waiting for ever.

Backends: ``InProcessStreamLog`` (the embedded default) and ``RedisStreamLog`` (Redis Streams, when
``ATRIUM_REDIS_URL`` is set), in ``conversations/stream_logs.py``; one contract suite holds both
(``tests/contract/test_stream_log_contract.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

FINAL_EVENTS = frozenset({"done", "error"})


@dataclass(slots=True)
class RunEvent:
    """One event of an answer run as it is produced (``conversations/runs.py``); ``seq`` numbers it."""

    event: str  # meta | token | sources | done | error
    data: dict[str, Any]
    seq: int = 0  # its place in the run's stream, from 1 (the SSE id)


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One event of a stream: its sequence number (from 1, increasing by one), name and JSON payload."""

    seq: int
    event: str
    data: dict[str, Any]

    @property
    def final(self) -> bool:
        return self.event in FINAL_EVENTS


class StreamConflict(Exception):
    """An append refused: a sequence number not above the stream's ``last`` one, or the stream ``ended``
    (a final event is in it). Either another writer got there first, or an earlier try of the same append
    was applied although its answer was lost."""

    def __init__(self, stream: str, *, last: int, ended: bool) -> None:
        super().__init__(f"stream {stream!r} is at {last}{' and has ended' if ended else ''}")
        self.last = last
        self.ended = ended


class StreamLog(Protocol):
    """A bounded, expiring log of events per stream, readable by any process that shares the backend.

    * ``append`` adds entries in order; a ``seq`` not above the stream's last raises ``StreamConflict`` (and
      nothing of the batch from that entry on is added). Each append renews the stream's time to live.
    * ``read`` answers the entries after ``after`` (oldest first, at most ``limit``); when there are none
      yet it waits up to ``block_s`` for one. A stream that does not exist (never made, or expired) reads
      as empty. The oldest entries of a long stream may have been trimmed: a reader sees the gap in the
      sequence numbers.
    * ``renew`` (re)takes the producer's lease for ``ttl_s`` seconds; ``alive`` says whether it still holds;
      ``release`` drops it (the stream ended).
    * ``forget`` erases a stream, its entries and its lease (its conversation was deleted); a stream that
      does not exist is no error.
    """

    async def append(self, stream: str, entries: Sequence[StreamEntry]) -> None: ...

    async def read(self, stream: str, after: int = 0, *, block_s: float = 0.0,
                   limit: int = 1000) -> list[StreamEntry]: ...

    async def renew(self, stream: str, ttl_s: float) -> None: ...

    async def alive(self, stream: str) -> bool: ...

    async def release(self, stream: str) -> None: ...

    async def forget(self, stream: str) -> None: ...

    async def aclose(self) -> None: ...
