"""Secret hygiene, end to end: Atrium runs real flows holding known secrets (provider keys, one of them
shaped like nothing in particular, the bootstrap admin key, a user's password, access and refresh tokens, a
created API key, the JWT secret, a PostgreSQL password, a Redis password), meets failures (upstream 401
that echoes the key, upstream 500, bad requests carrying the secrets, a crash), and afterwards none of the
secrets is found in any log record (every logger, at DEBUG), on stdout/stderr, in any text or JSON column
of any table (the audit log included), or in any HTTP error body.

What the database holds is not logged either, at any level: no password hash, API-key or refresh-token
hash, and no text of an ingested document appears in the logs (aiosqlite logs every call with its SQL
parameters at DEBUG, SQLAlchemy its parameters and rows at INFO): on SQLite too, with the app's own
log level at DEBUG.

Served by uvicorn on a loopback port, so its own loggers (access log included) take part; PostgreSQL as an
application role with a password (migrations as the owner); Redis through an ACL user with a password.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from sqlalchemy import text

from atrium.agents.chat_turns import ChatAssistant
from atrium.app import create_app
from atrium.store.engine import temporary_database
from atrium.telemetry.tracing import RecordingTracer
from tests.conftest import LiveServer, free_port, make_settings
from tests.fault_upstream import FaultUpstream
from tests.postgres_fixtures import PostgresServer

PROVIDER_KEY = "sk-hygiene-provider-0123456789abcdef"
ODD_PROVIDER_KEY = "Odd~Shaped|Provider#Key-7731"  # no credential shape: masked because it is configured
ADMIN_KEY = "atr_hygiene_admin_key_0123456789abcdefghij"
PASSWORD = "Tr0ub4dor&3-hygiene-Pw"
JWT_SECRET = "jwt-hygiene-secret-0123456789abcdefghijklmnop"
DB_PASSWORD = "Pg-Hygiene-Pass-4417"
REDIS_PASSWORD = "Redis-Hygiene-Pass-5523"
DOCUMENT_TEXT = "The quarterly hygiene figures are kept under the marker zebrafinch-confidential-4471."
DOCUMENT_MARKER = "zebrafinch-confidential-4471"


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger at DEBUG, also written to stderr by a plain handler (a sink Atrium did not set up)."""
    caplog.set_level(logging.DEBUG)
    plain = logging.StreamHandler(sys.stderr)
    plain.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(plain)
    try:
        yield caplog
    finally:
        logging.getLogger().removeHandler(plain)


def redis_user(socket: str) -> str:
    """A Redis ACL user with a password (the session's server keeps its password-less default user)."""
    name = "hyg" + uuid.uuid4().hex[:8]
    admin = redis.Redis(unix_socket_path=socket, db=7)
    admin.flushdb()  # the session's server is shared: no breaker state or limits left by an earlier test
    admin.acl_setuser(name, enabled=True, passwords=[f"+{REDIS_PASSWORD}"], keys=["*"], channels=["*"],
                      commands=["+@all"])
    admin.close()
    return f"unix://{name}:{REDIS_PASSWORD}@{socket}?db=7"


def gateway(upstream: FaultUpstream) -> dict[str, Any]:
    return {
        "providers": {"up": {"kind": "openai", "base_url": upstream.base_url, "api_key": PROVIDER_KEY},
                      "odd": {"kind": "openai", "base_url": upstream.base_url, "api_key": ODD_PROVIDER_KEY}},
        "models": {"good": {"provider": "up", "model": "ok"},
                   "refused": {"provider": "odd", "model": "status-401"},
                   "broken": {"provider": "up", "model": "status-500"}},
        "default_model": "good", "cache": {"enabled": False},
        "retry": {"attempts": 1, "initial_delay_s": 0, "jitter_s": 0},
    }


async def crash() -> None:
    raise RuntimeError(f"crashed holding {DB_PASSWORD}, {ODD_PROVIDER_KEY}, {JWT_SECRET} and {PROVIDER_KEY}")


