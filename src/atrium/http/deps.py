"""FastAPI dependencies as ``Annotated`` aliases: the caller's Principal, role checks, rate limits, and
the one service each route needs.

A route takes only what it uses (``DatabaseDep``, ``KnowledgeDep``, ``AccountsDep``...), each a cheap
``async`` function returning one part of ``app.state.services`` (a plain function would be run in a thread
pool). ``ServicesDep``, the whole container, is for the routes that still need several parts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Query, Request

from atrium.accounts.bootstrap import anonymous_member
from atrium.accounts.login import SessionService
from atrium.accounts.principal import Principal, Role
from atrium.accounts.service import Accounts
from atrium.agents.flows.service import FlowService
from atrium.agents.projects import SqlProjectRecords
from atrium.agents.service import Agents
from atrium.analytics.service import UsageAnalytics
from atrium.container import Services
from atrium.conversations.artifacts.service import ArtifactService
from atrium.conversations.chat import ChatService
from atrium.conversations.erasure import ConversationErasure
from atrium.conversations.queries import QueryService
from atrium.conversations.replay import AnswerStreams
from atrium.errors import Forbidden, NotReady, Unauthorized
from atrium.gateway.service import Gateway
from atrium.guard.budgets.admin import BudgetAdmin
from atrium.guard.policy import Guard
from atrium.http.settings import LimitSettings
from atrium.jobs.queue import DatabaseJobQueue
from atrium.knowledge.service import KnowledgeService
from atrium.notifications.service import NotificationService
from atrium.settings import Settings
from atrium.store.engine import Database
from atrium.store.objects.ports import ObjectStore
from atrium.telemetry.metrics import Metrics
from atrium.webhooks.registry import WebhookRegistry

T = TypeVar("T")


def services_of(request: Request) -> Services:
    """The container the lifespan built; ``NotReady`` (503) until it has."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise NotReady("Atrium is starting.")
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]


def _part(pick: Callable[[Services], T]) -> Any:
    """A dependency answering ``pick(services)``; ``async`` so that FastAPI calls it inline."""

    async def dependency(request: Request) -> T:
        return pick(services_of(request))

    return Depends(dependency)


SettingsDep = Annotated[Settings, _part(lambda services: services.settings)]
DatabaseDep = Annotated[Database, _part(lambda services: services.db)]
KnowledgeDep = Annotated[KnowledgeService, _part(lambda services: services.knowledge)]
AccountsDep = Annotated[Accounts, _part(lambda services: services.accounts)]
SessionsDep = Annotated[SessionService, _part(lambda services: services.sessions)]
GatewayDep = Annotated[Gateway, _part(lambda services: services.gateway)]
LimitsDep = Annotated[LimitSettings, _part(lambda services: services.settings.limits)]
ChatDep = Annotated[ChatService, _part(lambda services: services.chat)]
QueriesDep = Annotated[QueryService, _part(lambda services: services.queries)]
ArtifactsDep = Annotated[ArtifactService, _part(lambda services: services.artifacts)]
StreamsDep = Annotated[AnswerStreams, _part(lambda services: services.streams)]
MetricsDep = Annotated[Metrics, _part(lambda services: services.metrics)]
JobsDep = Annotated[DatabaseJobQueue, _part(lambda services: services.jobs)]
ObjectStoreDep = Annotated[ObjectStore, _part(lambda services: services.objects)]
WebhooksDep = Annotated[WebhookRegistry, _part(lambda services: services.webhooks.registry)]
AgentsDep = Annotated[Agents, _part(lambda services: services.agents)]
ErasureDep = Annotated[ConversationErasure, _part(lambda services: services.erasure)]
ProjectsDep = Annotated[SqlProjectRecords, _part(lambda services: SqlProjectRecords(services.db))]


async def _flows(request: Request) -> FlowService:
    flows = services_of(request).agents.flows
    if flows is None:
        raise NotReady("Guided flows are not configured.")
    return flows


FlowsDep = Annotated[FlowService, Depends(_flows)]
NotificationServiceDep = Annotated[NotificationService, _part(lambda services: services.notifications)]
GuardDep = Annotated[Guard | None, _part(lambda services: services.guard)]  # None: the guard is not configured
# A use case of the budgets guard, made per request (no I/O).
BudgetAdminDep = Annotated[BudgetAdmin, _part(lambda services: BudgetAdmin(services.db, services.budgets))]
AnalyticsDep = Annotated[UsageAnalytics, _part(lambda services: UsageAnalytics(services.db, services.accounts))]


async def get_principal(request: Request) -> Principal:
    """The caller, from ``Authorization: Bearer <credential>`` (or ``X-API-Key``): an API key, an access
    token or an external IdP's token (see ``accounts/authenticate.py``). Takes the services itself rather
    than as a sub-dependency: FastAPI's dependency solving is a visible share of a gateway call."""
    services = services_of(request)
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    raw = credential.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "").strip()
    return await principal_for(services, raw)


async def principal_for(services: Services, raw: str) -> Principal:
    """The caller ``raw`` (a credential, maybe empty) names; with none, the anonymous member when
    ``auth.allow_anonymous`` is on, else ``Unauthorized``. Shared by HTTP and the WebSocket (``/ws``)."""
    if not raw:
        if services.settings.auth.allow_anonymous:
            return await anonymous_member(services.db)
        raise Unauthorized("Credentials are required: send 'Authorization: Bearer <API key or access token>'.")
    return await services.authenticator.authenticate(raw)


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
    services = services_of(request)
    headers = await services.rate_limiter.admit(principal)
    if headers:
        request.state.response_headers = headers
    await services.budgets.check(principal.org_id, principal.user_id, principal.api_key_id)
    return principal


# Use instead of PrincipalDep on endpoints that spend model or compute capacity.
LimitedPrincipalDep = Annotated[Principal, Depends(limit_rate)]


async def count_request(request: Request) -> Principal:
    """The caller, after counting this request against its requests per minute (429 when over), with no
    budget check: for reads that hold a connection or scan a log (a resumed answer stream, a joined run,
    the sync feed), which a client may repeat in a loop but which spend no model capacity."""
    principal = await get_principal(request)
    headers = await services_of(request).rate_limiter.admit(principal)
    if headers:
        request.state.response_headers = headers
    return principal


CountedPrincipalDep = Annotated[Principal, Depends(count_request)]


async def client_ip(request: Request) -> str | None:
    """The peer address of the request (what audit rows record)."""
    return request.client.host if request.client is not None else None


ClientIp = Annotated[str | None, Depends(client_ip)]


# Ids in paths and list offsets, bounded so no request can carry an unbounded value into a query.
ResourceId = Annotated[str, Path(min_length=1, max_length=64)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
