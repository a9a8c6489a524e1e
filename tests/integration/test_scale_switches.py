"""Every row of docs/architecture.md's "Two profiles" table switches with ``database_url`` (PostgreSQL) and
``redis_url`` alone, and stays embedded without them: the adapters ``build_services`` wires, read off the
built services. (What they do across processes is tests/e2e/test_scale_processes.py's.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from limits.aio.storage import MemoryStorage, RedisStorage

from atrium.agents.checkpoints import PostgresCheckpoints, SqliteCheckpoints
from atrium.container import Services, build_services, close_services, migrate
from atrium.conversations.stream_logs import InProcessStreamLog, RedisStreamLog
from atrium.gateway.breaker_stores import InProcessBreakerStore, RedisBreakerStore
from atrium.gateway.cache import CachedChatModel
from atrium.gateway.cache_stores import InProcessCacheStore, RedisCacheStore
from atrium.jobs.procrastinate_queue import ProcrastinateJobQueue
from atrium.jobs.queue import DatabaseJobQueue
from atrium.knowledge.keyword import PostgresKeywordSearch, SqliteKeywordSearch
from atrium.knowledge.vector.hnsw import HnswVectorIndex
from atrium.knowledge.vector.pgvector import PgVectorIndex
from atrium.store.pubsub import InProcessPubSub, RedisPubSub
from tests.conftest import make_settings
from tests.postgres_fixtures import PostgresServer
from tests.tenancy_helpers import database_with_app_role

pytestmark = pytest.mark.integration


def cache_store(services: Services) -> Any:
    """The response cache's store, found down the gateway's wrapper stack."""
    model: Any = services.gateway.chat
    while not isinstance(model, CachedChatModel):
        model = model._inner
    return model._store


def wiring(services: Services) -> dict[str, Any]:
    return {
        "database": services.db.engine.dialect.name,
        "vectors": type(services.index),
        "keyword": type(services.knowledge.keyword),
        "rate limits": type(services.rate_limiter._storage),
        "login throttle": type(services.sessions._throttle._limiter.storage),
        "response cache": type(cache_store(services)),
        "circuit breakers": type(services.gateway.breakers._store),
        "pub/sub": type(services.pubsub),
        "realtime": type(services.realtime.pubsub),
        "answer streams": type(services.streams.log),
        "jobs": (type(services.jobs), services.jobs.run_in_process),
        "checkpoints": type(services.agents.checkpoints),
    }


async def built(settings: Any) -> dict[str, Any]:
    await migrate(settings)
    services = await build_services(settings)
    try:
        return wiring(services)
    finally:
        await close_services(services)


async def test_postgres_and_redis_switch_every_row(tmp_path: Path, postgres: PostgresServer, redis_url: str) -> None:
    urls = await database_with_app_role(postgres)
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", database_url=urls.app_url,
                                       migration_database_url=urls.owner_url, redis_url=redis_url,
                                       jobs={"run_in_api": None})
    assert await built(settings) == {
        "database": "postgresql", "vectors": PgVectorIndex, "keyword": PostgresKeywordSearch,
        "rate limits": RedisStorage, "login throttle": RedisStorage, "response cache": RedisCacheStore,
        "circuit breakers": RedisBreakerStore, "pub/sub": RedisPubSub, "realtime": RedisPubSub,
        "answer streams": RedisStreamLog, "jobs": (ProcrastinateJobQueue, False), "checkpoints": PostgresCheckpoints}


async def test_without_them_everything_stays_embedded(tmp_path: Path) -> None:
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", jobs={"run_in_api": None})
    assert await built(settings) == {
        "database": "sqlite", "vectors": HnswVectorIndex, "keyword": SqliteKeywordSearch,
        "rate limits": MemoryStorage, "login throttle": MemoryStorage, "response cache": InProcessCacheStore,
        "circuit breakers": InProcessBreakerStore, "pub/sub": InProcessPubSub, "realtime": InProcessPubSub,
        "answer streams": InProcessStreamLog, "jobs": (DatabaseJobQueue, True), "checkpoints": SqliteCheckpoints}
