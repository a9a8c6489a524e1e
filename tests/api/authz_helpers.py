"""Shared by the tenant-isolation test (``test_isolation.py``) and the authorization matrix
(``test_authz_matrix.py``): the route table of an app and its public routes, clients with a credential, an
app on SQLite or on PostgreSQL as a normal role under Row-Level Security, and chat over ``WS /ws``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from starlette.routing import WebSocketRoute
from websockets.asyncio.client import ClientConnection

from atrium.app import create_app
from atrium.settings import Settings
from tests.conftest import make_settings
from tests.tenancy_helpers import database_with_app_role

# Both databases: SQLite, and PostgreSQL (the app connected as a normal role under RLS, require_rls on).
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.integration)]

# Routes that need no credential and hold no tenant data: liveness and the API's own description.
PUBLIC_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/health"): "liveness, no data",
    ("GET", "/ready"): "readiness flags, no data",
    ("GET", "/openapi.json"): "the API description",
    ("GET", "/docs"): "the API description",
    ("GET", "/docs/oauth2-redirect"): "the API description",
    ("GET", "/redoc"): "the API description",
}


def route_table(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every HTTP route, ("WS", path) of every WebSocket route, included routers too."""
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)  # FastAPI's lazily included routers
        targets = [context.original_route for context in contexts()] if contexts is not None else [route]
        for target in targets:
            path = str(getattr(target, "path", ""))
            if isinstance(target, WebSocketRoute) or type(target).__name__ == "APIWebSocketRoute":
                found.add(("WS", path))
            else:
                found |= {(method, path) for method in getattr(target, "methods", None) or () if method != "HEAD"}
    return found


def app_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """The route table of the app as ``create_app`` builds it now (no lifespan needed)."""
    return route_table(create_app(make_settings(tmp_path / "data")))


def client_for(app: FastAPI, credential: str | None) -> httpx.AsyncClient:
    """An in-process client of ``app`` sending ``credential`` as a bearer (none: anonymous)."""
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://atrium.test", headers=headers)


async def password_hash(password: str) -> str:
    return await asyncio.to_thread(PasswordHasher().hash, password)


async def backend_settings(request: pytest.FixtureRequest, data_dir: Path, backend: str,
                           **overrides: Any) -> Settings:
    """Settings on ``data_dir``; on PostgreSQL, a fresh database the app reaches as a normal login role
    (migrations as the owner) with ``database.require_rls`` on."""
    if backend == "postgres":
        urls = await database_with_app_role(request.getfixturevalue("postgres"))
        overrides |= {"database_url": urls.app_url, "migration_database_url": urls.owner_url,
                      "database": {"require_rls": True}}
    return await asyncio.to_thread(make_settings, data_dir, **overrides)


async def ws_exchange(ws: ClientConnection, request: dict[str, Any], *,
                      inspect: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Send one client message; every event answering it up to its ``done`` or ``error`` (each raw frame
    passed to ``inspect`` first, e.g. to look for leaked secrets)."""
    await ws.send(json.dumps(request))
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] not in ("done", "error"):
        frame = str(await asyncio.wait_for(ws.recv(), 15))
        if inspect is not None:
            inspect(frame)
        events.append(json.loads(frame))
    assert {event["id"] for event in events} == {request["id"]}, events
    return events
