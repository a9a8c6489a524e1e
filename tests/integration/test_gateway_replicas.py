"""Two API replicas sharing Redis share their circuit breakers: one opened on replica A refuses calls
on replica B without calling the upstream."""

from __future__ import annotations

from pathlib import Path

from atrium.gateway.ports import ErrorEvent
from tests.fault_upstream import FaultUpstream
from tests.gateway_helpers import app_for, ask, collect, org_of


async def test_replicas_sharing_redis_share_the_breaker(tmp_path: Path, upstream: FaultUpstream,
                                                        redis_url: str) -> None:
    async with await app_for(tmp_path / "a", upstream, redis_url=redis_url) as replica_a, \
            await app_for(tmp_path / "b", upstream, redis_url=redis_url) as replica_b:
        org_a = await org_of(replica_a)
        for _ in range(2):
            await collect(replica_a, ask("flaky", org=org_a))
        calls = upstream.count("status-503")
        org_b = await org_of(replica_b)
        refused = await collect(replica_b, ask("flaky", org=org_b))
        assert isinstance(refused[-1], ErrorEvent) and refused[-1].code == "circuit_open"
        assert upstream.count("status-503") == calls


