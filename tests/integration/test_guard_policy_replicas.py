"""A guard policy changed through one replica binds another at once (PubSub ``policy.changed`` over real
Redis), even though the other holds the old policy in a cache that would keep it for an hour."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fault_upstream import FaultUpstream
from tests.gateway_helpers import app_for, gateway_config

MAIL = {"model": "good", "messages": [{"role": "user", "content": "mail jane.doe@example.com"}]}


async def test_a_policy_change_reaches_another_replica_at_once(tmp_path: Path, upstream: FaultUpstream,
                                                               postgres_url: str, redis_url: str) -> None:
    shared = {"database_url": postgres_url, "redis_url": redis_url, "guard": {"policy_cache_ttl_s": 3600},
              "gateway": gateway_config(upstream)}
    async with await app_for(tmp_path / "a", upstream, **shared) as first, \
            await app_for(tmp_path / "b", upstream, **shared) as second:
        assert (await first.client.post("/v1/chat/completions", json=MAIL)).status_code == 200  # now cached
        changed = await second.client.put("/api/v1/admin/policy", json={"pii": {"action": "block"}})
        assert changed.status_code == 200, changed.text
        for _ in range(100):
            response = await first.client.post("/v1/chat/completions", json=MAIL)
            if response.status_code != 200:
                break
            await asyncio.sleep(0.05)
        assert response.status_code == 400 and response.json()["error"]["code"] == "content_blocked"
