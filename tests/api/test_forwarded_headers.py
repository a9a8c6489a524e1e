"""``X-Forwarded-For`` names the client only when it comes from a configured proxy
(``server.forwarded_allow_ips``, default none). uvicorn's own default believes it from 127.0.0.1, so a
process on the host could give each login attempt a new client IP and never meet the per-IP throttle.

Served as ``atrium serve`` serves (``atrium.cli.server_config``), on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from atrium.app import create_app
from atrium.cli import server_config
from atrium.settings import Settings
from atrium.store.models import AuditEvent
from tests.conftest import LiveServer, free_port, make_settings

ATTEMPTS_PER_IP = 3


@contextlib.asynccontextmanager
async def served(tmp_path: Path, **server: Any) -> AsyncIterator[LiveServer]:
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", server=server,
                                       auth={"login_attempts_per_minute_per_ip": ATTEMPTS_PER_IP})
    app = create_app(settings)
    port = free_port()
    live = LiveServer(app, port)
    live.server = uvicorn.Server(server_config(app, settings, host="127.0.0.1", port=port))
    async with live:
        yield live


async def attempts(live: LiveServer, forwarded_for: list[str]) -> list[int]:
    """One failed login per entry, each with its own email and ``X-Forwarded-For``; the status codes.

    The throttle counts over a sliding minute approximated from two fixed minutes (the ``limits``
    library's sliding window counter), which lets one more attempt through just after a minute starts:
    the attempts are made well inside one minute so that the approximation does not decide the answer."""
    await clear_of_a_minute_boundary()
    async with httpx.AsyncClient(base_url=live.url) as http:
        return [(await http.post("/api/v1/auth/token", headers={"X-Forwarded-For": address},
                                 json={"email": f"nobody{number}@example.com", "password": "wrong password"}
                                 )).status_code for number, address in enumerate(forwarded_for)]


async def clear_of_a_minute_boundary(margin_s: float = 20.0) -> None:
    into_minute = time.time() % 60
    if into_minute > 60 - margin_s:
        await asyncio.sleep(60 - into_minute + 0.5)


async def audited_ips(live: LiveServer) -> set[str | None]:
    async with live.services.db.system_session() as session:
        return set(await session.scalars(select(AuditEvent.ip).where(AuditEvent.action == "auth.login")))


def test_forwarded_headers_are_off_unless_proxies_are_configured(tmp_path: Path) -> None:
    default = server_config(object(), Settings(data_dir=tmp_path))
    assert default.proxy_headers is False
    proxied = server_config(object(), Settings(data_dir=tmp_path, server={"forwarded_allow_ips": ["10.0.0.0/8"]}))
    assert proxied.proxy_headers is True and proxied.forwarded_allow_ips == ["10.0.0.0/8"]


@pytest.mark.parametrize("value", ["proxy.internal", "10.0.0.1/8", "10.0.0.300"])
def test_a_trusted_proxy_must_be_an_address_or_network(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError, match="forwarded_allow_ips"):
        Settings(data_dir=tmp_path, server={"forwarded_allow_ips": [value]})


async def test_rotating_forwarded_for_from_loopback_still_meets_the_login_throttle(tmp_path: Path) -> None:
    async with served(tmp_path) as live:
        codes = await attempts(live, [f"203.0.113.{n}" for n in range(ATTEMPTS_PER_IP + 2)])
        assert codes == [401] * ATTEMPTS_PER_IP + [429, 429]
        assert await audited_ips(live) == {"127.0.0.1"}  # the peer, not what the header claimed


async def test_a_proxy_elsewhere_does_not_make_loopback_trusted(tmp_path: Path) -> None:
    async with served(tmp_path, forwarded_allow_ips=["10.1.2.3", "192.168.0.0/16"]) as live:
        codes = await attempts(live, [f"203.0.113.{n}" for n in range(ATTEMPTS_PER_IP + 1)])
        assert codes == [401] * ATTEMPTS_PER_IP + [429]


async def test_a_configured_proxy_names_the_client(tmp_path: Path) -> None:
    async with served(tmp_path, forwarded_allow_ips=["127.0.0.1"]) as live:
        clients = [f"203.0.113.{n}" for n in range(ATTEMPTS_PER_IP + 2)]
        assert await attempts(live, clients) == [401] * len(clients)  # each client has its own budget
        assert await audited_ips(live) == set(clients)
        # and one client behind the proxy is throttled, whatever it prepends to the header
        codes = await attempts(live, [f"198.51.100.{n}, 192.0.2.9" for n in range(ATTEMPTS_PER_IP + 1)])
        assert codes == [401] * ATTEMPTS_PER_IP + [429]
