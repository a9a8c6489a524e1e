"""Budget administration: set (create or change), list, delete and reset an organisation's budgets, each
change audited in its own transaction (``budget.set``, ``budget.delete``, ``budget.reset``) and announced
to every replica's budget cache. Everything is scoped to the actor's organisation: another org's budget
is "not found", and a budget's subject (a user or key) must belong to the actor's organisation.

A division-scoped admin manages only the budgets of its division's users and keys (a key is in the
division its user is in, else the one it is scoped to): the organisation's budget and the budgets of
users and keys outside its division are organisation-wide settings, refused with ``forbidden``. It still
lists the organisation's budget (its division's calls count against it) besides its division's, and no
other division's.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.audit import record
from atrium.accounts.principal import Principal
from atrium.errors import Conflict, Forbidden, InvalidRequest, NotFound
from atrium.guard.budgets import store
from atrium.guard.budgets.ledger import BudgetDef, BudgetGuard, BudgetView, window_of
from atrium.store.engine import Database
from atrium.store.models import ApiKey, Budget, Membership, User, utcnow


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    scope: str  # org, user, key
    subject_id: str | None  # org: the actor's org (may be omitted)
    period: str  # day, month, total
    limit_micro_usd: int


class BudgetAdmin:
    def __init__(self, db: Database, guard: BudgetGuard) -> None:
        self._db = db
        self._guard = guard

    async def set(self, actor: Principal, spec: BudgetSpec, *, ip: str | None = None) -> tuple[BudgetView, bool]:
        """Create the budget, or change the limit of the subject's budget for that period; returns its view
        and whether it was created."""
        org_id = actor.org_id
        subject_id = spec.subject_id or (org_id if spec.scope == "org" else None)
        if subject_id is None:
            raise InvalidRequest(f"subject_id is required for a {spec.scope} budget.")
        try:
            async with self._db.tenant_session(org_id) as session:
                await _check_subject(session, org_id, spec.scope, subject_id)
                await _check_division(session, actor, spec.scope, subject_id)
                row = await store.budget_for(session, org_id, spec.scope, subject_id, spec.period)
                created = row is None
                previous = None if row is None else int(row.limit_micro_usd)
                if row is None:
                    row = Budget(org_id=org_id, scope=spec.scope, subject_id=subject_id, period=spec.period,
                                 limit_micro_usd=spec.limit_micro_usd)
                    session.add(row)
                else:
                    row.limit_micro_usd = spec.limit_micro_usd
                    row.updated_at = utcnow()
                await session.flush()
                await record(session, "budget.set", actor=actor, target_type="budget", target_id=row.id, ip=ip,
                             details={"scope": spec.scope, "subject_id": subject_id, "period": spec.period,
                                      "limit_micro_usd": spec.limit_micro_usd, "previous_limit_micro_usd": previous})
                budget = BudgetDef.of(row)
        except IntegrityError:
            raise Conflict("This subject's budget for this period was changed at the same time; try again.") from None
        await self._guard.changed(org_id)
        return (await self._guard.views(org_id, [budget]))[0], created

    async def listing(self, actor: Principal, *, scope: str | None = None, subject_id: str | None = None,
                   limit: int = 100, offset: int = 0) -> list[BudgetView]:
        async with self._db.tenant_session(actor.org_id) as session:
            rows = await store.budgets_of(session, actor.org_id)
            if actor.division_id is not None:
                users, keys = await _division_subjects(session, actor.org_id, actor.division_id)
                rows = [row for row in rows if row.scope == "org" or (row.scope == "user" and row.subject_id in users)
                        or (row.scope == "key" and row.subject_id in keys)]
        budgets = [BudgetDef.of(row) for row in rows
                   if (scope is None or row.scope == scope) and (subject_id is None or row.subject_id == subject_id)]
        return await self._guard.views(actor.org_id, budgets[offset:offset + limit])

    async def delete(self, actor: Principal, budget_id: str, *, ip: str | None = None) -> None:
        async with self._db.tenant_session(actor.org_id) as session:
            row = await _owned(session, actor.org_id, budget_id)
            await _check_division(session, actor, row.scope, row.subject_id)
            await record(session, "budget.delete", actor=actor, target_type="budget", target_id=row.id, ip=ip,
                         details={"scope": row.scope, "subject_id": row.subject_id, "period": row.period,
                                  "limit_micro_usd": int(row.limit_micro_usd)})
            await session.delete(row)
        await self._guard.changed(actor.org_id)

    async def reset(self, actor: Principal, budget_id: str, *, ip: str | None = None) -> BudgetView:
        """Zero what the current window has spent (running calls keep their reservations and settle as
        usual)."""
        now = self._guard.now()
        async with self._db.tenant_session(actor.org_id) as session:
            row = await _owned(session, actor.org_id, budget_id)
            await _check_division(session, actor, row.scope, row.subject_id)
            window = window_of(row.period, now)
            before = await store.reset_window(session, actor.org_id, row.id, window, now=now)
            await record(session, "budget.reset", actor=actor, target_type="budget", target_id=row.id, ip=ip,
                         details={"window": window, "spent_micro_usd_before": before})
            budget = BudgetDef.of(row)
        return (await self._guard.views(actor.org_id, [budget]))[0]

    async def own(self, principal: Principal) -> list[BudgetView]:
        """The budgets the caller's calls fall under (its org's, its user's, its key's)."""
        budgets = await self._guard.applicable(principal.org_id, principal.user_id, principal.api_key_id,
                                               enforced_only=False)
        return await self._guard.views(principal.org_id, budgets)


async def _owned(session: AsyncSession, org_id: str, budget_id: str) -> Budget:
    row = await store.budget_by_id(session, org_id, budget_id)
    if row is None:
        raise NotFound("No such budget.")
    return row


async def _check_subject(session: AsyncSession, org_id: str, scope: str, subject_id: str) -> None:
    if scope == "org":
        if subject_id != org_id:
            raise NotFound("No such organisation: an org budget is for the caller's own organisation.")
        return
    if scope == "user":
        member = await session.scalar(select(Membership.id).where(Membership.org_id == org_id,
                                                                  Membership.user_id == subject_id))
        home = member or await session.scalar(select(User.id).where(User.org_id == org_id, User.id == subject_id))
        if home is None:
            raise NotFound("No such user in this organisation.")
        return
    key = await session.scalar(select(ApiKey.id).where(ApiKey.org_id == org_id, ApiKey.id == subject_id))
    if key is None:
        raise NotFound("No such API key in this organisation.")


async def _division_of(session: AsyncSession, org_id: str, scope: str, subject_id: str) -> str | None:
    """The division a user's or key's budget falls in (None: organisation-wide)."""
    if scope == "user":
        return await session.scalar(select(Membership.division_id).where(Membership.org_id == org_id,
                                                                         Membership.user_id == subject_id))
    if scope == "key":
        found = (await session.execute(
            select(ApiKey.division_id, Membership.division_id.label("user_division_id"))
            .outerjoin(Membership, and_(Membership.user_id == ApiKey.user_id, Membership.org_id == ApiKey.org_id))
            .where(ApiKey.org_id == org_id, ApiKey.id == subject_id))).first()
        if found is None:
            return None
        return found.user_division_id if found.user_division_id is not None else found.division_id
    return None


async def _check_division(session: AsyncSession, actor: Principal, scope: str, subject_id: str) -> None:
    """A division-scoped actor manages only its division's users' and keys' budgets."""
    if actor.division_id is None:
        return
    if scope == "org":
        raise Forbidden("The organisation's budget is an organisation-wide setting: a division-scoped "
                        "credential cannot change it.")
    if await _division_of(session, actor.org_id, scope, subject_id) != actor.division_id:
        raise Forbidden(f"This {scope} is outside your division: a division-scoped credential manages only "
                        "its division's budgets.")


async def _division_subjects(session: AsyncSession, org_id: str, division_id: str) -> tuple[set[str], set[str]]:
    """The users and keys of a division (keys: by their user's division, else their own)."""
    users = set((await session.scalars(select(Membership.user_id).where(
        Membership.org_id == org_id, Membership.division_id == division_id))).all())
    keys = set((await session.scalars(
        select(ApiKey.id)
        .outerjoin(Membership, and_(Membership.user_id == ApiKey.user_id, Membership.org_id == ApiKey.org_id))
        .where(ApiKey.org_id == org_id,
               func.coalesce(Membership.division_id, ApiKey.division_id) == division_id))).all())
    return users, keys
