"""The analytics answers (``/api/v1/analytics``): a report's totals and groups, for an organisation or the
platform also its top users and organisations and its error outcomes; a reset's result."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from atrium.analytics.service import Group, Metrics, OrgLine, Report, ResetDone
from atrium.http.schemas.common import Timestamp, View


class MetricsView(View):
    requests: int = Field(description="Model and embedding calls.")
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float = Field(description="At the catalogue's prices.")
    errors: int = Field(description="Calls that ended in an error (not `ok`, `cache_hit` or `cancelled`).")
    error_rate: float = Field(description="`errors / requests` (0 when there were none).")
    cache_hits: int

    @classmethod
    def of(cls, m: Metrics) -> MetricsView:
        return cls(requests=m.requests, prompt_tokens=m.prompt_tokens, completion_tokens=m.completion_tokens,
                   total_tokens=m.total_tokens, cost_usd=round(m.cost_usd, 9), errors=m.errors,
                   error_rate=round(m.error_rate, 6), cache_hits=m.cache_hits)


class GroupView(MetricsView):
    key: str = Field(description="The group: a day (`YYYY-MM-DD`, UTC), a model, an endpoint, a provider, an "
                                 "organisation's id, or a user's id (a key's id for a key acting as no user).")
    org_id: str | None = Field(None, description="Groups by user or organisation: the organisation.")
    user_id: str | None = Field(None, description="Groups by user: the user (null for a key acting as no user).")
    api_key_id: str | None = Field(None, description="Groups by user: the key, for a key acting as no user.")

    @classmethod
    def of_group(cls, group: Group) -> GroupView:
        return cls(key=group.key, org_id=group.org_id, user_id=group.user_id, api_key_id=group.api_key_id,
                   **MetricsView.of(group.metrics).model_dump())


class OrgView(MetricsView):
    org_id: str
    name: str | None

    @classmethod
    def of_line(cls, line: OrgLine) -> OrgView:
        return cls(org_id=line.org_id, name=line.name, **MetricsView.of(line.metrics).model_dump())


class UserAnalytics(View):
    """The caller's own usage over ``start``..``end`` (whole UTC days), grouped by ``group_by``."""

    start: str = Field(description="The first day (`YYYY-MM-DD`, UTC).")
    end: str = Field(description="The last day, included.")
    group_by: Literal["day", "model", "endpoint"]
    counted_from: Timestamp | None = Field(description="When an admin reset the caller's figures within the "
                                                       "period: they count from then. Null otherwise.")
    totals: MetricsView
    groups: list[GroupView]
    truncated: bool = Field(description="True when there were more groups than `limit`.")

    @classmethod
    def of(cls, report: Report) -> UserAnalytics:
        return cls(start=report.period.start.isoformat(), end=report.period.end.isoformat(),
                   group_by=report.group_by, totals=MetricsView.of(report.totals),
                   counted_from=report.counted_from.isoformat() if report.counted_from else None,
                   groups=[GroupView.of_group(group) for group in report.groups], truncated=report.truncated)


class SystemAnalytics(View):
    """An organisation's usage (``scope: org``) or every organisation's (``scope: platform``)."""

    scope: Literal["org", "platform"]
    org_id: str | None = Field(description="The organisation reported on; null for the platform.")
    start: str
    end: str
    group_by: Literal["day", "model", "endpoint", "provider", "user", "org"]
    totals: MetricsView
    users: int = Field(description="Distinct users with usage in the period.")
    orgs: int = Field(description="Distinct organisations with usage in the period.")
    groups: list[GroupView]
    truncated: bool
    top_users: list[GroupView] = Field(description="The users (and keys acting as no user) who spent most, each "
                                                   "counted from their latest reset.")
    top_orgs: list[OrgView] = Field(description="The organisations that spent most (only the caller's for an "
                                                "organisation's admin).")
    error_outcomes: dict[str, int] = Field(description="Calls per error code.")

    @classmethod
    def of(cls, report: Report) -> SystemAnalytics:
        return cls(scope=report.scope, org_id=report.org_id,
                   start=report.period.start.isoformat(), end=report.period.end.isoformat(),
                   group_by=report.group_by, totals=MetricsView.of(report.totals), users=report.users,
                   orgs=report.orgs, groups=[GroupView.of_group(group) for group in report.groups],
                   truncated=report.truncated, top_users=[GroupView.of_group(group) for group in report.top_users],
                   top_orgs=[OrgView.of_line(line) for line in report.top_orgs], error_outcomes=report.outcomes)


class AnalyticsReset(View):
    org_id: str
    user_id: str
    counted_from: Timestamp = Field(description="The user's figures count from this moment.")
    previous: Timestamp | None = Field(description="The reset before this one, if any.")
    usage_rows_kept: int = Field(description="The user's usage rows before the reset: kept, not deleted.")
    budgets: Literal["unchanged"] = Field(description="Budgets are separate: a reset does not touch them "
                                                      "(`POST /api/v1/admin/budgets/{id}/reset` does).")

    @classmethod
    def of(cls, done: ResetDone) -> AnalyticsReset:
        return cls(org_id=done.org_id, user_id=done.user_id, counted_from=done.counted_from.isoformat(),
                   previous=done.previous.isoformat() if done.previous else None, usage_rows_kept=done.rows_kept,
                   budgets="unchanged")
