"""Usage analytics through the API, on SQLite and on PostgreSQL (the app as a normal role under Row-Level
Security): a caller's own report, an organisation's and the platform's, the reset of a user's figures,
CSV exports, the indexes the queries use, and the usage that metering writes showing up in the reports.

Usage rows are written straight into the table (as ``UsageRecorder`` writes them) with chosen days, models,
endpoints and outcomes, so each figure checked is known in advance."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url

from atrium.accounts.admin import KeySpec, administer
from atrium.accounts.principal import Principal
from atrium.analytics import queries
from atrium.analytics.queries import Subject
from atrium.store.models import AuditEvent, BudgetSpend, UsageRecord, UsageReset
from tests.api.authz_helpers import BACKENDS, backend_settings, client_for
from tests.conftest import ADMIN_KEY, start_app
from tests.tenancy_helpers import create_tenant

# Each test reads its own month (the app is shared by the module's tests): rows of other tests never fall in it.
_MONTHS = itertools.count()


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@dataclass
class World:
    backend: str
    app: Any
    admin: httpx.AsyncClient  # the bootstrap owner's key: the platform admin
    clients: dict[str, httpx.AsyncClient]
    ids: dict[str, str]
    month: date  # the first day of this test's month

    @property
    def db(self) -> Any:
        return self.app.state.services.db

    def day(self, number: int) -> date:
        return self.month.replace(day=number)

    @property
    def period(self) -> dict[str, str]:
        last = (self.month + timedelta(days=32)).replace(day=1) - timedelta(days=1)
        return {"start": self.month.isoformat(), "end": last.isoformat()}


def row(org_id: str, user_id: str | None, created_at: datetime, *, model: str = "alpha",
        endpoint: str = "/api/v1/chat/ask", prompt: int = 10, completion: int = 5, cost: float = 0.01,
        outcome: str = "ok", api_key_id: str | None = None) -> dict[str, Any]:
    return {"org_id": org_id, "user_id": user_id, "api_key_id": api_key_id, "provider": "fake", "model": model,
            "endpoint": endpoint, "prompt_tokens": prompt, "completion_tokens": completion, "cost_usd": cost,
            "latency_ms": 1.0, "outcome": outcome, "estimated": False, "created_at": created_at}


async def add_rows(world: World, rows: list[dict[str, Any]]) -> None:
    async with world.db.system_session() as session:
        await session.execute(insert(UsageRecord), rows)


async def user_with_key(admin: httpx.AsyncClient, app: Any, email: str, role: str,
                        division_id: str | None = None) -> tuple[str, httpx.AsyncClient]:
    made = await admin.post("/api/v1/admin/users", json={"email": email, "name": email, "role": role,
                                                         "division_id": division_id})
    assert made.status_code == 201, made.text
    user_id = made.json()["id"]
    key = await admin.post("/api/v1/admin/keys", json={"name": f"key of {email}", "user_id": user_id})
    assert key.status_code == 201, key.text
    return user_id, client_for(app, key.json()["key"])


@dataclass
class App:
    backend: str
    app: Any
    admin: httpx.AsyncClient
    org_id: str
    division_id: str


@pytest.fixture(scope="module", params=BACKENDS)
async def shared_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[App]:
    """One app per database for the module (started before the blocking-call guard is on)."""
    backend = str(request.param)
    settings = await backend_settings(request, tmp_path_factory.mktemp(f"analytics-{backend}"), backend)
    app, lifespan = await start_app(settings)
    admin = client_for(app, ADMIN_KEY)
    try:
        org_id = (await admin.get("/api/v1/admin/org")).json()["id"]
        division = await admin.post("/api/v1/admin/divisions", json={"name": "D1"})
        yield App(backend, app, admin, org_id, division.json()["id"])
    finally:
        await admin.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def world(shared_app: App) -> AsyncIterator[World]:
    """Fresh users of the bootstrap organisation (a member, a colleague, an admin, a D1 admin), a fresh
    organisation B, and usage rows in a month of this test's own."""
    number = next(_MONTHS)
    month = date(2001 + number // 12, number % 12 + 1, 1)
    app, admin = shared_app.app, shared_app.admin
    clients: dict[str, httpx.AsyncClient] = {}
    ids = {"org": shared_app.org_id, "D1": shared_app.division_id}
    try:
        for who, role, div in (("member", "member", None), ("colleague", "member", None), ("admin", "admin", None),
                               ("div_admin", "admin", ids["D1"])):
            ids[who], clients[who] = await user_with_key(admin, app, f"{who}-{number}@alpha.example", role, div)
        ids["other_name"] = f"Bravo{number}"
        other = await create_tenant(app.state.services.db, ids["other_name"])
        ids["other_org"], ids["other_user"] = other.org_id, other.user_id
        clients["other"] = client_for(app, other.raw_key)
        world = World(shared_app.backend, app, admin, clients, ids, month)
        org, member, colleague = ids["org"], ids["member"], ids["colleague"]
        day1, day2, day3 = world.day(2), world.day(3), world.day(4)
        await add_rows(world, [
            row(org, member, at(day1), model="alpha", endpoint="/api/v1/chat/ask"),
            row(org, member, at(day1, 23), model="beta", endpoint="/v1/chat/completions", cost=0.1, prompt=100),
            row(org, member, at(day2), model="alpha", endpoint="/v1/chat/completions", outcome="upstream_error",
                completion=0, cost=0.0),
            row(org, member, at(day3), model="alpha", endpoint="/api/v1/query", outcome="cache_hit", cost=0.0),
            row(org, member, at(month - timedelta(days=1)), model="alpha"),  # before the period
            row(org, colleague, at(day2), model="gamma", cost=1.0),
            row(org, None, at(day2), model="alpha", api_key_id=f"{number:032d}", cost=0.5),
            row(ids["other_org"], ids["other_user"], at(day2), model="delta", cost=2.0, outcome="model_timeout"),
        ])
        ids["keyless"] = f"{number:032d}"
        yield world
    finally:
        for client in clients.values():
            await client.aclose()


async def report(client: httpx.AsyncClient, path: str, period: dict[str, str], **params: Any) -> dict[str, Any]:
    answer = await client.get(f"/api/v1/analytics/{path}", params={**period, **params})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


# --- a caller's own report -------------------------------------------------------------------------------------

async def test_own_usage_by_day_model_and_endpoint(world: World) -> None:
    member = world.clients["member"]
    by_day = await report(member, "user", world.period)
    assert by_day["totals"] == {"requests": 4, "prompt_tokens": 130, "completion_tokens": 15, "total_tokens": 145,
                                "cost_usd": pytest.approx(0.11), "errors": 1, "error_rate": 0.25, "cache_hits": 1}
    days = [world.day(n).isoformat() for n in (2, 3, 4)]
    assert [(g["key"], g["requests"]) for g in by_day["groups"]] == list(zip(days, (2, 1, 1), strict=True))
    assert by_day["counted_from"] is None and not by_day["truncated"]
    by_model = await report(member, "user", world.period, group_by="model")
    assert [(g["key"], g["requests"]) for g in by_model["groups"]] == [("beta", 1), ("alpha", 3)]  # by cost
    by_endpoint = {g["key"]: g for g in (await report(member, "user", world.period, group_by="endpoint"))["groups"]}
    assert by_endpoint["/v1/chat/completions"]["requests"] == 2 and by_endpoint["/v1/chat/completions"]["errors"] == 1
    assert set(by_endpoint) == {"/api/v1/chat/ask", "/v1/chat/completions", "/api/v1/query"}
    day2 = world.day(3).isoformat()
    one_day = await report(member, "user", {"start": day2, "end": day2})
    assert one_day["totals"]["requests"] == 1
    assert (await report(member, "user", world.period, limit=1))["truncated"] is True
    # Nobody else's rows: the colleague sees its one call, the other organisation its own.
    assert (await report(world.clients["colleague"], "user", world.period))["totals"]["requests"] == 1
    other = await report(world.clients["other"], "user", world.period, group_by="model")
    assert [g["key"] for g in other["groups"]] == ["delta"]


async def test_a_key_acting_as_no_user_sees_its_own_calls(world: World) -> None:
    services, org = world.app.state.services, world.ids["org"]
    actor = Principal(org_id=org, user_id=None, role="owner", via="cli")  # as ``atrium keys create`` does
    async with administer(services.db, services.authenticator, services.sessions.passwords, actor) as admin:
        created = await admin.create_key(org, KeySpec(name="service", role="member"))
    assert created.row.user_id is None
    keyless = client_for(world.app, created.raw)
    try:
        await add_rows(world, [row(org, None, at(world.day(4)), api_key_id=created.row.id, cost=0.25)])
        own = await report(keyless, "user", world.period)
        assert own["totals"]["requests"] == 1 and own["totals"]["cost_usd"] == pytest.approx(0.25)
    finally:
        await keyless.aclose()


@pytest.mark.parametrize("params, field", [
    ({"start": "2026-11-05", "end": "2026-11-01"}, "start"),
    ({"start": "2025-01-01", "end": "2026-11-01"}, "end"),
    ({"start": "1999-12-31"}, "start"),
    ({"start": "2026-02-30"}, "start"),
    ({"group_by": "user"}, "group_by"),
    ({"format": "xml"}, "format"),
    ({"limit": 0}, "limit"),
])
async def test_invalid_parameters_are_typed_422s(world: World, params: dict[str, Any], field: str) -> None:
    answer = await world.clients["member"].get("/api/v1/analytics/user", params=params)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_request" and field in error["message"], error
    assert error["request_id"]


async def test_no_credential_is_a_typed_401(world: World) -> None:
    anonymous = client_for(world.app, None)
    try:
        for path in ("/api/v1/analytics/user", "/api/v1/analytics/system"):
            answer = await anonymous.get(path)
            assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
    finally:
        await anonymous.aclose()


# --- an organisation's and the platform's report ---------------------------------------------------------------

async def test_org_admin_sees_its_organisation_only(world: World) -> None:
    system = await report(world.clients["admin"], "system", world.period, group_by="user")
    assert system["scope"] == "org" and system["org_id"] == world.ids["org"]
    assert system["totals"]["requests"] == 6 and system["orgs"] == 1 and system["users"] == 2
    assert system["totals"]["cost_usd"] == pytest.approx(1.61)
    top = [(line["user_id"], line["api_key_id"]) for line in system["top_users"]]
    assert top == [(world.ids["colleague"], None), (None, world.ids["keyless"]), (world.ids["member"], None)]
    assert [line["org_id"] for line in system["top_orgs"]] == [world.ids["org"]]
    assert system["error_outcomes"] == {"upstream_error": 1}
    assert {g["key"] for g in system["groups"]} == {world.ids["colleague"], world.ids["keyless"], world.ids["member"]}
    other = await report(world.clients["other"], "system", world.period)
    assert other["scope"] == "org" and other["totals"]["requests"] == 1
    assert other["error_outcomes"] == {"model_timeout": 1} and world.ids["member"] not in str(other)


async def test_platform_admin_sees_every_organisation(world: World) -> None:
    system = await report(world.admin, "system", world.period, group_by="org", top=1)
    assert system["scope"] == "platform" and system["org_id"] is None
    assert system["totals"]["requests"] == 7 and system["orgs"] == 2
    assert [g["key"] for g in system["groups"]] == [world.ids["other_org"], world.ids["org"]]  # by cost
    top = [(line["org_id"], line["name"]) for line in system["top_orgs"]]
    assert top == [(world.ids["other_org"], world.ids["other_name"])]
    assert system["error_outcomes"] == {"model_timeout": 1, "upstream_error": 1}
    assert system["totals"]["error_rate"] == pytest.approx(2 / 7, abs=1e-6)
    by_provider = await report(world.admin, "system", world.period, group_by="provider")
    assert [(g["key"], g["requests"]) for g in by_provider["groups"]] == [("fake", 7)]


async def test_members_and_division_admins_may_not_read_the_organisation(world: World) -> None:
    for who in ("member", "div_admin"):
        answer = await world.clients[who].get("/api/v1/analytics/system")
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden", answer.text


# --- reset -----------------------------------------------------------------------------------------------------

async def reset_count(world: World, user_id: str) -> int:
    async with world.db.system_session() as session:
        return int(await session.scalar(select(func.count()).select_from(UsageReset).where(
            UsageReset.user_id == user_id)) or 0)


async def test_reset_counts_from_now_keeps_the_rows_and_is_audited(world: World) -> None:
    org, member = world.ids["org"], world.ids["member"]
    budget = await world.admin.put("/api/v1/admin/budgets", json={
        "scope": "user", "subject_id": member, "period": "total", "limit_usd": "10"})
    assert budget.status_code == 201, budget.text
    async with world.db.system_session() as session:
        session.add(BudgetSpend(budget_id=budget.json()["id"], window="total", org_id=org, spent_micro_usd=110_000))
    today = datetime.now(UTC).date()
    await add_rows(world, [row(org, member, datetime.now(UTC) - timedelta(minutes=5), cost=0.5)])
    now_period = {"start": (today - timedelta(days=60)).isoformat(), "end": today.isoformat()}
    before = await report(world.clients["member"], "user", now_period)
    assert before["totals"]["requests"] == 1  # the fixture's rows are years back

    done = await world.clients["admin"].post(f"/api/v1/analytics/user/{member}/reset")
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["user_id"] == member and body["usage_rows_kept"] == 6 and body["previous"] is None
    assert body["budgets"] == "unchanged"

    await add_rows(world, [row(org, member, datetime.now(UTC) + timedelta(seconds=1), cost=0.25)])
    after = await report(world.clients["member"], "user", now_period)
    assert after["totals"]["requests"] == 1 and after["totals"]["cost_usd"] == pytest.approx(0.25)
    assert after["counted_from"] == body["counted_from"]
    # The organisation's totals keep every call; the member's line among the top users starts again.
    system = await report(world.clients["admin"], "system", now_period)
    assert system["totals"]["requests"] == 2
    member_line = next(line for line in system["top_users"] if line["user_id"] == member)
    assert member_line["requests"] == 1
    async with world.db.system_session() as session:
        kept = await session.scalar(select(func.count()).select_from(UsageRecord).where(UsageRecord.user_id == member))
        spend = await session.get(BudgetSpend, (budget.json()["id"], "total"))
        audit_row = await session.scalar(select(AuditEvent).where(AuditEvent.action == "analytics.reset"))
    assert kept == 7  # nothing deleted
    assert spend is not None and spend.spent_micro_usd == 110_000  # budgets untouched
    assert audit_row is not None and audit_row.target_id == member and audit_row.actor_user_id == world.ids["admin"]
    assert audit_row.org_id == org and audit_row.details["rows_kept"] == 6
    again = await world.clients["admin"].post(f"/api/v1/analytics/user/{member}/reset")
    assert again.json()["previous"] == body["counted_from"]


async def test_reset_is_for_the_users_admins_only(world: World) -> None:
    member, colleague = world.ids["member"], world.ids["colleague"]
    cases = [("member", colleague, 403), ("member", member, 403), ("div_admin", member, 404),  # not of D1
             ("other", member, 404), ("admin", world.ids["other_user"], 404)]
    for who, target, status in cases:
        answer = await world.clients[who].post(f"/api/v1/analytics/user/{target}/reset")
        assert answer.status_code == status, (who, answer.text)
        assert answer.json()["error"]["code"] in ("forbidden", "not_found")
    assert await reset_count(world, member) == 0 and await reset_count(world, world.ids["other_user"]) == 0


# --- CSV -------------------------------------------------------------------------------------------------------

async def test_csv_exports_stream_and_escape_formulas(world: World) -> None:
    org, member = world.ids["org"], world.ids["member"]
    await add_rows(world, [row(org, member, at(world.day(4)), model=model, cost=0.001 * n)
                           for n, model in enumerate(("=HYPERLINK(\"http://x\")", "+cmd", "-2+3", "@SUM(A1)",
                                                      "\tx", "plain"), 1)])
    async with world.clients["member"].stream("GET", "/api/v1/analytics/user",
                                              params={**world.period, "group_by": "model", "format": "csv"}) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/csv; charset=utf-8"
        assert answer.headers["content-disposition"] == (
            f'attachment; filename="atrium-usage-user-{world.period["start"]}-{world.period["end"]}-by-model.csv"')
        body = (await answer.aread()).decode()
    lines = list(csv.DictReader(io.StringIO(body)))
    keys = {line["key"] for line in lines}
    assert keys == {"'=HYPERLINK(\"http://x\")", "'+cmd", "'-2+3", "'@SUM(A1)", "'\tx", "plain", "alpha", "beta"}
    alpha = next(line for line in lines if line["key"] == "alpha")
    assert (alpha["requests"], alpha["errors"], alpha["cache_hits"]) == ("3", "1", "1")

    system = await world.admin.get("/api/v1/analytics/system",
                                   params={**world.period, "group_by": "org", "format": "csv"})
    assert system.status_code == 200 and system.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(system.text)))
    assert [r["org_id"] for r in rows] == [world.ids["other_org"], org]
    refused = await world.clients["member"].get("/api/v1/analytics/system", params={"format": "csv"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"


# --- indexes ---------------------------------------------------------------------------------------------------

PLANS = [  # (subject, grouping, the index its range must be read through)
    ("user", "day", "ix_usage_org_user_created"),
    ("org", "model", "ix_usage_org_created"),
    ("platform", "day", "ix_usage_created"),
]


async def analyze(world: World) -> None:
    """Fresh planner statistics for ``usage`` (on PostgreSQL as the table's owner: the app's role may not),
    and on PostgreSQL a vacuum, as autovacuum would have made by then."""
    if world.backend == "sqlite":
        async with world.db.system_session() as session:
            await session.execute(text("ANALYZE usage"))
        return
    url = make_url(world.app.state.settings.resolved_migration_database_url)

    def run() -> None:
        with psycopg.connect(dbname=url.database, user=url.username, host=url.query["host"], autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE usage")  # the visibility map too: index-only scans

    await asyncio.to_thread(run)


async def test_report_queries_read_an_index_range(world: World) -> None:
    """With a month of calls from 40 users of two organisations and fresh statistics, each report reads
    its rows from the index made for it alone (it covers every column read), and never scans the table."""
    org, other = world.ids["org"], world.ids["other_org"]
    await add_rows(world, [row(org if n % 2 else other, f"user{n % 40:028d}", at(world.day(1 + n % 28), n % 24))
                           for n in range(4000)])
    await analyze(world)
    since, before = at(world.day(2), 0), at(world.day(4), 0)
    subjects = {"user": Subject(org, world.ids["member"]), "org": Subject(org), "platform": Subject(None)}
    sqlite = world.backend == "sqlite"
    async with world.db.system_session() as session:
        for name, grouping, index in PLANS:
            query = queries.groups_query(subjects[name], since, before, grouping, sqlite=sqlite)  # type: ignore[arg-type]
            compiled = query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
            prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            plan = "\n".join(str(line[-1]) for line in (await session.execute(text(prefix + str(compiled)))).all())
            covered = f"USING COVERING INDEX {index}" if sqlite else f"Index Only Scan using {index}"
            assert covered in plan, f"{name}: {plan}"
            assert "SCAN usage" not in plan and "Seq Scan on usage" not in plan, plan
