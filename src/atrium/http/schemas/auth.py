"""Login, token refresh and the data rights of the caller (``/api/v1/auth``, ``/api/v1/me``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from atrium.accounts.principal import Role
from atrium.http.schemas.common import View

if TYPE_CHECKING:
    from atrium.accounts.login import TokenPair as IssuedTokens


class TokenPair(View):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires.")
    org_id: str
    role: Role

    @classmethod
    def of(cls, pair: IssuedTokens) -> TokenPair:
        return cls(access_token=pair.access_token, token_type="bearer", expires_in=pair.expires_in,
                   refresh_token=pair.refresh_token, refresh_expires_in=pair.refresh_expires_in,
                   org_id=pair.org_id, role=pair.role)


class RevokedSessions(View):
    revoked_sessions: int


class DataExport(View):
    """Everything Atrium holds about the calling user (``format: atrium.export.v1``)."""

    format: str
    user: dict[str, Any]
    memberships: list[dict[str, Any]]
    conversations: list[dict[str, Any]] = Field(description="Each with its `messages`.")
    queries: list[dict[str, Any]]
    documents: list[dict[str, Any]] = Field(description="Each with its `text`.")
    collections: list[dict[str, Any]]
    artifacts: list[dict[str, Any]] = Field([], description="Each with its `versions` (title, description, content).")
    notification_devices: list[dict[str, Any]] = Field([], description="Devices registered for notifications "
                                                                       "(kind, label; not their endpoints).")
    usage: list[dict[str, Any]] = Field(description="Calls, tokens and cost per organisation, model and "
                                                    "endpoint.")


class Erased(View):
    erased: dict[str, int] = Field(description="How many objects of each kind were erased.")
