"""Who is calling: resolved once per request at the edge, then passed to every use case.

A Principal comes from an Atrium API key, an Atrium access token (JWT from ``/api/v1/auth/token``) or an
external identity provider's token; ``via`` says which. ``org_id`` is the tenant: every repository,
index, cache and checkpoint method takes it as a required argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["owner", "admin", "member", "viewer"]
ROLES: tuple[Role, ...] = ("viewer", "member", "admin", "owner")
ROLE_RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}
AuthMethod = Literal["api_key", "access_token", "external", "anonymous", "cli"]


@dataclass(frozen=True, slots=True)
class Principal:
    org_id: str
    user_id: str | None
    role: Role
    api_key_id: str | None = None
    division_id: str | None = None
    via: AuthMethod = "api_key"
    # The API key's own limits (None: only the user and org limits apply).
    key_requests_per_minute: int | None = None
    key_tokens_per_minute: int | None = None

    def has_role(self, minimum: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[minimum]
