"""The account use cases the HTTP edge calls, with what they need built once: administration
(``AccountAdmin``), answering invitations (``Invitee``), the platform admin check, and the caller's own
data rights (export, erase). Each opens its own transaction and announces what changed to every replica
once it has committed."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from atrium.accounts import data_rights
from atrium.accounts.admin import AccountAdmin, administer
from atrium.accounts.authenticate import Authenticator
from atrium.accounts.invitations import Invitee, answering
from atrium.accounts.passwords import Passwords
from atrium.accounts.principal import Principal
from atrium.knowledge.service import KnowledgeService
from atrium.store.engine import Database


class Accounts:
    def __init__(self, db: Database, authenticator: Authenticator, passwords: Passwords,
                 knowledge: KnowledgeService) -> None:
        self.db = db
        self.authenticator = authenticator
        self.passwords = passwords
        self.knowledge = knowledge
        self.erase_thread: data_rights.ThreadEraser | None = None  # set by the container once agents exist

    def administer(self, actor: Principal, *, ip: str | None = None) -> AbstractAsyncContextManager[AccountAdmin]:
        """``actor``'s ``AccountAdmin`` in a new transaction (see ``atrium.accounts.admin.administer``)."""
        return administer(self.db, self.authenticator, self.passwords, actor, ip=ip)

    def answering(self, actor: Principal, *, ip: str | None = None) -> AbstractAsyncContextManager[Invitee]:
        """The invited user's side in a new transaction (see ``atrium.accounts.invitations.answering``)."""
        return answering(self.db, self.authenticator, actor, ip=ip)

    async def is_platform_admin(self, actor: Principal) -> bool:
        async with self.administer(actor) as admin:
            return await admin.is_platform_admin()

    async def export(self, principal: Principal) -> dict[str, Any]:
        """Everything Atrium holds about the caller's user (``atrium.export.v1``)."""
        return await data_rights.export(self.db, principal)

    async def erase(self, principal: Principal, *, ip: str | None = None) -> dict[str, int]:
        """Erase the caller's account and everything it owns; every replica drops the user at once."""
        erased = await data_rights.erase(self.db, self.knowledge, principal, ip=ip, erase_thread=self.erase_thread)
        assert principal.user_id is not None
        await self.authenticator.announce_user_disabled(principal.user_id)
        return erased
