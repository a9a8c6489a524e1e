"""``GET /api/v1/sync?cursor=``: every change of the caller's conversations and messages since the cursor,
for offline web and mobile clients (``conversations/changes.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from atrium.conversations import changes
from atrium.http.deps import CountedPrincipalDep, DatabaseDep
from atrium.http.schemas.errors import AUTHENTICATED, COUNTED
from atrium.http.schemas.sync import SyncResponse

router = APIRouter(prefix="/api/v1/sync", tags=["conversations"], responses=AUTHENTICATED)


@router.get("", response_model=SyncResponse, responses=COUNTED)
async def sync(principal: CountedPrincipalDep, db: DatabaseDep,
               cursor: Annotated[str | None, Query(min_length=1, max_length=200, description=(
                   "The `next_cursor` of the last sync; none: from the beginning."))] = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 500) -> SyncResponse:
    """The changes since `cursor`: conversations and messages created, updated (a title, an answer that
    ended) or deleted, with the current state of each. Keep `next_cursor` for the next sync."""
    return SyncResponse.of(await changes.sync(db, principal, cursor, limit=limit))
