"""Fixtures: real PostgreSQL 16 + pgvector (pgserver) for integration tests: one server per session, one fresh
database per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest


class PostgresServer:
    def __init__(self, server: object, socket_dir: str) -> None:
        self.server = server
        self.socket_dir = socket_dir

    def psql(self, sql: str) -> str:
        return str(self.server.psql(sql))  # type: ignore[attr-defined]

    def create_database(self) -> str:
        """A new empty database; returns its asyncpg URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        self.psql(f"CREATE DATABASE {name};")
        return f"postgresql+asyncpg://postgres@/{name}?host={self.socket_dir}"


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    pgserver = pytest.importorskip("pgserver")
    data_dir: Path = tmp_path_factory.mktemp("pg")
    server = pgserver.get_server(str(data_dir), cleanup_mode="stop")
    socket_dir = parse_qs(urlparse(server.get_uri()).query)["host"][0]
    try:
        yield PostgresServer(server, socket_dir)
    finally:
        server.cleanup()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    return postgres.create_database()
