"""Budgets in the database: the atomic reserve / settle / release statements and the admin reads and
writes. Every function takes the tenant (``org_id``) and runs inside the caller's ``tenant_session``.

A reservation holds money in ``budget_spend.reserved_micro_usd`` of every budget a call falls under, and
one ``budget_reservations`` row per budget says how much and until when. Whoever deletes that row (the
settling call, or a sweep once it expired) is the one who gives the money back, so a reservation is
released exactly once even when a slow call and a sweep race.

Lock order: rows are always touched in ``budget_id`` order, so concurrent calls that share budgets
cannot deadlock on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    Table,
    and_,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.store.models import Budget, BudgetReservation, BudgetSpend

_SPEND = cast(Table, BudgetSpend.__table__)
_RESERVATIONS = cast(Table, BudgetReservation.__table__)


@dataclass(frozen=True, slots=True)
class Line:
    """One budget's part of a reservation: which budget, in which window."""

    budget_id: str
    window: str


class Refused(Exception):
    """A budget cannot take the reservation (the transaction must roll back). ``missing``: its window row
    does not exist (the caller skipped creating it, believing it did)."""

    def __init__(self, line: Line, *, missing: bool = False) -> None:
        super().__init__(line.budget_id)
        self.budget_id = line.budget_id
        self.line = line
        self.missing = missing


# The hot statements are built once, with bound parameters, so SQLAlchemy compiles each once per dialect
# and a call only binds values (building and compiling them per call cost more than running them).
_HOLD = (
    update(_SPEND)
    .where(_SPEND.c.budget_id == bindparam("b_id"), _SPEND.c.window == bindparam("w"),
           _SPEND.c.org_id == bindparam("org"),
           _SPEND.c.spent_micro_usd + _SPEND.c.reserved_micro_usd + bindparam("amount", type_=BigInteger())
           <= select(Budget.limit_micro_usd)
           .where(Budget.id == bindparam("b_id"), Budget.org_id == bindparam("org")).scalar_subquery())
    .values(reserved_micro_usd=_SPEND.c.reserved_micro_usd + bindparam("amount", type_=BigInteger()),
            updated_at=bindparam("now"))
    .returning(_SPEND.c.spent_micro_usd))
_MOVE = (
    update(_SPEND)
    .where(_SPEND.c.budget_id == bindparam("b_id"), _SPEND.c.window == bindparam("w"),
           _SPEND.c.org_id == bindparam("org"))
    .values(reserved_micro_usd=_SPEND.c.reserved_micro_usd - bindparam("released", type_=BigInteger()),
            spent_micro_usd=_SPEND.c.spent_micro_usd + bindparam("cost", type_=BigInteger()),
            updated_at=bindparam("now"))
    .returning(_SPEND.c.spent_micro_usd))
_RELEASE_EXPIRED = (
    delete(_RESERVATIONS)
    .where(_RESERVATIONS.c.org_id == bindparam("org"),
           _RESERVATIONS.c.budget_id.in_(bindparam("b_ids", expanding=True)),
           _RESERVATIONS.c.expires_at < bindparam("now"))
    .returning(_RESERVATIONS.c.budget_id, _RESERVATIONS.c.window, _RESERVATIONS.c.amount_micro_usd))
_ADD_RESERVATION = insert(_RESERVATIONS)
_WINDOW_EXISTS = select(_SPEND.c.budget_id).where(
    _SPEND.c.budget_id == bindparam("b_id"), _SPEND.c.window == bindparam("w"), _SPEND.c.org_id == bindparam("org"))
_RELEASE_MANY = (
    delete(_RESERVATIONS)
    .where(_RESERVATIONS.c.org_id == bindparam("org"), _RESERVATIONS.c.id.in_(bindparam("r_ids", expanding=True)))
    .returning(_RESERVATIONS.c.id, _RESERVATIONS.c.budget_id, _RESERVATIONS.c.window,
               _RESERVATIONS.c.amount_micro_usd))
_SPEND_OF = (
    select(_SPEND.c.budget_id, _SPEND.c.window, _SPEND.c.spent_micro_usd, _SPEND.c.reserved_micro_usd)
    .where(_SPEND.c.org_id == bindparam("org"), _SPEND.c.budget_id.in_(bindparam("b_ids", expanding=True)),
           _SPEND.c.window.in_(bindparam("ws", expanding=True))))
_OPEN_WINDOW = {
    "postgresql": postgresql.insert(_SPEND).on_conflict_do_nothing(index_elements=["budget_id", "window"]),
    "sqlite": sqlite.insert(_SPEND).on_conflict_do_nothing(index_elements=["budget_id", "window"]),
}


async def reserve(session: AsyncSession, org_id: str, lines: Sequence[Line], amount: int, *, reservation_id: str,
                  expires_at: datetime, now: datetime, open_windows: bool = True) -> dict[Line, int]:
    """Hold ``amount`` in every line's budget window, or raise ``Refused`` naming the first budget that
    cannot take it (the caller's transaction then rolls back, so nothing is held anywhere). Returns what
    each window had spent. ``open_windows=False`` skips creating the windows' rows (the caller knows they
    exist; if one does not, the reservation is refused and the caller retries with it on)."""
    ordered = sorted(lines, key=lambda line: line.budget_id)
    connection = await session.connection()
    if open_windows:
        await connection.execute(
            _OPEN_WINDOW[connection.dialect.name],
            [{"budget_id": line.budget_id, "window": line.window, "org_id": org_id, "spent_micro_usd": 0,
              "reserved_micro_usd": 0, "updated_at": now} for line in ordered])
    spent: dict[Line, int] = {}
    for line in ordered:
        held = (await connection.execute(_HOLD, {"b_id": line.budget_id, "w": line.window, "org": org_id,
                                                 "amount": amount, "now": now})).first()
        if held is None:
            exists = await connection.execute(_WINDOW_EXISTS, {"b_id": line.budget_id, "w": line.window, "org": org_id})
            raise Refused(line, missing=exists.first() is None)
        spent[line] = int(held[0])
    await connection.execute(_ADD_RESERVATION, [
        {"id": reservation_id, "budget_id": line.budget_id, "org_id": org_id, "window": line.window,
         "amount_micro_usd": amount, "expires_at": expires_at, "created_at": now} for line in ordered])
    return spent


