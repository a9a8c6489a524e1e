"""SingleFlight: concurrent readers of one key share a read; its error reaches them all; a reader that
leaves does not cancel the others' read; ``forget`` makes later readers start a new one."""

from __future__ import annotations

import asyncio

import pytest

from atrium.store.single_flight import SingleFlight


class Reads:
    """A read that counts its calls and waits for ``release`` before answering."""

    def __init__(self, answer: object = "value", error: Exception | None = None) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self._answer, self._error = answer, error

    async def __call__(self) -> str:
        self.calls += 1
        number = self.calls
        await self.release.wait()
        if self._error is not None:
            raise self._error
        return f"{self._answer}-{number}"


async def test_concurrent_callers_of_a_key_share_one_read() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    reads, others = Reads(), Reads("other")
    waiting = [asyncio.create_task(flight.run("k", reads)) for _ in range(20)]
    other = asyncio.create_task(flight.run("j", others))
    await asyncio.sleep(0.01)
    reads.release.set()
    others.release.set()
    assert await asyncio.gather(*waiting) == ["value-1"] * 20
    assert await other == "other-1"
    assert (reads.calls, others.calls) == (1, 1)
    assert await flight.run("k", reads) == "value-2"  # done: the next caller reads again


async def test_the_read_error_reaches_every_caller_and_the_next_caller_retries() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    failing = Reads(error=RuntimeError("database down"))
    waiting = [asyncio.create_task(flight.run("k", failing)) for _ in range(5)]
    await asyncio.sleep(0.01)
    failing.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert [str(r) for r in results] == ["database down"] * 5 and failing.calls == 1
    working = Reads()
    working.release.set()
    assert await flight.run("k", working) == "value-1"


async def test_a_caller_that_leaves_does_not_cancel_the_shared_read() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    reads = Reads()
    leaving = asyncio.create_task(flight.run("k", reads))
    staying = asyncio.create_task(flight.run("k", reads))
    await asyncio.sleep(0.01)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    reads.release.set()
    assert await staying == "value-1" and reads.calls == 1


async def test_forget_makes_later_callers_start_a_new_read() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    reads = Reads()
    before = asyncio.create_task(flight.run("k", reads))
    await asyncio.sleep(0.01)
    flight.forget("k")
    after = asyncio.create_task(flight.run("k", reads))
    await asyncio.sleep(0.01)
    reads.release.set()
    assert sorted(await asyncio.gather(before, after)) == ["value-1", "value-2"] and reads.calls == 2