async def run_flows(http: httpx.AsyncClient, secrets: dict[str, str]) -> list[httpx.Response]:
    """Real flows, successes and failures; returns every response that is an error."""
    done: list[httpx.Response] = []

    async def call(method: str, url: str, expect: int, **kwargs: Any) -> httpx.Response:
        response = await http.request(method, url, **kwargs)
        assert response.status_code == expect, (method, url, response.status_code, response.text)
        done.append(response)
        return response

    hello = {"messages": [{"role": "user", "content": "Hello there"}]}
    await call("POST", "/v1/chat/completions", 200, json={"model": "good", **hello})
    await call("POST", "/v1/chat/completions", 200, json={"model": "good", "stream": True, **hello})
    await call("POST", "/v1/chat/completions", 502, json={"model": "refused", **hello})  # upstream 401 echoing the key
    await call("POST", "/v1/chat/completions", 502, json={"model": "broken", **hello})
    await call("POST", "/api/v1/admin/users", 201,
               json={"email": "hygiene@example.com", "name": "Hy Giene", "role": "member", "password": PASSWORD})
    login = await call("POST", "/api/v1/auth/token", 200, json={"email": "hygiene@example.com", "password": PASSWORD})
    secrets["access_token"] = login.json()["access_token"]
    secrets["refresh_token"] = login.json()["refresh_token"]
    refreshed = await call("POST", "/api/v1/auth/refresh", 200, json={"refresh_token": secrets["refresh_token"]})
    secrets["refreshed_token"] = refreshed.json()["refresh_token"]
    await call("GET", "/api/v1/conversations", 200, headers={"Authorization": f"Bearer {secrets['access_token']}"})
    created = await call("POST", "/api/v1/admin/keys", 201, json={"name": "hygiene", "role": "member"})
    secrets["created_key"] = created.json()["key"]
    as_key = {"Authorization": f"Bearer {secrets['created_key']}"}
    await call("GET", "/v1/models", 200, headers=as_key)
    # the created key ingests a document (its text goes into the database as SQL parameters)
    upload = await call("POST", "/api/v1/documents", 202, headers=as_key, data={"collection": "hygiene"},
                        files=[("files", ("figures.md", f"# Figures\n\n{DOCUMENT_TEXT}\n".encode(), "text/plain"))])
    await wait_job(http, upload.json()["job_id"], as_key)
    await call("POST", "/api/v1/search/semantic", 200, headers=as_key, json={"query": "quarterly figures", "limit": 3})
    # credentials in a URL path reach the access log
    await call("GET", f"/api/v1/auth/refresh/{secrets['refreshed_token']}", 404)
    await call("GET", f"/hygiene/{secrets['access_token']}/{secrets['created_key']}", 404)
    # failures that carry the secrets in
    await call("POST", "/api/v1/auth/token", 401, json={"email": "hygiene@example.com", "password": PASSWORD + "x"})
    await call("POST", "/api/v1/auth/token", 422, json={"email": 5, "password": PASSWORD, PASSWORD: JWT_SECRET})
    await call("POST", "/api/v1/auth/token", 422, json={"email": "a@b.c", "password": PASSWORD * 100})
    await call("POST", "/api/v1/admin/users", 422, json={"email": "x@example.com", "name": "X", "password": 12345678,
                                                         ODD_PROVIDER_KEY: DB_PASSWORD})
    await call("POST", "/v1/chat/completions", 400,
               json={"model": PROVIDER_KEY, "messages": [{"role": "wizard", "content": DB_PASSWORD}]})
    await call("POST", "/v1/chat/completions", 400, content=f'{{"model": "{ODD_PROVIDER_KEY}", "messages": [',
               headers={"content-type": "application/json"})
    await call("POST", "/api/v1/chat/ask", 422, json={"message": REDIS_PASSWORD, ODD_PROVIDER_KEY: 1})
    await call("GET", f"/api/v1/conversations?limit={DB_PASSWORD}", 422)
    await call("GET", f"/v1/models?api_key={PROVIDER_KEY}&token={JWT_SECRET}", 200)
    await call("GET", "/v1/models", 401, headers={"Authorization": f"Bearer {ADMIN_KEY}x"})
    await call("GET", "/v1/models", 401, headers={"Authorization": f"Bearer {JWT_SECRET}"})
    await call("GET", "/api/v1/conversations", 401, headers={"X-API-Key": ODD_PROVIDER_KEY,
                                                             "Authorization": ""})
    await call("POST", "/api/v1/auth/refresh", 401, json={"refresh_token": secrets["refresh_token"]})  # reused
    await call("GET", "/hygiene/crash", 500)
    return [response for response in done if response.status_code >= 400]


