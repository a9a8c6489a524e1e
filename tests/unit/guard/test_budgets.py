"""Budget reservations on a real database, SQLite and PostgreSQL: atomic all-or-none reservations that
never let concurrent calls overspend, settling, crash safety (expired reservations), the definitions
cache (no query when an org has no budgets) and its invalidation across replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from atrium.errors import BudgetExceeded
from atrium.guard.budgets.ledger import BudgetGuard, Hold, micro_usd, resets_at, window_of
from atrium.settings import BudgetSettings
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import ApiKey, Budget, BudgetReservation, BudgetSpend, Organization, User
from atrium.store.ports import PubSub
from atrium.store.pubsub import InProcessPubSub, RedisPubSub
from atrium.store.tenancy import grant_app_role
from tests.tenancy_helpers import database_with_app_role

ORG, OTHER_ORG, USER, KEY = "org-1", "org-2", "user-1", "key-1"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", "postgres", "postgres-rls"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """``postgres-rls``: migrated by the owner, used as a normal role, so Row-Level Security applies."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'budgets.db'}"
        await asyncio.to_thread(upgrade, url)
    elif request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        await asyncio.to_thread(upgrade, url)
    else:
        roles = await database_with_app_role(request.getfixturevalue("postgres"))
        await asyncio.to_thread(upgrade, roles.owner_url)
        owner = Database(await asyncio.to_thread(build_engine, roles.owner_url))
        await grant_app_role(owner, roles.role)
        await owner.dispose()
        url = roles.app_url
    database = Database(await asyncio.to_thread(build_engine, url))
    async with database.system_session() as session:
        session.add_all([Organization(id=ORG, name="one"), Organization(id=OTHER_ORG, name="two")])
        await session.flush()
        session.add(User(id=USER, org_id=ORG, email="u@example.com"))
        await session.flush()
        session.add(ApiKey(id=KEY, org_id=ORG, user_id=USER, prefix="atr_x", key_hash="h" * 64))
    try:
        yield database
    finally:
        await database.dispose()


async def add_budget(db: Database, scope: str, subject: str, period: str, limit: int, org: str = ORG) -> str:
    async with db.system_session() as session:
        row = Budget(org_id=org, scope=scope, subject_id=subject, period=period, limit_micro_usd=limit)
        session.add(row)
        await session.flush()
        return row.id


async def spend(db: Database, budget_id: str) -> tuple[int, int]:
    """(spent, reserved) summed over the budget's windows."""
    async with db.system_session() as session:
        rows = (await session.execute(select(BudgetSpend.spent_micro_usd, BudgetSpend.reserved_micro_usd)
                                      .where(BudgetSpend.budget_id == budget_id))).all()
    return sum(r[0] for r in rows), sum(r[1] for r in rows)


def guard(db: Database, clock: Callable[[], datetime] | None = None, pubsub: PubSub | None = None,
          **settings: Any) -> BudgetGuard:
    return BudgetGuard(db, BudgetSettings(**settings), pubsub=pubsub, clock=clock or Clock())


async def test_concurrent_reservations_at_the_edge_never_overspend(db: Database) -> None:
    org_budget = await add_budget(db, "org", ORG, "day", 100_000)
    user_budget = await add_budget(db, "user", USER, "month", 1_000)  # the tight one
    key_budget = await add_budget(db, "key", KEY, "total", 50_000)
    budgets = guard(db)

    async def call() -> Hold | None:
        try:
            return await budgets.reserve(ORG, USER, KEY, 7)
        except BudgetExceeded:
            return None

    holds = await asyncio.gather(*(call() for _ in range(200)))
    admitted = [h for h in holds if h is not None]
    assert len(admitted) == 1_000 // 7  # as many as fit, not one more
    # All or none: the refused calls hold nothing in the budgets that had room.
    assert await spend(db, user_budget) == (0, 7 * len(admitted))
    assert await spend(db, org_budget) == (0, 7 * len(admitted))
    assert await spend(db, key_budget) == (0, 7 * len(admitted))
    await asyncio.gather(*(budgets.settle(h, 5) for h in admitted))
    assert await spend(db, user_budget) == (5 * len(admitted), 0)
    assert await spend(db, org_budget) == (5 * len(admitted), 0)
    async with db.system_session() as session:
        assert (await session.scalars(select(BudgetReservation))).all() == []


