"""Password login and sessions: access tokens (JWT) with rotating refresh tokens. See docs/auth.md."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from atrium.accounts.passwords import MAX_PASSWORD_CHARS
from atrium.accounts.refresh import MAX_TOKEN_CHARS
from atrium.http.deps import ClientIp, PrincipalDep, SessionsDep
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


@router.post("/token", response_model=TokenPair, responses={**BODY, **error_responses(403)})
async def issue_token(body: TokenRequest, ip: ClientIp, sessions: SessionsDep) -> TokenPair:
    """Log in with email and password: an access token and a refresh token."""
    return TokenPair.of(await sessions.login(body.email, body.password, org_id=body.org_id, ip=ip))


@router.post("/refresh", response_model=TokenPair, responses=BODY)
async def refresh(body: RefreshRequest, ip: ClientIp, sessions: SessionsDep) -> TokenPair:
    """A new access token and a new refresh token; the one presented is used up."""
    return TokenPair.of(await sessions.refresh(body.refresh_token, ip=ip))


@router.post("/logout", status_code=204, responses=BODY)
async def logout(body: RefreshRequest, ip: ClientIp, sessions: SessionsDep) -> Response:
    """End the session (refresh-token family) the token belongs to. Answers 204 whether or not it existed."""
    await sessions.logout(body.refresh_token, ip=ip)
    return Response(status_code=204)


@router.post("/revoke", response_model=RevokedSessions, responses=error_responses(403))
async def revoke_all(principal: PrincipalDep, ip: ClientIp, sessions: SessionsDep) -> RevokedSessions:
    """Log the caller out everywhere: every refresh token of their user is revoked."""
    return RevokedSessions(revoked_sessions=await sessions.revoke_all(principal, ip=ip))
