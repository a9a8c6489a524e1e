"""The SQL of the reports, the same on SQLite and PostgreSQL but for the day of a timestamp.

Every query is bounded by a time range on ``usage.created_at`` and, but for the platform admin's report,
by its organisation (and user), so each reads one index range: ``ix_usage_org_user_created`` for a
user's report, ``ix_usage_org_created`` for an organisation's, ``ix_usage_created`` across organisations
(``tests/api/test_analytics_api.py`` checks the plans). Sums are done by the database; nothing is read row
by row but a CSV export's groups, which stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, case, func, literal_column, null, or_, select
from sqlalchemy.sql.selectable import Subquery

from atrium.store.models import Organization, UsageRecord, UsageReset

GroupBy = Literal["day", "model", "endpoint", "provider", "user", "org"]
USER_GROUPS: tuple[GroupBy, ...] = ("day", "model", "endpoint")
SYSTEM_GROUPS: tuple[GroupBy, ...] = ("day", "model", "endpoint", "provider", "user", "org")
# Outcomes that are not errors: served, served from the cache, or given up by the caller.
NOT_ERRORS = ("ok", "cache_hit", "cancelled")

U = UsageRecord


@dataclass(frozen=True, slots=True)
class Subject:
    """Whose rows a query reads: one organisation (``org_id``; None: every organisation) and in it,
    optionally, one owner (a user, or a key acting as no user)."""

    org_id: str | None
    user_id: str | None = None
    api_key_id: str | None = None

    @property
    def one_owner(self) -> bool:
        return self.user_id is not None or self.api_key_id is not None

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.org_id is not None:
            found.append(U.org_id == self.org_id)
        if self.user_id is not None:
            found.append(U.user_id == self.user_id)
        elif self.api_key_id is not None:
            found += [U.user_id.is_(None), U.api_key_id == self.api_key_id]
        return found


def day_of(column: Any, *, sqlite: bool) -> ColumnElement[str]:
    """``YYYY-MM-DD`` of a UTC timestamp column. The constants are SQL literals, not parameters, so that the
    same expression in ``GROUP BY`` is the same text PostgreSQL sees in the select list."""
    if sqlite:
        return func.strftime(literal_column("'%Y-%m-%d'"), column)
    return func.to_char(func.timezone(literal_column("'UTC'"), column), literal_column("'YYYY-MM-DD'"))


def metrics() -> tuple[Any, ...]:
    """The aggregate columns every report line carries."""
    error = case((U.outcome.in_(NOT_ERRORS), 0), else_=1)
    return (
        func.count().label("requests"),
        func.coalesce(func.sum(U.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(U.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(U.cost_usd), 0.0).label("cost_usd"),
        func.coalesce(func.sum(error), 0).label("errors"),
        func.coalesce(func.sum(case((U.outcome == "cache_hit", 1), else_=0)), 0).label("cache_hits"),
    )


def latest_resets(org_id: str | None) -> Subquery:
    """Each user's latest reset point (in ``org_id``, or everywhere)."""
    query = select(UsageReset.org_id, UsageReset.user_id, func.max(UsageReset.reset_at).label("reset_at"))
    if org_id is not None:
        query = query.where(UsageReset.org_id == org_id)
    return query.group_by(UsageReset.org_id, UsageReset.user_id).subquery("latest_reset")


def _ranged(query: Any, subject: Subject, since: datetime, before: datetime) -> Any:
    return query.where(*subject.conditions(), U.created_at >= since, U.created_at < before)


def _after_resets(query: Select[Any], org_id: str | None) -> Select[Any]:
    """Only rows after their user's latest reset (rows of no user, and users never reset, all count)."""
    resets = latest_resets(org_id)
    return (query.outerjoin(resets, and_(resets.c.org_id == U.org_id, resets.c.user_id == U.user_id))
            .where(or_(resets.c.reset_at.is_(None), U.created_at >= resets.c.reset_at)))


