"""Fixtures for the wire-format tests: the fault-injecting upstream and an HTTP client, one of each per
test module. Every test that takes ``client`` runs twice: with the production client (model calls go to
aiohttp directly) and with a plain httpx client (the path taken behind an environment proxy)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from atrium.gateway.http_client import upstream_http_client
from tests.fault_upstream import FaultUpstream


@pytest.fixture(scope="module")
async def upstream(client: httpx.AsyncClient) -> AsyncIterator[FaultUpstream]:
    """A fresh upstream per client, so that its per-model call counts start at zero for each."""
    async with FaultUpstream() as server:
        yield server


@pytest.fixture(scope="module", params=["aiohttp", "httpx"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    timeout = httpx.Timeout(5.0)
    http = upstream_http_client(timeout) if request.param == "aiohttp" else httpx.AsyncClient(timeout=timeout)
    async with http:
        yield http