@dataclass(frozen=True, slots=True)
class Settlement:
    """One call's settlement: give back reservation ``reservation_id`` and charge ``cost`` to each line."""

    reservation_id: str
    lines: tuple[Line, ...]
    cost: int


async def settle(session: AsyncSession, org_id: str, settlements: Sequence[Settlement], *,
                 now: datetime) -> tuple[set[str], dict[Line, int]]:
    """Settle several calls of one org in one go: every reservation row is deleted first, then each window
    is updated once (in ``budget_id`` order) with what all of them give back and cost. Returns the
    reservations that were still held (one missing had expired and was released by a sweep: its call is
    only charged) and what each window has spent now."""
    connection = await session.connection()
    held = (await connection.execute(_RELEASE_MANY, {"org": org_id,
                                                     "r_ids": [s.reservation_id for s in settlements]})).all()
    released: dict[Line, int] = {}
    for _, budget_id, window, amount in held:
        line = Line(budget_id, window)
        released[line] = released.get(line, 0) + int(amount)
    charged: dict[Line, int] = {}
    for settlement in settlements:
        for line in settlement.lines:
            charged[line] = charged.get(line, 0) + max(0, settlement.cost)
    spent: dict[Line, int] = {}
    for line in sorted(set(released) | set(charged), key=lambda line: (line.budget_id, line.window)):
        if not released.get(line) and not charged.get(line):
            continue
        moved = (await connection.execute(_MOVE, {"b_id": line.budget_id, "w": line.window, "org": org_id,
                                                  "released": released.get(line, 0), "cost": charged.get(line, 0),
                                                  "now": now})).first()
        if moved is not None:
            spent[line] = int(moved[0])
    return {row[0] for row in held}, spent


async def release_expired(session: AsyncSession, org_id: str, budget_ids: Iterable[str], *, now: datetime) -> int:
    """Release the reservations of ``budget_ids`` that expired (their call's process died); returns how
    many were released."""
    ids = sorted(set(budget_ids))
    if not ids:
        return 0
    connection = await session.connection()
    expired = (await connection.execute(_RELEASE_EXPIRED, {"org": org_id, "b_ids": ids, "now": now})).all()
    totals: dict[tuple[str, str], int] = {}
    for budget_id, window, amount in expired:
        totals[(budget_id, window)] = totals.get((budget_id, window), 0) + int(amount)
    for (budget_id, window), amount in sorted(totals.items()):
        await connection.execute(_MOVE, {"b_id": budget_id, "w": window, "org": org_id, "released": amount,
                                         "cost": 0, "now": now})
    return len(expired)


async def spend_of(session: AsyncSession, org_id: str, lines: Sequence[Line]) -> dict[Line, tuple[int, int]]:
    """``(spent, reserved)`` of each line's window that has a row (none yet: nothing spent)."""
    if not lines:
        return {}
    connection = await session.connection()
    rows = await connection.execute(_SPEND_OF, {"org": org_id, "b_ids": sorted({line.budget_id for line in lines}),
                                                "ws": sorted({line.window for line in lines})})
    wanted = set(lines)
    found = {Line(row[0], row[1]): (int(row[2]), int(row[3])) for row in rows}
    return {line: value for line, value in found.items() if line in wanted}


async def budgets_of(session: AsyncSession, org_id: str) -> list[Budget]:
    return list(await session.scalars(select(Budget).where(Budget.org_id == org_id).order_by(Budget.created_at)))


async def budget_by_id(session: AsyncSession, org_id: str, budget_id: str) -> Budget | None:
    return await session.scalar(select(Budget).where(Budget.org_id == org_id, Budget.id == budget_id))


async def budget_for(session: AsyncSession, org_id: str, scope: str, subject_id: str,
                     period: str) -> Budget | None:
    """The org's budget of a subject and period (a user of two orgs may have one in each)."""
    return await session.scalar(select(Budget).where(Budget.org_id == org_id, Budget.scope == scope,
                                                     Budget.subject_id == subject_id, Budget.period == period))


async def reset_window(session: AsyncSession, org_id: str, budget_id: str, window: str, *, now: datetime) -> int:
    """Zero what a window has spent (reservations stay: their calls are still running); returns what it
    had spent."""
    spent = await session.scalar(select(_SPEND.c.spent_micro_usd).where(
        and_(_SPEND.c.org_id == org_id, _SPEND.c.budget_id == budget_id, _SPEND.c.window == window)))
    if spent:
        await session.execute(
            update(_SPEND)
            .where(_SPEND.c.org_id == org_id, _SPEND.c.budget_id == budget_id, _SPEND.c.window == window)
            .values(spent_micro_usd=0, updated_at=now))
    return int(spent or 0)
