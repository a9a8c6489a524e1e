"""Usage analytics (``/api/v1/analytics``), after LiteLLM's spend reports: the caller's own usage, an
organisation's or the platform's, as JSON or as a streamed CSV export (``?format=csv``), and the reset of
a user's figures. Who sees what, and what a reset changes: ``atrium.analytics.service``; docs/api.md."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse

from atrium.analytics.csv_export import csv_lines
from atrium.analytics.period import MAX_DAYS, Period, period_of
from atrium.analytics.service import Group
from atrium.http.deps import AnalyticsDep, ClientIp, CountedPrincipalDep, PrincipalDep, require_role
from atrium.http.schemas.analytics import AnalyticsReset, SystemAnalytics, UserAnalytics
from atrium.http.schemas.errors import AUTHENTICATED, COUNTED, error_responses

router = APIRouter(prefix="/api/v1/analytics", tags=["analytics"], responses=AUTHENTICATED)

Start = Annotated[date | None, Query(description="The first day (`YYYY-MM-DD`, UTC); default: 29 days before "
                                                 "`end`.")]
End = Annotated[date | None, Query(description=f"The last day, included; default: today (UTC). At most "
                                               f"{MAX_DAYS} days from `start`.")]
Limit = Annotated[int, Query(ge=1, le=10_000, description="Groups in a JSON answer, at most (a CSV export has "
                                                          "them all).")]
Format = Annotated[Literal["json", "csv"], Query(alias="format", description="`csv`: the groups as a CSV "
                                                                             "download, streamed.")]
Top = Annotated[int, Query(ge=1, le=100, description="Lines in `top_users` and `top_orgs`.")]
UserId = Annotated[str, Path(min_length=1, max_length=32)]
_CSV = {"text/csv": {"schema": {"type": "string"}}}


def csv_download(groups: AsyncIterator[Group], name: str) -> StreamingResponse:
    return StreamingResponse(csv_lines(groups), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _file_name(kind: str, period: Period, group_by: str) -> str:
    return f"atrium-usage-{kind}-{period.start}-{period.end}-by-{group_by}.csv"


@router.get("/user", response_model=None, responses={
    200: {"model": UserAnalytics, "description": "The caller's usage; with `format=csv`, its groups as CSV.",
          "content": _CSV}, **COUNTED})
async def user_analytics(principal: CountedPrincipalDep, analytics: AnalyticsDep, start: Start = None,
                         end: End = None, group_by: Annotated[Literal["day", "model", "endpoint"], Query()] = "day",
                         limit: Limit = 1000, output: Format = "json") -> Response:
    """The caller's own usage (its user's calls in this organisation, or a key's acting as no user), by
    day, model or endpoint, counted from the latest reset of its figures."""
    period = period_of(start, end)
    reader, reset_at = await analytics.own(principal)
    if output == "csv":
        return csv_download(analytics.stream_groups(reader, period, group_by, reset_at=reset_at),
                            _file_name("user", period, group_by))
    report = await analytics.report(reader, period, group_by, limit=limit, reset_at=reset_at)
    return JSONResponse(UserAnalytics.of(report).model_dump(mode="json"))


@router.get("/system", response_model=None, responses={
    200: {"model": SystemAnalytics, "description": "The organisation's usage (the platform's for the platform "
          "admin); with `format=csv`, its groups as CSV.", "content": _CSV}, **COUNTED})
async def system_analytics(principal: CountedPrincipalDep, analytics: AnalyticsDep, start: Start = None,
                           end: End = None,
                           group_by: Annotated[Literal["day", "model", "endpoint", "provider", "user", "org"],
                                               Query()] = "day",
                           limit: Limit = 1000, top: Top = 10, output: Format = "json") -> Response:
    """Totals, groups, top users and organisations and error outcomes: an organisation-wide admin's
    organisation, or every organisation for the platform admin."""
    period = period_of(start, end)
    reader = await analytics.system(principal)
    if output == "csv":
        return csv_download(analytics.stream_groups(reader, period, group_by), _file_name(reader.scope, period,
                                                                                          group_by))
    report = await analytics.report(reader, period, group_by, limit=limit, top=top)
    return JSONResponse(SystemAnalytics.of(report).model_dump(mode="json"))


@router.post("/user/{user_id}/reset", dependencies=[require_role("admin")], response_model=AnalyticsReset,
             responses=error_responses(404))
async def reset_user(user_id: UserId, principal: PrincipalDep, analytics: AnalyticsDep,
                     ip: ClientIp) -> AnalyticsReset:
    """Make the user's figures count from now (their usage rows are kept; budgets are unchanged). An admin
    of the user's organisation (a division's admin: users of that division); audited as
    ``analytics.reset``."""
    return AnalyticsReset.of(await analytics.reset(principal, user_id, ip=ip))
