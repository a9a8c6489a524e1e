"""Who a socket is, as presence shows it: an id (the user; ``key:<id>`` for a key that acts as no user;
``anonymous``) and a display name (the user's name, else the part of the email before ``@``; the key's name)."""

from __future__ import annotations

from sqlalchemy import select

from atrium.accounts.ownership import owner_of
from atrium.accounts.principal import Principal
from atrium.store.engine import Database
from atrium.store.models import ApiKey, User


async def presence_of(db: Database, principal: Principal) -> tuple[str, str]:
    if principal.user_id is not None:
        async with db.system_session() as session:  # users are not tenant rows (a user may be in many orgs)
            row = (await session.execute(select(User.name, User.email).where(User.id == principal.user_id))).first()
        name = (row.name or row.email.split("@")[0]) if row is not None else ""
        return principal.user_id, name
    if principal.api_key_id is not None:
        async with db.tenant_session(principal.org_id) as session:
            key_name = await session.scalar(select(ApiKey.name).where(ApiKey.org_id == principal.org_id,
                                                                      ApiKey.id == principal.api_key_id))
        return f"key:{principal.api_key_id}", key_name or "API key"
    owner = owner_of(principal)
    return str(owner.api_key_id), str(owner.api_key_id)
