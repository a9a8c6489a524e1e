"""Fixtures for the wire-format tests: the fault-injecting upstream and the production HTTP client, one
of each per test module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from atrium.gateway.http_client import upstream_http_client
from tests.fault_upstream import FaultUpstream


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[FaultUpstream]:
    async with FaultUpstream() as server:
        yield server


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with upstream_http_client(httpx.Timeout(5.0)) as http:
        yield http
