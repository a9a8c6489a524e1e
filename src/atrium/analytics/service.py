"""``UsageAnalytics``: the reports (a caller's own usage; an organisation's or every organisation's), the
groups of either streamed for a CSV export, and the reset of a user's figures.

Who sees what: a caller sees its own rows (its user's, or, for a key acting as no user, the key's); an
unscoped admin its organisation's; the platform admin (``AccountAdmin.is_platform_admin``) every
organisation's. Reports of one organisation run in its tenant scope; the platform report in the system
scope, the only cross-tenant read here.

A reset records a point in ``usage_resets`` and an audit row (``analytics.reset``) in one transaction; the
usage rows before it are kept (bills, audits, the data export). From then on the user's own report, their
line among the top users and the ``user`` grouping count from that point; totals of the organisation (by
day, model, endpoint, provider, org) keep counting every call, as a team's spend in LiteLLM is not lowered
when one of its keys' spend is reset. Budgets are not touched: they cap spending by their own windows
(reset them with ``POST /api/v1/admin/budgets/{id}/reset``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from atrium.accounts import audit
from atrium.accounts.admin_base import aware
from atrium.accounts.ownership import owner_of
from atrium.accounts.principal import Principal
from atrium.accounts.service import Accounts
from atrium.analytics import queries
from atrium.analytics.period import Period
from atrium.analytics.queries import GroupBy, Subject
from atrium.errors import Forbidden
from atrium.store.engine import Database
from atrium.store.models import UsageReset, utcnow

# Rows fetched at a time while a CSV export streams.
_STREAM_BATCH = 500


@dataclass(frozen=True, slots=True)
class Metrics:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    errors: int = 0
    cache_hits: int = 0

    @classmethod
    def of(cls, row: Any) -> Metrics:
        return cls(requests=int(row.requests or 0), prompt_tokens=int(row.prompt_tokens or 0),
                   completion_tokens=int(row.completion_tokens or 0), cost_usd=float(row.cost_usd or 0.0),
                   errors=int(row.errors or 0), cache_hits=int(row.cache_hits or 0))

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Group:
    key: str
    metrics: Metrics
    org_id: str | None = None
    user_id: str | None = None
    api_key_id: str | None = None

    @classmethod
    def of(cls, row: Any) -> Group:
        return cls(key=str(row.key) if row.key is not None else "", metrics=Metrics.of(row), org_id=row.org_id,
                   user_id=row.user_id, api_key_id=row.api_key_id)


@dataclass(frozen=True, slots=True)
class OrgLine:
    org_id: str
    name: str | None
    metrics: Metrics


@dataclass(slots=True)
class Report:
    period: Period
    group_by: GroupBy
    totals: Metrics
    groups: list[Group]
    truncated: bool
    counted_from: datetime | None = None  # user reports: the latest reset, when in the period
    scope: str = "user"  # user, org or platform
    org_id: str | None = None
    users: int = 0
    orgs: int = 0
    top_users: list[Group] = field(default_factory=list)
    top_orgs: list[OrgLine] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResetDone:
    org_id: str
    user_id: str
    counted_from: datetime
    previous: datetime | None
    rows_kept: int


@dataclass(frozen=True, slots=True)
class Reader:
    """Whose rows a report reads and in which scope: ``subject``, and whether it spans tenants."""

    subject: Subject
    platform: bool = False

    @property
    def scope(self) -> str:
        if self.platform:
            return "platform"
        return "user" if self.subject.one_owner else "org"


class UsageAnalytics:
    def __init__(self, db: Database, accounts: Accounts) -> None:
        self.db = db
        self.accounts = accounts

    # -- who reads what -------------------------------------------------------------------------------

    async def own(self, principal: Principal) -> tuple[Reader, datetime | None]:
        """The caller's own rows, and its user's latest reset point (None: never reset, or a key)."""
        owner = owner_of(principal)
        reader = Reader(Subject(principal.org_id, owner.user_id, owner.api_key_id))
        reset_at = None
        if owner.user_id is not None:
            async with self.db.tenant_session(principal.org_id) as session:
                reset_at = await session.scalar(queries.latest_reset_query(principal.org_id, owner.user_id))
        return reader, aware(reset_at) if reset_at is not None else None

    async def system(self, principal: Principal) -> Reader:
        """The platform admin reads every organisation; an unscoped admin its own; others are refused."""
        if not principal.has_role("admin"):
            raise Forbidden("This needs the admin role.")
        if principal.division_id is not None:
            raise Forbidden("A division-scoped credential cannot read the organisation's analytics: it needs an "
                            "organisation-wide one.")
        if await self.accounts.is_platform_admin(principal):
            return Reader(Subject(None), platform=True)
        return Reader(Subject(principal.org_id))

    # -- reports --------------------------------------------------------------------------------------

    async def report(self, reader: Reader, period: Period, group_by: GroupBy, *, limit: int, top: int = 0,
                     reset_at: datetime | None = None) -> Report:
        """Totals and ``limit`` groups over ``period`` (from ``reset_at`` when later); for an
        organisation or the platform, also the ``top`` users and organisations and the error outcomes."""
        since, before = self._range(period, reset_at)
        subject = reader.subject
        async with self._session(reader) as session:
            totals = (await session.execute(queries.totals_query(subject, since, before))).one()
            rows = (await session.execute(queries.groups_query(subject, since, before, group_by,
                                                                sqlite=self.db.is_sqlite, limit=limit + 1))).all()
            report = Report(period=period, group_by=group_by, totals=Metrics.of(totals),
                            groups=[Group.of(row) for row in rows[:limit]], truncated=len(rows) > limit,
                            counted_from=reset_at if reset_at is not None and reset_at >= period.starts_at else None,
                            scope=reader.scope, org_id=subject.org_id, users=int(totals.users or 0),
                            orgs=int(totals.orgs or 0))
            if reader.scope != "user":
                users = await session.execute(queries.top_users_query(subject, since, before, top))
                report.top_users = [Group.of(row) for row in users]
                orgs = await session.execute(queries.top_orgs_query(subject, since, before, top))
                report.top_orgs = [OrgLine(row.org_id, row.name, Metrics.of(row)) for row in orgs]
                outcomes = await session.execute(queries.outcomes_query(subject, since, before))
                report.outcomes = {row.outcome: int(row.count) for row in outcomes}
        return report

    async def stream_groups(self, reader: Reader, period: Period, group_by: GroupBy, *,
                            reset_at: datetime | None = None) -> AsyncIterator[Group]:
        """Every group of the report, as the database hands them over (for a CSV export)."""
        since, before = self._range(period, reset_at)
        query = queries.groups_query(reader.subject, since, before, group_by, sqlite=self.db.is_sqlite)
        async with self._session(reader) as session:
            result = await session.stream(query.execution_options(yield_per=_STREAM_BATCH))
            async for row in result:
                yield Group.of(row)

    # -- reset ----------------------------------------------------------------------------------------

    async def reset(self, actor: Principal, user_id: str, *, ip: str | None = None) -> ResetDone:
        """Make ``user_id``'s figures in the actor's organisation count from now, audited. The actor must
        administer the user (an admin of the organisation, or of the user's division): else 403, or 404
        for a user it cannot see (another organisation's, another division's)."""
        org_id = actor.org_id
        async with self.accounts.administer(actor, ip=ip) as admin:
            member = await admin.get_user(org_id, user_id)
            session = admin.session
            previous = await session.scalar(queries.latest_reset_query(org_id, member.user.id))
            previous = aware(previous) if previous is not None else None
            now = utcnow()
            kept = int(await session.scalar(queries.rows_before_query(org_id, member.user.id, now)) or 0)
            session.add(UsageReset(org_id=org_id, user_id=member.user.id, reset_at=now, actor_user_id=actor.user_id,
                                   actor_key_id=actor.api_key_id))
            await audit.record(session, "analytics.reset", actor=actor, org_id=org_id, target_type="user",
                               target_id=member.user.id, ip=ip,
                               details={"counted_from": now.isoformat(), "rows_kept": kept, "via": actor.via,
                                        "previous": previous.isoformat() if previous is not None else None})
        return ResetDone(org_id=org_id, user_id=member.user.id, counted_from=now, previous=previous, rows_kept=kept)

    # -- helpers --------------------------------------------------------------------------------------

    @staticmethod
    def _range(period: Period, reset_at: datetime | None) -> tuple[datetime, datetime]:
        since = period.starts_at
        if reset_at is not None:
            since = max(since, reset_at)
        return since, period.ends_before

    def _session(self, reader: Reader) -> Any:
        if reader.platform:
            return self.db.system_session()
        assert reader.subject.org_id is not None
        return self.db.tenant_session(reader.subject.org_id)