def group_columns(group_by: GroupBy, *, sqlite: bool) -> tuple[Any, ...]:
    """The columns naming a group: (key, org_id, user_id, api_key_id), the unused ones null. A key acting
    as no user is a group of its own among users (``api_key_id``)."""
    match group_by:
        case "day":
            key: Any = day_of(U.created_at, sqlite=sqlite)
        case "model":
            key = U.model
        case "endpoint":
            key = U.endpoint
        case "provider":
            key = U.provider
        case "org":
            return U.org_id, U.org_id, null(), null()
        case "user":
            # Made of the grouped expressions only (PostgreSQL checks).
            return func.coalesce(U.user_id, _keyless_key()), U.org_id, U.user_id, _keyless_key()
    return key, null(), null(), null()


def _keyless_key() -> ColumnElement[str | None]:
    return case((U.user_id.is_(None), U.api_key_id), else_=null())


def totals_query(subject: Subject, since: datetime, before: datetime) -> Select[Any]:
    query = select(*metrics(), func.count(func.distinct(U.org_id)).label("orgs"),
                   func.count(func.distinct(U.user_id)).label("users"))
    return _ranged(query, subject, since, before)


def groups_query(subject: Subject, since: datetime, before: datetime, group_by: GroupBy, *, sqlite: bool,
                 limit: int | None = None) -> Select[Any]:
    """One line per group (``key, org_id, user_id, api_key_id`` and the metrics); days in order, the rest
    by cost, then requests. ``group_by="user"`` counts each user's rows from their latest reset."""
    key, org, user, keyless = group_columns(group_by, sqlite=sqlite)
    query = _ranged(select(key.label("key"), org.label("org_id"), user.label("user_id"), keyless.label("api_key_id"),
                           *metrics()), subject, since, before)
    match group_by:
        case "user":
            query = _after_resets(query, subject.org_id).group_by(U.org_id, U.user_id, _keyless_key())
        case "org":
            query = query.group_by(U.org_id)
        case _:
            query = query.group_by(key)
    if group_by == "day":
        query = query.order_by(key)
    else:
        query = query.order_by(func.sum(U.cost_usd).desc(), func.count().desc(), key)
    return query.limit(limit) if limit is not None else query


def top_users_query(subject: Subject, since: datetime, before: datetime, limit: int) -> Select[Any]:
    """The users (and keys acting as no user) who spent most, each counted from their latest reset."""
    return groups_query(subject, since, before, "user", sqlite=False, limit=limit)


def top_orgs_query(subject: Subject, since: datetime, before: datetime, limit: int) -> Select[Any]:
    inner = _ranged(select(U.org_id.label("org_id"), *metrics()), subject, since, before).group_by(U.org_id)
    ranked = inner.order_by(func.sum(U.cost_usd).desc(), func.count().desc(), U.org_id).limit(limit).subquery()
    return (select(ranked, Organization.name.label("name"))
            .outerjoin(Organization, Organization.id == ranked.c.org_id)
            .order_by(ranked.c.cost_usd.desc(), ranked.c.requests.desc(), ranked.c.org_id))


def outcomes_query(subject: Subject, since: datetime, before: datetime) -> Select[Any]:
    """How many calls ended in each error code."""
    return (_ranged(select(U.outcome, func.count().label("count")), subject, since, before)
            .where(U.outcome.not_in(NOT_ERRORS)).group_by(U.outcome).order_by(func.count().desc(), U.outcome))


def latest_reset_query(org_id: str, user_id: str) -> Select[Any]:
    return select(func.max(UsageReset.reset_at)).where(UsageReset.org_id == org_id, UsageReset.user_id == user_id)


def rows_before_query(org_id: str, user_id: str, before: datetime) -> Select[Any]:
    return select(func.count()).select_from(U).where(U.org_id == org_id, U.user_id == user_id, U.created_at < before)

