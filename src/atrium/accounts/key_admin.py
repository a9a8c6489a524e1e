"""API keys as administered by an organisation: create, list, revoke and rotate, within the rules of
``atrium.accounts.admin`` (no key above the actor's role or its user's; a division-scoped actor keeps to its
division). ``AccountAdmin`` brings these together with the other account use cases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from atrium.accounts import api_keys
from atrium.accounts.admin_base import (
    MAX_KEY_LIFETIME,
    AdminBase,
    CreatedKey,
    KeySpec,
    Page,
    aware,
    lower_role,
    paged,
    rank,
)
from atrium.accounts.principal import Role
from atrium.errors import Conflict, Forbidden, InvalidRequest, NotFound
from atrium.store.models import ApiKey, UsageRecord, utcnow


class KeyAdmin(AdminBase):
    """The API-key use cases; every change is audited and every revoked key collected in ``stale_keys``."""

    async def create_key(self, org_id: str, spec: KeySpec) -> CreatedKey:
        """A key for a user of this organisation (default: the actor), with a role no higher than the
        actor's or the user's (default: the user's role, capped by the actor's; ``member`` for a key
        without a user), scoped to the user's division if they have one."""
        self._tenant(org_id)
        target = spec.user_id if spec.user_id is not None else self.actor.user_id
        member = None
        if target is not None:
            member = await self._member(org_id, target)
            if spec.service_account and not member.user.is_service:
                raise NotFound("No such service account.")
            if member.user.disabled_at is not None:
                raise Conflict("The user is disabled.")
            if target != self.actor.user_id:
                self._may_change(member)
        role: Role = spec.role or (lower_role(member.membership.role, self.actor.role) if member else "member")
        if rank(role) > rank(self.actor.role):
            raise Forbidden(f"A key cannot have a role above yours ({self.actor.role}).")
        if member is not None and rank(role) > rank(member.membership.role):
            raise InvalidRequest(f"role: the user is a {member.membership.role}; their key cannot rank higher.")
        division_id = self._division_for(spec.division_id)
        if member is not None and member.membership.division_id is not None:
            if division_id not in (None, member.membership.division_id):
                raise InvalidRequest("division_id: the user belongs to another division.")
            division_id = member.membership.division_id
        if division_id is not None:
            await self._division(org_id, division_id)
        if spec.expires_at is not None:
            expires_at = aware(spec.expires_at)
            if expires_at <= utcnow():
                raise InvalidRequest("expires_at: must be in the future.")
            if expires_at > utcnow() + MAX_KEY_LIFETIME:
                raise InvalidRequest("expires_at: at most ten years ahead.")
        return await self._store_key(org_id, spec, target, role, division_id)

    async def _store_key(self, org_id: str, spec: KeySpec, user_id: str | None, role: Role,
                         division_id: str | None, *, action: str = "key.create", **details: Any) -> CreatedKey:
        row, raw = await api_keys.create_key(self.session, org_id=org_id, user_id=user_id, role=role,
                                             name=spec.name)
        row.division_id = division_id
        row.expires_at = spec.expires_at
        row.requests_per_minute = spec.requests_per_minute
        row.tokens_per_minute = spec.tokens_per_minute
        await self.session.flush()
        # The audit scrubber masks anything shaped like a key, prefix included: store what follows "atr_".
        await self._audit(action, org_id, target_type="api_key", target_id=row.id,
                          prefix=row.prefix.removeprefix(api_keys.KEY_PREFIX), name=spec.name, role=role,
                          user_id=user_id, division_id=division_id,
                          expires_at=aware(spec.expires_at).isoformat() if spec.expires_at else None, **details)
        return CreatedKey(row, raw)

    async def list_keys(self, org_id: str, *, include_revoked: bool, limit: int,
                        offset: int) -> Page[tuple[ApiKey, datetime | None]]:
        """Keys, newest first, each with when it last paid for a model call (from the usage records)."""
        self._tenant(org_id)
        query = select(ApiKey).where(ApiKey.org_id == org_id).order_by(ApiKey.created_at.desc(), ApiKey.id)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        if self.actor.division_id is not None:
            query = query.where(ApiKey.division_id == self.actor.division_id)
        page = await paged(self.session, query, limit, offset)
        used: dict[str | None, datetime] = {}
        if page.items:
            used = {key_id: moment for key_id, moment in (await self.session.execute(
                select(UsageRecord.api_key_id, func.max(UsageRecord.created_at))
                .where(UsageRecord.org_id == org_id, UsageRecord.api_key_id.in_([k.id for k in page.items]))
                .group_by(UsageRecord.api_key_id))).all()}
        return Page([(key, used.get(key.id)) for key in page.items], page.next_offset)

    async def revoke_key(self, org_id: str, key_id: str) -> ApiKey:
        """Revoke a key (idempotent: revoking a revoked key changes nothing and audits nothing)."""
        self._tenant(org_id)
        key = await self._key(org_id, key_id)
        self._may_manage_key(key)
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            self.stale_keys.append(key.id)
            await self._audit("key.revoke", org_id, target_type="api_key", target_id=key.id,
                              prefix=key.prefix.removeprefix(api_keys.KEY_PREFIX), name=key.name)
        return key

    async def rotate_key(self, org_id: str, key_id: str) -> CreatedKey:
        """Revoke a live key and issue a new one with its settings (name, role, user, division, limits,
        and the same lifetime, counted from now)."""
        self._tenant(org_id)
        old = await self._key(org_id, key_id)
        self._may_manage_key(old)
        if old.revoked_at is not None:
            raise Conflict("The key is revoked; create a new one instead.")
        role = lower_role(old.role, old.role)
        if old.user_id is not None:
            member = await self._member(org_id, old.user_id)
            if member.user.disabled_at is not None:
                raise Conflict("The key's user is disabled.")
            role = lower_role(old.role, member.membership.role)
        expires_at = None
        if old.expires_at is not None:
            expires_at = utcnow() + (aware(old.expires_at) - aware(old.created_at))
        old.revoked_at = utcnow()
        self.stale_keys.append(old.id)
        spec = KeySpec(name=old.name, expires_at=expires_at, requests_per_minute=old.requests_per_minute,
                       tokens_per_minute=old.tokens_per_minute)
        return await self._store_key(org_id, spec, old.user_id, role, old.division_id, action="key.rotate",
                                     replaces=old.id, old_prefix=old.prefix.removeprefix(api_keys.KEY_PREFIX))

    def _may_manage_key(self, key: ApiKey) -> None:
        if rank(key.role) > rank(self.actor.role):
            raise Forbidden(f"This key's role ({key.role}) is above yours.")