async def test_a_refused_call_names_the_budget_and_holds_nothing(db: Database) -> None:
    org_budget = await add_budget(db, "org", ORG, "day", 10_000)
    await add_budget(db, "key", KEY, "day", 100)
    budgets = guard(db)
    with pytest.raises(BudgetExceeded, match="key budget for today") as refused:
        await budgets.reserve(ORG, USER, KEY, 101)
    assert refused.value.status_code == 402
    assert await spend(db, org_budget) == (0, 0)
    # Another key of the org is not under the key budget.
    assert await budgets.reserve(ORG, USER, "key-other", 101) is not None


async def test_settling_charges_what_the_call_cost_in_the_window_it_started(db: Database) -> None:
    budget_id = await add_budget(db, "org", ORG, "day", 1_000)
    clock = Clock()
    budgets = guard(db, clock)
    hold = await budgets.reserve(ORG, None, None, 600)
    assert hold is not None
    with pytest.raises(BudgetExceeded):
        await budgets.reserve(ORG, None, None, 500)  # 600 held
    clock.now += timedelta(days=1)  # the call ends after midnight: charged to the day it started
    await budgets.settle(hold, 250)
    async with db.system_session() as session:
        windows = {row.window: (row.spent_micro_usd, row.reserved_micro_usd)
                   for row in await session.scalars(select(BudgetSpend).where(BudgetSpend.budget_id == budget_id))}
    assert windows == {"2026-11-21": (250, 0)}
    assert await budgets.reserve(ORG, None, None, 1_000) is not None  # a new day, a new window


async def test_an_expired_reservation_of_a_dead_process_stops_blocking_the_budget(db: Database) -> None:
    budget_id = await add_budget(db, "user", USER, "total", 1_000)
    clock = Clock()
    budgets = guard(db, clock, reservation_ttl_s=60)
    dead = await budgets.reserve(ORG, USER, None, 900)  # its process dies: it never settles
    assert dead is not None
    with pytest.raises(BudgetExceeded):
        await budgets.reserve(ORG, USER, None, 200)
    clock.now += timedelta(seconds=61)
    alive = await budgets.reserve(ORG, USER, None, 200)  # the expired one is released, then this fits
    assert alive is not None
    assert await spend(db, budget_id) == (0, 200)
    # A late settle of the expired reservation charges its cost but gives back nothing twice.
    await budgets.settle(dead, 100)
    await budgets.settle(alive, 150)
    assert await spend(db, budget_id) == (250, 0)


async def test_edge_check_refuses_only_a_used_up_budget(db: Database) -> None:
    budget_id = await add_budget(db, "org", ORG, "month", 1_000)
    budgets = guard(db)
    await budgets.check(ORG, USER, KEY)
    hold = await budgets.reserve(ORG, USER, KEY, 1_000)
    assert hold is not None
    await budgets.check(ORG, USER, KEY)  # held, not spent: the reservation decides, not the edge
    await budgets.settle(hold, 1_000)
    with pytest.raises(BudgetExceeded, match=r"org budget for this month \(2026-11\) is used up") as refused:
        await budgets.check(ORG, USER, KEY)
    assert "2026-12-01T00:00:00+00:00" in refused.value.message
    await budgets.check(OTHER_ORG, None, None)  # other tenants are not affected
    assert await spend(db, budget_id) == (1_000, 0)


async def test_an_org_without_budgets_costs_no_query_after_the_first(db: Database) -> None:
    budgets = guard(db, cache_ttl_s=60)
    statements: list[str] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute",
                 lambda *args: statements.append(args[2]))
    assert await budgets.reserve(ORG, USER, KEY, 1_000) is None
    first = len(statements)
    assert first >= 1
    for _ in range(50):
        assert await budgets.reserve(ORG, USER, KEY, 1_000) is None
        await budgets.check(ORG, USER, KEY)
    assert len(statements) == first


