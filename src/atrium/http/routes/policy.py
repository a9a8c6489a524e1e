"""``GET|PUT /api/v1/admin/policy``: the caller's organisation's guard policy (admins).

The policy is an organisation-wide setting: any admin may read it (a division admin's calls are governed
by it too), only an organisation-wide one (not scoped to a division) may change it (``forbidden``).

``GET`` answers the effective policy, the organisation's stored overrides and the configured policy they
apply to. ``PUT`` replaces the stored overrides (only the keys given differ from the configured policy;
``{}`` goes back to it), audited as ``policy.update`` with the old and new overrides; every replica
applies the change within moments (PubSub ``policy.changed``, else the cache TTL).
"""

from __future__ import annotations

from fastapi import APIRouter

from atrium.errors import Forbidden, InvalidRequest, NotReady
from atrium.guard.policy import Guard, PolicyOverride
from atrium.http.deps import ClientIp, GuardDep, PrincipalDep, require_role
from atrium.http.schemas.errors import AUTHENTICATED, BODY
from atrium.http.schemas.policy import PolicyView

# 503 too when the guard is not configured.
router = APIRouter(prefix="/api/v1/admin/policy", tags=["admin"], dependencies=[require_role("admin")],
                   responses=AUTHENTICATED)


def _configured(guard: Guard | None) -> Guard:
    if guard is None:
        raise NotReady("The guard is not configured.")
    return guard


async def _view(guard: Guard, org_id: str) -> PolicyView:
    stored = await guard.policies.stored(org_id)
    guard.policies.forget(org_id)  # answer what the database holds now, not a cached copy
    return PolicyView.of(org_id, enabled=guard.enabled, policy=await guard.policies.for_org(org_id),
                         overrides=stored, configured=guard.policies.configured(org_id))


@router.get("", response_model=PolicyView)
async def get_policy(principal: PrincipalDep, guard: GuardDep) -> PolicyView:
    return await _view(_configured(guard), principal.org_id)


@router.put("", response_model=PolicyView, responses=BODY)
async def put_policy(body: PolicyOverride, ip: ClientIp, principal: PrincipalDep, guard: GuardDep) -> PolicyView:
    if principal.division_id is not None:
        raise Forbidden("The guard policy is an organisation-wide setting: a division-scoped credential "
                        "cannot change it.")
    configured = _configured(guard)
    try:
        await configured.policies.replace(principal.org_id, body, actor=principal, ip=ip)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid policy: {exc}") from None
    return await _view(configured, principal.org_id)
