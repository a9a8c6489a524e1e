"""CORS (``server.cors_origins``): a web app on another origin may call the API from the browser, as the
LangGraph JS SDK's ``useStream`` does (``x-api-key`` or ``Authorization`` make every call preflighted);
nothing is allowed by default."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from atrium.settings import Settings
from tests.api.auth_helpers import settings_of
from tests.conftest import ADMIN_KEY, RunningApp, make_settings, run_app

APP = "https://app.example.com"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-api-key"}


async def test_an_allowed_origin_is_preflighted_and_reads_the_run_it_started(tmp_path: Path) -> None:
    async with run_app(await settings_of(tmp_path / "data", server={"cors_origins": [APP]})) as app:
        preflight = await app.client.options("/threads", headers={"Origin": APP, **PREFLIGHT})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == APP
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        assert "POST" in preflight.headers["access-control-allow-methods"]

        headers = {"Origin": APP, "x-api-key": ADMIN_KEY, "Authorization": ""}
        thread = await app.client.post("/threads", json={}, headers=headers)
        assert thread.status_code == 200 and thread.headers["access-control-allow-origin"] == APP
        waited = await app.client.post(f"/threads/{thread.json()['thread_id']}/runs/wait", headers=headers,
                                       json={"assistant_id": "echo", "input": {"messages": ["Hi"]}})
        assert waited.status_code == 200 and waited.headers["content-location"].startswith("/threads/")
        exposed = waited.headers["access-control-expose-headers"].lower()
        assert "content-location" in exposed and "x-request-id" in exposed
        refused = await app.client.get("/threads/nope", headers={"Origin": APP})  # an error is readable too
        assert refused.status_code == 404 and refused.headers["access-control-allow-origin"] == APP


async def test_other_origins_get_no_cors_headers(tmp_path: Path) -> None:
    async with run_app(await settings_of(tmp_path / "data", server={"cors_origins": [APP]})) as app:
        preflight = await app.client.options("/threads", headers={"Origin": "https://evil.example", **PREFLIGHT})
        assert preflight.status_code == 400 and "access-control-allow-origin" not in preflight.headers
        listed = await app.client.post("/threads/search", json={}, headers={"Origin": "https://evil.example"})
        assert listed.status_code == 200 and "access-control-allow-origin" not in listed.headers


async def test_no_cors_by_default(running: RunningApp, settings: Settings) -> None:
    assert settings.server.cors_origins == []
    client = running.client
    preflight = await client.options("/threads", headers={"Origin": APP, **PREFLIGHT})
    assert preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers
    listed = await client.post("/threads/search", json={}, headers={"Origin": APP})
    assert listed.status_code == 200 and "access-control-allow-origin" not in listed.headers


def test_origins_come_comma_separated_and_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRIUM_SERVER__CORS_ORIGINS", f"{APP}, http://localhost:5173")
    assert Settings(data_dir=tmp_path).server.cors_origins == [APP, "http://localhost:5173"]
    for bad in ("app.example.com", "https://app.example.com/", "https://app.example.com/path"):
        with pytest.raises(pydantic.ValidationError, match="not an origin"):
            make_settings(tmp_path, server={"cors_origins": [bad]})
