"""API-key revocation on every replica at once: two API instances share one database and one Redis; a key
the second one has cached stops working there as soon as the first announces its revocation. (Not under
tests/api: redis-py's connection set-up reads package metadata from disk on the event loop, which the
blocking-call guard of the API tests refuses.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import select, update

from atrium.accounts.api_keys import REVOCATIONS_CHANNEL, create_key
from atrium.store.models import ApiKey
from tests.api.auth_helpers import bearer, settings_of
from tests.api.test_edge import assert_typed_error
from tests.conftest import ADMIN_KEY, start_app

pytestmark = pytest.mark.integration


async def test_key_revocation_reaches_another_replica_at_once(tmp_path: Path, redis_url: str) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    slow_cache = {"key_cache_ttl_s": 600}  # only the announcement can make the second replica forget
    settings = [await settings_of(tmp_path / name, database_url=database, redis_url=redis_url, auth=slow_cache)
                for name in ("a", "b")]
    started = [await start_app(s) for s in settings]
    first, second = (httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://atrium.test")
                     for app, _ in started)
    redis = Redis.from_url(redis_url)
    try:
        services = started[0][0].state.services
        async with services.db.system_session() as session:
            org_id = str(await session.scalar(select(ApiKey.org_id)))
            announced, raw = await create_key(session, org_id=org_id, user_id=None, role="member", name="a")
            silent, silent_raw = await create_key(session, org_id=org_id, user_id=None, role="member", name="b")
        for raw_key in (raw, silent_raw):  # the second replica caches both keys
            assert (await second.get("/api/v1/conversations", headers=bearer(raw_key))).status_code == 200
        for _ in range(100):  # both replicas listen on the channel
            [(_, listeners)] = await redis.pubsub_numsub(f"atrium:{REVOCATIONS_CHANNEL}")
            if listeners >= 2:
                break
            await asyncio.sleep(0.05)
        async with services.db.system_session() as session:
            await session.execute(update(ApiKey).where(ApiKey.id.in_([announced.id, silent.id]))
                                  .values(revoked_at=ApiKey.created_at))
        await services.authenticator.announce_revocation(announced.id)
        # revoked without an announcement: the second replica still trusts its cache (the TTL backstop)
        assert (await second.get("/api/v1/conversations", headers=bearer(silent_raw))).status_code == 200
        # announced: refused on the revoking replica and, at once, on the other one
        assert_typed_error(await first.get("/api/v1/conversations", headers=bearer(raw)), 401, "unauthorized")
        for _ in range(40):
            response = await second.get("/api/v1/conversations", headers=bearer(raw))
            if response.status_code == 401:
                break
            await asyncio.sleep(0.025)
        assert_typed_error(response, 401, "unauthorized")
        assert (await second.get("/api/v1/conversations", headers=bearer(ADMIN_KEY))).status_code == 200
    finally:
        await redis.aclose()
        for client in (first, second):
            await client.aclose()
        for _, lifespan in started:
            await lifespan.__aexit__(None, None, None)


async def test_a_demotion_reaches_another_replica_at_once(tmp_path: Path, redis_url: str) -> None:
    """Issue 11 item 2: an admin demoted on one replica loses admin powers on the other at its next request,
    with the same (unexpired) access token and with their key, though that replica had cached them."""
    database = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    slow_cache = {"key_cache_ttl_s": 600, "jwt_secret": "j" * 48}  # only the announcement can make B forget
    settings = [await settings_of(tmp_path / name, database_url=database, redis_url=redis_url, auth=slow_cache)
                for name in ("a", "b")]
    started = [await start_app(s) for s in settings]
    first, second = (httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://atrium.test")
                     for app, _ in started)
    redis = Redis.from_url(redis_url)
    admin = "/api/v1/admin"
    try:
        password = "a correct horse battery"
        made = await first.post(f"{admin}/users", headers=bearer(ADMIN_KEY), json={
            "email": "ada@example.org", "name": "Ada", "role": "admin", "password": password})
        assert made.status_code == 201, made.text
        ada = made.json()["id"]
        key = await first.post(f"{admin}/keys", headers=bearer(ADMIN_KEY), json={"name": "ada", "user_id": ada})
        login = await first.post("/api/v1/auth/token", json={"email": "ada@example.org", "password": password})
        assert login.status_code == 200, login.text
        credentials = [login.json()["access_token"], key.json()["key"]]
        for credential in credentials:  # the second replica caches Ada as an admin
            assert (await second.get(f"{admin}/users", headers=bearer(credential))).status_code == 200
        for _ in range(100):  # both replicas listen on the channel
            [(_, listeners)] = await redis.pubsub_numsub(f"atrium:{REVOCATIONS_CHANNEL}")
            if listeners >= 2:
                break
            await asyncio.sleep(0.05)
        demoted = await first.patch(f"{admin}/users/{ada}", headers=bearer(ADMIN_KEY), json={"role": "member"})
        assert demoted.status_code == 200, demoted.text
        for credential in credentials:
            for _ in range(40):  # the announcement's trip through Redis
                response = await second.get(f"{admin}/users", headers=bearer(credential))
                if response.status_code == 403:
                    break
                await asyncio.sleep(0.025)
            assert_typed_error(response, 403, "forbidden")
            assert_typed_error(await second.post(f"{admin}/users", headers=bearer(credential), json={
                "email": "eve@example.org", "name": "Eve", "role": "admin"}), 403, "forbidden")
            assert (await second.get("/api/v1/conversations", headers=bearer(credential))).status_code == 200
    finally:
        await redis.aclose()
        for client in (first, second):
            await client.aclose()
        for _, lifespan in started:
            await lifespan.__aexit__(None, None, None)
