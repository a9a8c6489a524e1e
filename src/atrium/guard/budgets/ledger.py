"""Budgets: spending caps per organisation, user and API key over a day, a month or all time, in integer
micro-USD (1e-6 USD).

A model call first *reserves* the most it could cost in every budget it falls under, atomically (one
conditional UPDATE per budget, all in one transaction: either every budget takes it or none does, and
concurrent calls can never together pass a limit), then *settles*: gives the reservation back and
charges what the call actually cost. ``BudgetExceeded`` (402) refuses a call that does not fit.

Budget definitions change rarely, so each process keeps every organisation's list for
``budgets.cache_ttl_s`` (an organisation without budgets is remembered too: a call then costs no query at
all) and drops it at once when an admin changes one (the ``budgets.changed`` PubSub channel, heard by
every replica).

Settling is group-committed: settlements that arrive while one is being written go together in the next
transaction, so under load a call costs a fraction of one.

Crash safety: a reservation expires after ``budgets.reservation_ttl_s``. Expired reservations are
released lazily, in the tenant's own transaction: when a reservation is refused (then it is tried again
if that freed anything) and when budgets are read for display; no cross-tenant background sweep is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cachetools import TTLCache
from sqlalchemy.exc import DBAPIError, IntegrityError

from atrium.errors import BudgetExceeded
from atrium.guard.budgets import store
from atrium.guard.budgets.store import Line, Refused, Settlement
from atrium.guard.settings import BudgetSettings
from atrium.store.engine import Database
from atrium.store.models import Budget, new_id
from atrium.store.ports import PubSub, follow
from atrium.store.single_flight import SingleFlight

log = logging.getLogger(__name__)

CHANNEL = "budgets.changed"
MICRO = 1_000_000
_SWEEP_EVERY = timedelta(seconds=30)
_BATCH = 500  # settlements written in one transaction, at most


def window_of(period: str, now: datetime) -> str:
    """The window a moment falls in: ``2026-11-21`` (day, UTC), ``2026-11`` (month) or ``total``."""
    now = now.astimezone(UTC)
    if period == "day":
        return now.strftime("%Y-%m-%d")
    if period == "month":
        return now.strftime("%Y-%m")
    return "total"


def resets_at(period: str, now: datetime) -> datetime | None:
    """When the window that ``now`` falls in ends (``None``: never)."""
    now = now.astimezone(UTC)
    if period == "day":
        return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    if period == "month":
        return datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return None


def micro_usd(prompt_tokens: float, completion_tokens: float, input_per_1m: float, output_per_1m: float) -> int:
    """Cost in micro-USD, rounded up (prices are USD per 1M tokens, so a token costs ``price`` micro-USD)."""
    cost = prompt_tokens * input_per_1m + completion_tokens * output_per_1m
    whole = int(cost)
    return whole if cost - whole < 1e-9 else whole + 1


def usd(micro: int) -> float:
    return micro / MICRO


@dataclass(frozen=True, slots=True)
class BudgetDef:
    id: str
    org_id: str
    scope: str
    subject_id: str
    period: str
    limit_micro_usd: int

    @classmethod
    def of(cls, row: Budget) -> BudgetDef:
        return cls(id=row.id, org_id=row.org_id, scope=row.scope, subject_id=row.subject_id, period=row.period,
                   limit_micro_usd=int(row.limit_micro_usd))

    def applies_to(self, user_id: str | None, api_key_id: str | None) -> bool:
        return (self.scope == "org" or (self.scope == "user" and self.subject_id == user_id)
                or (self.scope == "key" and self.subject_id == api_key_id))


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation: ``amount`` micro-USD held in each line's budget window."""

    id: str
    org_id: str
    lines: tuple[Line, ...]
    amount: int


