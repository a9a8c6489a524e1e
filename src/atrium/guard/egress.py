"""The egress guard: which addresses an outbound request to a user-given URL may reach (SSRF protection).

Every fetch of a URL a user gave (a page to ingest, a push endpoint) goes through :class:`EgressGuard`:
the URL must be ``http``/``https`` with a host and no credentials, its host is resolved **once** by the
injected :class:`Resolver`, every answer is checked, and the connection is then made to that checked address
(``atrium.guard.egress_transport``), so a name that answers a public address to the check and a private one to
the connection (DNS rebinding) cannot get through. Each redirect hop is a new request, checked the same way.

Refused unless allowed in config: private (RFC 1918, ULA), loopback, link-local, CGNAT (100.64/10), and every
other non-global range; IPv4-mapped, NAT64 and 6to4 IPv6 addresses are judged by the IPv4 address they carry.
Always refused: unspecified and multicast addresses, and the cloud metadata addresses (unless their exact
network is listed in ``allow_cidrs``). Refusals never name the resolved address (it may be internal).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Protocol

import httpx
from pydantic import BaseModel, Field

from atrium.errors import AppError, InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

INVALID_URL = "invalid_url"
URL_NOT_ALLOWED = "url_not_allowed"
FETCH_FAILED = "fetch_failed"
# Instance metadata services of the clouds (AWS/GCP/Azure/OpenStack, AWS ECS, Alibaba, Oracle, AWS IPv6).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "192.0.0.192", "fd00:ec2::254"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_6TO4 = ipaddress.ip_network("2002::/16")


class EgressSettings(BaseModel):
    """The ``egress`` section: what outbound fetches of user-given URLs may reach.

    ``allow_private``: private, loopback, link-local and CGNAT addresses too (local development, tests).
    ``allow_hosts``: host names (``wiki.internal``, or ``*.corp.example`` for its subdomains) whose addresses
    are all accepted. ``allow_cidrs``: networks always accepted (``10.1.0.0/16``; a metadata address only when
    listed here). Unspecified and multicast addresses are never reached."""

    allow_private: bool = False
    allow_hosts: list[str] = Field(default_factory=list, max_length=200)
    allow_cidrs: list[IPNetwork] = Field(default_factory=list, max_length=200)


class UrlNotAllowed(InvalidRequest):
    """The URL's host is, or resolves to, an address the egress policy refuses."""

    code = URL_NOT_ALLOWED


class InvalidUrl(InvalidRequest):
    code = INVALID_URL


class FetchFailed(AppError):
    """The URL could not be fetched (no such host, no connection, an error status, a timeout)."""

    status_code = 502
    code = FETCH_FAILED


class Resolver(Protocol):
    """Resolves a host name to its addresses (the port every lookup goes through, so tests inject answers)."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]: ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo`` on the event loop's executor)."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found: list[IPAddress] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if address not in found:
                found.append(address)
        return found


@dataclass(frozen=True, slots=True)
class Target:
    """A checked destination: the URL's host and port, and the addresses that may be connected to."""

    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv4-mapped, NAT64 or 6to4 IPv6 address carries; else ``address`` itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


class EgressGuard:
    """Checks URLs and addresses against the egress settings; resolves names through ``resolver``."""

    def __init__(self, settings: EgressSettings | None = None, resolver: Resolver | None = None) -> None:
        self.settings = settings or EgressSettings()
        self.resolver: Resolver = resolver or SystemResolver()
        self._hosts = {h.lower().rstrip(".") for h in self.settings.allow_hosts if not h.startswith("*.")}
        self._suffixes = tuple(h[1:].lower().rstrip(".") for h in self.settings.allow_hosts if h.startswith("*."))

    def with_private(self, allow_private: bool) -> EgressGuard:
        """The same guard (allow-lists, resolver) with ``allow_private`` set as given."""
        settings = self.settings.model_copy(update={"allow_private": allow_private})
        return EgressGuard(settings, self.resolver)

    def host_allowed(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        return name in self._hosts or any(name.endswith(suffix) for suffix in self._suffixes)

    def refusal(self, address: IPAddress, *, host_allowed: bool = False) -> str | None:
        """Why ``address`` may not be reached (a reason fit to show), or ``None`` when it may."""
        inner = embedded_ipv4(address)
        if any(address in network or inner in network for network in self.settings.allow_cidrs):
            return None
        if address in METADATA_ADDRESSES or inner in METADATA_ADDRESSES:
            return "a cloud metadata address"
        if inner.is_unspecified or inner.is_multicast or address.is_unspecified or address.is_multicast:
            return "an unspecified or multicast address"
        if host_allowed or self.settings.allow_private:
            return None
        # A wrapped IPv4 address (IPv4-mapped, NAT64, 6to4) is judged by the address it carries alone.
        if (not inner.is_global or inner.is_private or inner.is_loopback or inner.is_link_local
                or inner.is_reserved):
            return "a private, loopback, link-local or reserved address"
        return None

    def parse(self, url: str | httpx.URL) -> httpx.URL:
        """``url`` as an ``http``/``https`` URL with a host and no credentials, else ``InvalidUrl``."""
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise InvalidUrl("The URL is not valid.") from exc
        if parsed.scheme not in ("http", "https"):
            raise InvalidUrl("Only http and https URLs can be fetched.")
        if not parsed.host:
            raise InvalidUrl("The URL must name a host.")
        if parsed.userinfo:
            raise InvalidUrl("The URL must not carry credentials.")
        return parsed

    async def check(self, url: str | httpx.URL) -> Target:
        """Parse ``url``, resolve its host once and check every address; ``UrlNotAllowed`` when any is refused
        (the message names the host the caller gave, never the addresses it resolved to)."""
        parsed = self.parse(url)
        host = parsed.host
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = await self._resolve(host, port)
        allowed = self.host_allowed(host)
        for address in addresses:
            reason = self.refusal(address, host_allowed=allowed)
            if reason is not None:
                raise UrlNotAllowed(f"{host} may not be fetched: it is, or resolves to, {reason}.")
        return Target(host, port, tuple(addresses))

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            addresses = await self.resolver.resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise FetchFailed(f"{host} cannot be resolved.") from exc
        if not addresses:
            raise FetchFailed(f"{host} cannot be resolved.")
        return addresses