async def test_calls_that_find_the_budgets_uncached_share_one_read(db: Database) -> None:
    """A stampede guard: when an org's cached list expires under load, the calls arriving meanwhile share
    one query instead of queueing one each on the database."""
    await add_budget(db, "org", ORG, "day", 1_000_000)
    budgets = guard(db, cache_ttl_s=60)
    statements: list[str] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute",
                 lambda *args: statements.append(args[2]))
    found = await asyncio.gather(*(budgets.applicable(ORG, USER, KEY) for _ in range(30)))
    assert [len(b) for b in found] == [1] * 30
    assert len([s for s in statements if "FROM budgets" in s]) == 1, statements


async def test_a_budget_change_reaches_every_replica(db: Database, redis_url: str) -> None:
    replica_a = guard(db, pubsub=RedisPubSub(redis_url), cache_ttl_s=3600)
    admin = guard(db, pubsub=RedisPubSub(redis_url), cache_ttl_s=3600)
    try:
        assert await replica_a.applicable(ORG, USER, KEY) == []  # cached: "no budgets"
        await add_budget(db, "org", ORG, "day", 5)
        deadline = asyncio.get_running_loop().time() + 5
        while not await replica_a.applicable(ORG, USER, KEY):  # the subscription may still be starting
            assert asyncio.get_running_loop().time() < deadline, "the change never reached the replica"
            await admin.changed(ORG)
            await asyncio.sleep(0.05)
        with pytest.raises(BudgetExceeded):
            await replica_a.reserve(ORG, USER, KEY, 6)
    finally:
        await replica_a.aclose()
        await admin.aclose()


async def test_a_deleted_budget_stops_applying_even_from_a_stale_cache(db: Database) -> None:
    budget_id = await add_budget(db, "org", ORG, "day", 5)
    budgets = guard(db, pubsub=InProcessPubSub(), cache_ttl_s=3600)
    assert len(await budgets.applicable(ORG, None, None)) == 1
    async with db.system_session() as session:
        await session.delete(await session.get(Budget, budget_id))
    # No notification was sent: the reservation fails on the missing row, re-reads, and lets the call go.
    assert await budgets.reserve(ORG, None, None, 1_000) is None
    await budgets.aclose()


def test_windows_and_resets_are_utc_calendar_periods() -> None:
    moment = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert window_of("day", moment) == "2026-12-31"
    assert window_of("month", moment) == "2026-12"
    assert window_of("total", moment) == "total"
    assert resets_at("day", moment) == datetime(2027, 1, 1, tzinfo=UTC)
    assert resets_at("month", moment) == datetime(2027, 1, 1, tzinfo=UTC)
    assert resets_at("month", datetime(2026, 3, 5, tzinfo=UTC)) == datetime(2026, 4, 1, tzinfo=UTC)
    assert resets_at("total", moment) is None


def test_costs_are_whole_micro_usd_rounded_up() -> None:
    # USD per 1M tokens: one token at $2.5/1M costs 2.5 micro-USD.
    assert micro_usd(1, 0, 2.5, 10.0) == 3
    assert micro_usd(1000, 100, 2.5, 10.0) == 3_500
    assert micro_usd(3, 0, 0.1, 0) == 1  # 0.30000000000000004: a part of a micro-USD is a whole one
    assert micro_usd(10, 0, 0.1, 0) == 1
    assert micro_usd(0, 0, 5, 5) == 0


def test_reservations_must_outlive_the_longest_call() -> None:
    from pydantic import ValidationError

    from atrium.settings import Settings

    with pytest.raises(ValidationError, match=r"reservation_ttl_s must be longer than gateway\.total_timeout_s"):
        Settings(budgets={"reservation_ttl_s": 60}, gateway={"total_timeout_s": 120})
    assert Settings(budgets={"reservation_ttl_s": 600}, gateway={"total_timeout_s": 120})


async def test_a_window_row_that_vanished_is_made_again(db: Database) -> None:
    budget_id = await add_budget(db, "org", ORG, "total", 1_000)
    budgets = guard(db)
    first = await budgets.reserve(ORG, None, None, 100)  # makes the window row; remembered
    assert first is not None
    await budgets.settle(first, 100)
    async with db.system_session() as session:
        await session.delete(await session.get(BudgetSpend, (budget_id, "total")))
    second = await budgets.reserve(ORG, None, None, 100)
    assert second is not None
    await budgets.settle(second, 40)
    assert await spend(db, budget_id) == (40, 0)