async def wait_job(http: httpx.AsyncClient, job_id: str, headers: dict[str, str]) -> None:
    for _ in range(300):
        job = (await http.get(f"/api/v1/jobs/{job_id}", headers=headers)).json()
        if job["status"] in ("succeeded", "failed"):
            assert job["status"] == "succeeded", job
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"ingestion job still {job['status']}")


async def stored_values(url: str) -> dict[str, str]:
    """What the database holds that must never be logged: every password, API-key and refresh-token hash."""
    found: dict[str, str] = {}
    async with temporary_database(url) as db, db.system_session() as session:
        for table, column in (("users", "password_hash"), ("api_keys", "key_hash"), ("refresh_tokens", "token_hash")):
            values = await session.scalars(text(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL"))
            found.update({f"{table}.{column} #{number}": value for number, value in enumerate(values)})
    assert any(name.startswith("users.") for name in found) and any(name.startswith("refresh_") for name in found)
    return found


async def sqlite_texts(url: str) -> dict[str, list[str]]:
    """Every text value of every table of a SQLite database."""
    found: dict[str, list[str]] = {}
    async with temporary_database(url) as db, db.system_session() as session:
        tables = await session.scalars(text("SELECT name FROM sqlite_master WHERE type = 'table'"))
        for table in list(tables):
            columns = (await session.execute(text(f'PRAGMA table_info("{table}")'))).all()
            for column in columns:
                values = await session.scalars(text(f'SELECT "{column.name}" FROM "{table}"'))
                found.setdefault(table, []).extend(value for value in values if isinstance(value, str) and value)
    return found


def leaks_in(secrets: dict[str, str], sinks: dict[str, str]) -> set[tuple[str, str]]:
    return {(name, sink) for name, secret in secrets.items() for sink, content in sinks.items() if secret in content}


def log_sinks(records: pytest.LogCaptureFixture, printed: pytest.CaptureResult[str]) -> dict[str, str]:
    return {
        "log records": "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.stack_info or ''}"
                                 for r in records.records),
        "caplog text": records.text,
        "stdout": printed.out,
        "stderr": printed.err,
    }


async def table_texts(owner_url: str) -> dict[str, list[str]]:
    """Every text and JSON value of every table, read as the owner (no Row-Level Security)."""
    found: dict[str, list[str]] = {}
    async with temporary_database(owner_url) as owner, owner.system_session() as session:
        columns = (await session.execute(text(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb')"))).all()
        for table, column in columns:
            values = await session.scalars(text(f'SELECT "{column}"::text FROM "{table}"'))
            found.setdefault(table, []).extend(value for value in values if value)
    return found


@pytest.mark.integration
async def test_no_secret_is_found_in_logs_database_audit_or_errors(
        tmp_path: Path, postgres: PostgresServer, postgres_url: str, redis_server: str,
        every_log: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    role = "hyg_" + uuid.uuid4().hex[:8]
    await asyncio.to_thread(postgres.psql, f"CREATE ROLE {role} LOGIN PASSWORD '{DB_PASSWORD}';")
    app_url = postgres_url.replace("postgres@", f"{role}:{DB_PASSWORD}@", 1)
    redis_url = await asyncio.to_thread(redis_user, redis_server)
    secrets = {"provider_key": PROVIDER_KEY, "odd_provider_key": ODD_PROVIDER_KEY, "admin_key": ADMIN_KEY,
               "password": PASSWORD, "jwt_secret": JWT_SECRET, "db_password": DB_PASSWORD,
               "redis_password": REDIS_PASSWORD}

    async with FaultUpstream() as upstream:
        settings = await asyncio.to_thread(
            make_settings, tmp_path / "data", bootstrap_admin_key=ADMIN_KEY, database_url=app_url,
            migration_database_url=postgres_url, redis_url=redis_url, auth={"jwt_secret": JWT_SECRET},
            gateway=gateway(upstream), log_level="debug")
        app: FastAPI = create_app(settings)
        app.add_api_route("/hygiene/crash", crash)
        async with LiveServer(app, free_port()) as server, \
                httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                  timeout=30) as http:
            chat = server.services.chat  # the assistant graph's node spans, recorded in memory
            tracer = RecordingTracer()
            chat.assistant = ChatAssistant(replace(chat.assistant.deps, tracer=tracer))
            errors = await run_flows(http, secrets)
            asked = await http.post("/api/v1/chat/ask", json={"message": "What are the quarterly figures?"})
            assert asked.status_code == 200, asked.text
            async with server.services.db.tenant_session("x") as session:  # the app's own connection
                assert await session.scalar(text("SELECT current_user")) == role
            clients = await asyncio.to_thread(lambda: redis.Redis(unix_socket_path=redis_server).client_list())
            assert any(client.get("user", "").startswith("hyg") for client in clients)  # Redis with its password
        # the secrets were really in use
        sent = [request.headers.get("authorization") for request in upstream.requests]
        assert f"Bearer {PROVIDER_KEY}" in sent and f"Bearer {ODD_PROVIDER_KEY}" in sent

    tables = await table_texts(postgres_url)
    audited = set(tables["audit_log"])
    assert {"auth.login", "auth.refresh", "auth.refresh_reuse", "key.create"} <= audited  # the trail was written
    stored = await stored_values(postgres_url)
    printed = capfd.readouterr()
    logs = log_sinks(every_log, printed)
    sinks: dict[str, str] = {
        **logs,
        "error bodies": "\n".join(f"{r.status_code} {dict(r.headers)} {r.text}" for r in errors),
        **{f"table {name}": "\n".join(values) for name, values in tables.items()},
        "spans": "\n".join(f"{span.name} {span.attributes} {span.status} {span.description}" for span in tracer.spans),
    }
    assert len(every_log.records) > 100 and "uvicorn.access" in sinks["log records"]
    assert "crashed holding" in sinks["caplog text"]  # the crash was logged, with its traceback
    assert any(r.status_code == 500 and r.json()["error"]["message"] == "Internal error." for r in errors)
    assert DOCUMENT_MARKER in "\n".join(tables["chunks"])  # the document was really ingested
    assert leaks_in(secrets, sinks) == set()
    assert leaks_in({**stored, "document text": DOCUMENT_MARKER}, logs) == set()
    assert "assistant.answer" in sinks["spans"]  # the spans were recorded (and are among the sinks above)


@pytest.mark.integration
async def test_debug_logs_on_sqlite_show_no_sql_parameter_hash_or_token(
        tmp_path: Path, every_log: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    """The embedded profile at ``log_level: debug``: aiosqlite and SQLAlchemy would log every SQL parameter
    (password and key hashes, refresh-token hashes, chunk text); none of it, nor any secret, reaches a log."""
    secrets = {"provider_key": PROVIDER_KEY, "odd_provider_key": ODD_PROVIDER_KEY, "admin_key": ADMIN_KEY,
               "password": PASSWORD, "jwt_secret": JWT_SECRET}
    async with FaultUpstream() as upstream:
        settings = await asyncio.to_thread(
            make_settings, tmp_path / "data", bootstrap_admin_key=ADMIN_KEY, auth={"jwt_secret": JWT_SECRET},
            gateway=gateway(upstream), log_level="debug")
        assert settings.is_sqlite
        app: FastAPI = create_app(settings)
        app.add_api_route("/hygiene/crash", crash)
        async with LiveServer(app, free_port()) as server, \
                httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                  timeout=30) as http:
            errors = await run_flows(http, secrets)
            capped = logging.getLogger("aiosqlite").getEffectiveLevel()
            # even a logger opened to DEBUG by hand (here, caplog) shows no parameter
            every_log.set_level(logging.DEBUG, logger="aiosqlite")
            await http.get("/api/v1/conversations", headers={"Authorization": f"Bearer {secrets['created_key']}"})

    url = settings.resolved_database_url
    tables = await sqlite_texts(url)
    stored = await stored_values(url)
    printed = capfd.readouterr()
    logs = log_sinks(every_log, printed)
    assert len(every_log.records) > 100 and "uvicorn.access" in logs["log records"]
    assert any(r.name == "aiosqlite" for r in every_log.records)  # it did log, without its arguments
    assert DOCUMENT_MARKER in "\n".join(tables["chunks"])
    sinks = {**logs, "error bodies": "\n".join(f"{r.status_code} {dict(r.headers)} {r.text}" for r in errors),
             **{f"table {name}": "\n".join(values) for name, values in tables.items()}}
    assert leaks_in(secrets, sinks) == set()
    assert leaks_in({**stored, "document text": DOCUMENT_MARKER}, logs) == set()
    assert capped == logging.WARNING