@dataclass(frozen=True, slots=True)
class BudgetView:
    """A budget with its current window, for display."""

    budget: BudgetDef
    window: str
    spent: int
    reserved: int
    resets_at: datetime | None

    @property
    def remaining(self) -> int:
        return max(0, self.budget.limit_micro_usd - self.spent - self.reserved)

    def to_dict(self) -> dict[str, object]:
        b = self.budget
        return {"id": b.id, "scope": b.scope, "subject_id": b.subject_id, "period": b.period,
                "window": self.window, "limit_usd": usd(b.limit_micro_usd), "spent_usd": usd(self.spent),
                "reserved_usd": usd(self.reserved), "remaining_usd": usd(self.remaining),
                "limit_micro_usd": b.limit_micro_usd, "spent_micro_usd": self.spent,
                "reserved_micro_usd": self.reserved, "remaining_micro_usd": self.remaining,
                "resets_at": self.resets_at.isoformat() if self.resets_at else None}


class BudgetGuard:
    """Finds the budgets a call falls under, reserves and settles them (see the module docstring)."""

    def __init__(self, db: Database, settings: BudgetSettings, *, pubsub: PubSub | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._db = db
        self._settings = settings
        self._pubsub = pubsub
        self._clock = clock
        self._cache: TTLCache[str, tuple[BudgetDef, ...]] | None = (
            TTLCache(maxsize=100_000, ttl=settings.cache_ttl_s) if settings.cache_ttl_s > 0 else None)
        # What this process last saw each window spend, for the edge check (a hint: reservations decide),
        # and the windows whose rows exist (a reservation then skips creating one).
        self._spent: TTLCache[Line, int] = TTLCache(maxsize=100_000, ttl=settings.spend_cache_ttl_s or 1e-9)
        self._windows: TTLCache[Line, bool] = TTLCache(maxsize=100_000, ttl=86_400)
        self._reads: SingleFlight[str, tuple[BudgetDef, ...]] = SingleFlight()
        self._next_sweep: dict[str, datetime] = {}
        self._settling: dict[str, list[tuple[Settlement, asyncio.Future[None]]]] = {}
        self._settlers: dict[str, asyncio.Task[None]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self._settings.enabled

    # -- definitions -------------------------------------------------------------------------------------

    async def applicable(self, org_id: str, user_id: str | None, api_key_id: str | None, *,
                         enforced_only: bool = True) -> list[BudgetDef]:
        """The budgets a call of this org, user and key falls under (no query while the org's list is
        cached); none while budgets are off, unless ``enforced_only`` is false (for display)."""
        if enforced_only and not self._settings.enabled:
            return []
        budgets = await self._definitions(org_id)
        return [b for b in budgets if b.applies_to(user_id, api_key_id)]

    async def _definitions(self, org_id: str, *, fresh: bool = False) -> tuple[BudgetDef, ...]:
        self._listen()
        cached = None if fresh or self._cache is None else self._cache.get(org_id)
        if cached is not None:
            return cached
        if fresh:
            budgets = await self._read_definitions(org_id)
        else:
            budgets = await self._reads.run(org_id, lambda: self._read_definitions(org_id))
        if self._cache is not None:
            self._cache[org_id] = budgets
        return budgets

    async def _read_definitions(self, org_id: str) -> tuple[BudgetDef, ...]:
        async with self._db.tenant_session(org_id) as session:
            return tuple(BudgetDef.of(row) for row in await store.budgets_of(session, org_id))

    async def changed(self, org_id: str) -> None:
        """After an admin changed ``org_id``'s budgets: forget them here and tell the other replicas."""
        self.forget(org_id)
        if self._pubsub is not None:
            try:
                await self._pubsub.publish(CHANNEL, org_id)
            except Exception:  # a lost hint only delays the others by cache_ttl_s
                log.warning("could not publish a budget change; other replicas follow within %s s",
                            self._settings.cache_ttl_s)

    def forget(self, org_id: str) -> None:
        self._reads.forget(org_id)
        if self._cache is not None:
            self._cache.pop(org_id, None)
        self._spent.clear()  # a reset or a new limit: the edge check reads the windows again

    def _listen(self) -> None:
        if self._listener is None and self._pubsub is not None and self._cache is not None and not self._closed:
            self._listener = asyncio.get_running_loop().create_task(  # outlives the request that starts it
                self._hear_changes(), name="budget-changes", context=contextvars.Context())

    async def _hear_changes(self) -> None:
        assert self._pubsub is not None and self._cache is not None
        await follow(self._pubsub, CHANNEL, self.forget, on_gap=self._cache.clear)

    # -- reserve and settle ------------------------------------------------------------------------------

    async def reserve(self, org_id: str, user_id: str | None, api_key_id: str | None, amount: int) -> Hold | None:
        """Hold ``amount`` micro-USD in every budget this org, user and key fall under, or raise
        ``BudgetExceeded``; ``None`` when no budget applies (or the call is free). Before refusing, expired
        reservations of the full budget are released (at most every ``_SWEEP_EVERY`` per budget) and, if
        that freed anything, the reservation is tried again."""
        budgets = await self.applicable(org_id, user_id, api_key_id)
        if not budgets or amount <= 0:
            return None
        for attempt in range(3):
            try:
                return await self._try_reserve(org_id, budgets, amount)
            except IntegrityError:
                # A budget of the cached definitions is gone (its window row cannot be made): re-read them.
                if attempt == 2:
                    raise
                self._windows.clear()
                budgets = [b for b in await self._definitions(org_id, fresh=True)
                           if b.applies_to(user_id, api_key_id)]
                if not budgets:
                    return None
            except Refused as refused:
                if refused.missing:  # a window row this process believed in is gone: make it again
                    self._windows.pop(refused.line, None)
                    continue
                if attempt < 2 and await self._sweep(org_id, refused.budget_id):
                    continue
                budget = next(b for b in budgets if b.id == refused.budget_id)
                raise BudgetExceeded(
                    f"This call could cost up to {usd(amount):.6f} USD, more than is left of the {budget.scope} "
                    f"budget for {_period_label(budget.period, self._clock())} "
                    f"({usd(budget.limit_micro_usd):.2f} USD).") from None
        raise BudgetExceeded("The budget could not take this call.")

    async def _sweep(self, org_id: str, budget_id: str) -> bool:
        """Release the expired reservations of a budget (reservations of processes that died); True if any
        was. A budget is swept at most every ``_SWEEP_EVERY``: a reservation expires only
        ``reservation_ttl_s`` after its process died, so looking more often finds nothing."""
        now = self._clock()
        due = self._next_sweep.get(budget_id)
        if due is not None and now < due:
            return False
        if len(self._next_sweep) > 100_000:
            self._next_sweep.clear()
        self._next_sweep[budget_id] = now + min(_SWEEP_EVERY, timedelta(seconds=self._settings.reservation_ttl_s / 10))
        async with self._db.tenant_session(org_id) as session:
            return await store.release_expired(session, org_id, [budget_id], now=now) > 0

    async def _try_reserve(self, org_id: str, budgets: Sequence[BudgetDef], amount: int) -> Hold:
        now = self._clock()
        lines = tuple(Line(b.id, window_of(b.period, now)) for b in budgets)
        hold = Hold(id=new_id(), org_id=org_id, lines=lines, amount=amount)
        async with self._db.tenant_session(org_id) as session:
            spent = await store.reserve(session, org_id, lines, amount, reservation_id=hold.id, now=now,
                                        expires_at=now + timedelta(seconds=self._settings.reservation_ttl_s),
                                        open_windows=any(line not in self._windows for line in lines))
        for line, value in spent.items():
            self._windows[line] = True
            self._spent[line] = value
        return hold

    async def settle(self, hold: Hold, cost: int) -> None:
        """Give ``hold`` back and charge ``cost`` (micro-USD) to its budgets' windows. Settlements that
        arrive while one is being written are written together, in one transaction (group commit): under
        load a call costs a fraction of a transaction, and alone it is written at once."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settling.setdefault(hold.org_id, []).append((Settlement(hold.id, hold.lines, cost), future))
        if hold.org_id not in self._settlers:
            self._settlers[hold.org_id] = asyncio.get_running_loop().create_task(
                self._write_settlements(hold.org_id), name="budget-settle")
        await future

    async def _write_settlements(self, org_id: str) -> None:
        try:
            while pending := self._settling.pop(org_id, None):
                batch, rest = pending[:_BATCH], pending[_BATCH:]
                if rest:
                    self._settling[org_id] = rest + self._settling.get(org_id, [])
                try:
                    held, spent = await self._write_batch(org_id, [settlement for settlement, _ in batch])
                except Exception as error:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                self._spent.update(spent)
                if len(held) < len(batch):
                    log.warning("%d budget reservations expired before their calls settled; raise "
                                "budgets.reservation_ttl_s above the longest call", len(batch) - len(held))
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._settlers.pop(org_id, None)

    async def _write_batch(self, org_id: str, batch: list[Settlement]) -> tuple[set[str], dict[Line, int]]:
        for attempt in range(2):
            try:
                async with self._db.tenant_session(org_id) as session:
                    return await store.settle(session, org_id, batch, now=self._clock())
            except DBAPIError:
                if attempt:
                    raise
                log.warning("writing budget settlements failed; trying once more", exc_info=True)
        raise AssertionError("unreachable")

    async def check(self, org_id: str, user_id: str | None, api_key_id: str | None) -> None:
        """Refuse (``BudgetExceeded``) a caller one of whose budgets has spent its whole limit in the current
        window; for the edge, before any work. Reservations are not counted here: whether a call fits is
        the reservation's job. What this process saw a window spend in the last ``spend_cache_ttl_s`` is
        trusted without a query."""
        budgets = await self.applicable(org_id, user_id, api_key_id)
        if not budgets:
            return
        now = self._clock()
        lines = {Line(b.id, window_of(b.period, now)): b for b in budgets}
        if any(line not in self._spent for line in lines):
            async with self._db.tenant_session(org_id) as session:
                spend = await store.spend_of(session, org_id, list(lines))
            for line in lines:
                self._spent[line] = spend.get(line, (0, 0))[0]
        for line, budget in lines.items():
            spent = self._spent.get(line, 0)
            if spent >= budget.limit_micro_usd:
                when = resets_at(budget.period, now)
                raise BudgetExceeded(
                    f"The {budget.scope} budget for {_period_label(budget.period, now)} is used up "
                    f"({usd(spent):.2f} of {usd(budget.limit_micro_usd):.2f} USD)"
                    + (f"; it resets at {when.isoformat()}." if when else "."))

    async def views(self, org_id: str, budgets: Sequence[BudgetDef]) -> list[BudgetView]:
        """Each budget's current window (expired reservations released first, so ``reserved`` is what
        running calls hold)."""
        if not budgets:
            return []
        now = self._clock()
        lines = [Line(b.id, window_of(b.period, now)) for b in budgets]
        async with self._db.tenant_session(org_id) as session:
            await store.release_expired(session, org_id, [b.id for b in budgets], now=now)
            spend = await store.spend_of(session, org_id, lines)
        return [BudgetView(budget=b, window=line.window, spent=spend.get(line, (0, 0))[0],
                           reserved=spend.get(line, (0, 0))[1], resets_at=resets_at(b.period, now))
                for b, line in zip(budgets, lines, strict=True)]

    def now(self) -> datetime:
        return self._clock()

    async def aclose(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener


def _period_label(period: str, now: datetime) -> str:
    return {"day": f"today ({window_of('day', now)}, UTC)", "month": f"this month ({window_of('month', now)})"}.get(
        period, "all time")
