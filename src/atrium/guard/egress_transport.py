"""An httpx transport that connects only where the egress guard allowed, to the address it checked.

For each request (each redirect hop is one) the URL's host is resolved once and checked by
:class:`~atrium.guard.egress.EgressGuard`; the request is then sent to that IP address, with the ``Host``
header kept and, for ``https``, the TLS server name (SNI) and certificate check done for the host name (the
``sni_hostname`` request extension of httpcore). Nothing resolves the name a second time, so DNS rebinding
between the check and the connection has nothing to act on.

Connections are not kept alive: the pool is keyed by address, and a connection verified for one host name
must not carry a request for another name served from the same address.
"""

from __future__ import annotations

import ipaddress
import ssl

import httpx

from atrium.guard.egress import EgressGuard


class PinnedTransport(httpx.AsyncBaseTransport):
    """Sends each request to the checked address of its host (trying each checked address in turn when one
    refuses the connection); an address the guard refuses raises ``UrlNotAllowed`` before any connection."""

    def __init__(self, guard: EgressGuard, *, verify: ssl.SSLContext | bool = True) -> None:
        self.guard = guard
        self._inner = httpx.AsyncHTTPTransport(verify=verify, trust_env=False,
                                               limits=httpx.Limits(max_keepalive_connections=0))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = await self.guard.check(request.url)
        host = request.url.host
        if "host" not in request.headers:
            request.headers["Host"] = request.url.netloc.decode("ascii")
        last_error: httpx.ConnectError | None = None
        original_url = request.url
        for address in target.addresses:
            request.url = original_url.copy_with(host=str(address))
            if original_url.scheme == "https" and not _is_literal(host):
                request.extensions = {**request.extensions, "sni_hostname": host}
            try:
                response = await self._inner.handle_async_request(request)
            except httpx.ConnectError as exc:
                last_error = exc
                continue
            finally:
                request.url = original_url  # what httpx reports and builds redirects from
            return response
        assert last_error is not None
        raise last_error

    async def aclose(self) -> None:
        await self._inner.aclose()


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def guarded_client(guard: EgressGuard, *, timeout: httpx.Timeout | float = 20.0, max_redirects: int = 5,
                   user_agent: str | None = None, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """An httpx client for user-given URLs: every request and every redirect hop checked and pinned by
    ``guard``; no proxy or cookie from the environment. Build one per process and close it at shutdown."""
    headers = {"User-Agent": user_agent} if user_agent else None
    return httpx.AsyncClient(transport=PinnedTransport(guard, verify=verify), timeout=timeout,
                             follow_redirects=True, max_redirects=max_redirects, trust_env=False, headers=headers)
