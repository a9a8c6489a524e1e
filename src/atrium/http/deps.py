"""FastAPI dependencies as ``Annotated`` aliases: services, the caller's Principal, role checks, rate
limits."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request
from sqlalchemy import select

from atrium.accounts.principal import Principal, Role
from atrium.container import Services
from atrium.errors import Forbidden, NotReady, Unauthorized
from atrium.store.models import Organization


async def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise NotReady("Atrium is starting.")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_principal(request: Request) -> Principal:
    """The caller, from ``Authorization: Bearer <credential>`` (or ``X-API-Key``): an API key, an access
    token or an external IdP's token (see ``accounts/authenticate.py``). Takes the services itself rather
    than as a sub-dependency: FastAPI's dependency solving is a visible share of a gateway call."""
    services = await get_services(request)
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    raw = credential.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "").strip()
    return await principal_for(services, raw)


async def principal_for(services: Services, raw: str) -> Principal:
    """The caller ``raw`` (a credential, maybe empty) names; with none, the anonymous member when
    ``auth.allow_anonymous`` is on, else ``Unauthorized``. Shared by HTTP and the WebSocket (``/ws``)."""
    if not raw:
        if services.settings.auth.allow_anonymous:
            return await _anonymous(services)
        raise Unauthorized("Credentials are required: send 'Authorization: Bearer <API key or access token>'.")
    return await services.authenticator.authenticate(raw)


async def _anonymous(services: Services) -> Principal:
    """Local development only (``auth.allow_anonymous``): act as a member of the first organisation."""
    async with services.db.system_session() as session:
        org_id = await session.scalar(select(Organization.id).order_by(Organization.created_at).limit(1))
    if org_id is None:
        raise Unauthorized("No organisation exists yet.")
    return Principal(org_id=org_id, user_id=None, role="member", via="anonymous")


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_role(minimum: Role) -> Depends:  # type: ignore[valid-type]
    async def check(principal: PrincipalDep) -> None:
        if not principal.has_role(minimum):
            raise Forbidden(f"This needs the {minimum} role.")

    return Depends(check)


async def limit_rate(request: Request) -> Principal:
    """The caller, after counting this request against its rate limits (429 when over: requests per
    minute, or a spent tokens-per-minute window) and checking that none of its budgets is used up (402),
    before the endpoint does any work. The quota headers ride on the response via
    ``request.state.response_headers``."""
    principal = await get_principal(request)
    services = await get_services(request)
    headers = await services.rate_limiter.admit(principal)
    if headers:
        request.state.response_headers = headers
    await services.budgets.check(principal.org_id, principal.user_id, principal.api_key_id)
    return principal


# Use instead of PrincipalDep on endpoints that spend model or compute capacity.
LimitedPrincipalDep = Annotated[Principal, Depends(limit_rate)]


def client_ip(request: Request) -> str | None:
    """The peer address of the request (what audit rows record)."""
    return request.client.host if request.client is not None else None


ClientIp = Annotated[str | None, Depends(client_ip)]


# Ids in paths and list offsets, bounded so no request can carry an unbounded value into a query.
ResourceId = Annotated[str, Path(min_length=1, max_length=64)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
