"""Password login and sessions: access tokens (JWT) with rotating refresh tokens. See docs/auth.md."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from atrium.accounts.passwords import MAX_PASSWORD_CHARS
from atrium.accounts.refresh import MAX_TOKEN_CHARS
from atrium.http.deps import PrincipalDep, ServicesDep
from atrium.http.schemas.auth import RevokedSessions, TokenPair
from atrium.http.schemas.errors import BODY, error_responses

# No credential needed but for /revoke; a refused login or token is a 401, too many attempts a 429.
router = APIRouter(prefix="/api/v1/auth", tags=["auth"], responses=error_responses(401, 422, 429, 503))


class TokenRequest(BaseModel):
    model_config = {"extra": "forbid"}

    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)
    org_id: str | None = Field(None, min_length=1, max_length=64)


class RefreshRequest(BaseModel):
    model_config = {"extra": "forbid"}

    refresh_token: str = Field(min_length=1, max_length=MAX_TOKEN_CHARS)


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


@router.post("/token", response_model=TokenPair, responses={**BODY, **error_responses(403)})
async def issue_token(body: TokenRequest, request: Request, services: ServicesDep) -> dict[str, Any]:
    """Log in with email and password: an access token and a refresh token."""
    pair = await services.sessions.login(body.email, body.password, org_id=body.org_id, ip=_client_ip(request))
    return pair.as_response()


@router.post("/refresh", response_model=TokenPair, responses=BODY)
async def refresh(body: RefreshRequest, request: Request, services: ServicesDep) -> dict[str, Any]:
    """A new access token and a new refresh token; the one presented is used up."""
    pair = await services.sessions.refresh(body.refresh_token, ip=_client_ip(request))
    return pair.as_response()


@router.post("/logout", status_code=204, responses=BODY)
async def logout(body: RefreshRequest, request: Request, services: ServicesDep) -> Response:
    """End the session (refresh-token family) the token belongs to. Answers 204 whether or not it existed."""
    await services.sessions.logout(body.refresh_token, ip=_client_ip(request))
    return Response(status_code=204)


@router.post("/revoke", response_model=RevokedSessions, responses=error_responses(403))
async def revoke_all(principal: PrincipalDep, request: Request, services: ServicesDep) -> dict[str, Any]:
    """Log the caller out everywhere: every refresh token of their user is revoked."""
    count = await services.sessions.revoke_all(principal, ip=_client_ip(request))
    return {"revoked_sessions": count}
