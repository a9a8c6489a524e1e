"""The journal of an answer run: its events reach the replay buffer in order and in batches, whatever the
buffer does (fails for a while, applies an append whose answer is lost, is ended by a reader)."""

from __future__ import annotations

from collections.abc import Sequence

from atrium.conversations.journal import RunJournal
from atrium.conversations.ports import StreamEntry
from atrium.conversations.runs import AnswerRun
from atrium.conversations.stream_logs import InProcessStreamLog


class FlakyLog(InProcessStreamLog):
    """Counts appends; ``fail`` appends raise before applying, ``lose`` ones raise after applying."""

    def __init__(self, *, fail: int = 0, lose: int = 0) -> None:
        super().__init__()
        self.appends = 0
        self.fail, self.lose = fail, lose

    async def append(self, stream: str, entries: Sequence[StreamEntry]) -> None:
        self.appends += 1
        if self.fail:
            self.fail -= 1
            raise ConnectionError("the buffer is down")
        await super().append(stream, entries)
        if self.lose:
            self.lose -= 1
            raise TimeoutError("applied, but the answer was lost")


async def _answer(log: InProcessStreamLog, tokens: int = 100) -> AnswerRun:
    run = AnswerRun(journal=RunJournal(log, "s", lease_s=1.0, heartbeat_s=0.05))
    run.emit("meta", message_id="m")
    assert run.journal is not None
    await run.journal.open()
    for number in range(tokens):
        run.emit("token", text=f" {number}")
    run.emit("done", answer="...")
    await run.journal.close()
    return run


async def test_events_are_appended_in_order_in_a_few_batches_and_the_lease_is_dropped() -> None:
    log = FlakyLog()
    await _answer(log)
    entries = await log.read("s", limit=1000)
    assert [entry.seq for entry in entries] == list(range(1, 103))
    assert entries[-1].event == "done"
    assert log.appends <= 3
    assert not await log.alive("s")


async def test_a_failing_buffer_is_retried_and_an_applied_append_is_not_repeated() -> None:
    for log in (FlakyLog(fail=2), FlakyLog(lose=1)):
        await _answer(log, tokens=5)
        assert [entry.seq for entry in await log.read("s")] == list(range(1, 8))


async def test_a_stream_ended_by_a_reader_stops_the_journal_quietly() -> None:
    log = InProcessStreamLog()
    run = AnswerRun(journal=RunJournal(log, "s", lease_s=1.0, heartbeat_s=0.05))
    run.emit("meta", message_id="m")
    assert run.journal is not None
    await run.journal.open()
    await log.append("s", [StreamEntry(2, "error", {"code": "producer_lost", "message": "m"})])
    run.emit("token", text="late")
    run.emit("done", answer="late")
    await run.journal.close()
    assert [entry.event for entry in await log.read("s")] == ["meta", "error"]
