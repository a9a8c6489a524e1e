"""The caller's own data rights: ``GET /api/v1/me/export`` (everything Atrium holds about the user, as
JSON) and ``DELETE /api/v1/me`` (erase the account and everything it owns, audited)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from atrium.http.deps import AccountsDep, ClientIp, PrincipalDep
from atrium.http.schemas.auth import DataExport, Erased
from atrium.http.schemas.errors import AUTHENTICATED, error_responses

router = APIRouter(prefix="/api/v1/me", tags=["me"], responses={**AUTHENTICATED, **error_responses(404)})


@router.get("/export", response_model=DataExport)
async def export_my_data(principal: PrincipalDep, accounts: AccountsDep) -> JSONResponse:
    """A download of the caller's account, memberships, conversations and messages, queries, documents
    uploaded (with their text), collections owned and usage. Needs a credential of a user."""
    body = await accounts.export(principal)
    return JSONResponse(body, headers={"Content-Disposition": 'attachment; filename="atrium-export.json"'})


@router.delete("", response_model=Erased, responses=error_responses(409))
async def erase_my_account(principal: PrincipalDep, accounts: AccountsDep, ip: ClientIp) -> Erased:
    """Erase the caller's account and everything it owns in every organisation (documents and their vectors
    too); usage rows stay for the organisations' bills, without the user. Needs the user's own login (an
    access token); ``409`` while the user is the last owner of an organisation."""
    return Erased(erased=await accounts.erase(principal, ip=ip))
