"""The ``ArtifactSink`` of a running Atrium: the assistant's artifacts go to the artifact store proper
(``conversations/artifacts``: versions, search index, sharing), as the caller and with its permissions:
a viewer cannot save one, and ``read`` finds only what ``GET /api/v1/artifacts/{id}`` would show.

The graph speaks text (``ArtifactDraft.content``: Markdown, code, ``- [ ] item`` lines, CSV, JSON text);
the store keeps a JSON object per kind (``conversations/artifacts/content.py``). This adapter converts
both ways. An artifact saved from a run remembers its thread (``agent_thread_id``), so erasing the thread
erases it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from atrium.accounts.principal import Principal
from atrium.agents.ports import ArtifactDraft, StoredArtifact
from atrium.conversations.artifacts.content import body_text
from atrium.conversations.artifacts.service import ArtifactRecord, ArtifactService
from atrium.errors import NotFound

_ITEM = re.compile(r"^\s*[-*+]\s*\[(?P<mark>[ xX]?)\]\s*(?P<text>.*)$")


class StoreArtifactSink:
    """``ArtifactSink`` over ``ArtifactService`` (module doc)."""

    def __init__(self, service: ArtifactService) -> None:
        self.service = service

    async def save(self, principal: Principal, draft: ArtifactDraft, *,
                   thread_id: str | None = None) -> StoredArtifact:
        record = await self.service.create(principal, kind=draft.kind, title=draft.title,
                                           description=draft.description, content=store_content(draft),
                                           agent_thread_id=thread_id)
        return stored(record)

    async def read(self, principal: Principal, artifact_id: str) -> StoredArtifact | None:
        try:
            return stored(await self.service.get(principal, artifact_id))
        except NotFound:
            return None


def store_content(draft: ArtifactDraft) -> dict[str, Any]:
    """The draft's text as the store's content object for its kind."""
    if draft.kind == "code":
        return {"language": draft.language or "text", "code": draft.content}
    if draft.kind == "checklist":
        items = []
        for line in draft.content.splitlines():
            match = _ITEM.match(line)
            text = (match.group("text") if match else line).strip()
            if text:
                items.append({"text": text, "done": bool(match and match.group("mark").strip())})
        return {"items": items}
    if draft.kind == "table":
        rows = [row for row in csv.reader(io.StringIO(draft.content)) if row]
        return {"columns": rows[0] if rows else [], "rows": rows[1:]}
    if draft.kind == "json":
        return {"data": json.loads(draft.content)}
    return {"text": draft.content}


def stored(record: ArtifactRecord) -> StoredArtifact:
    artifact, version = record.artifact, record.version
    content = version.content
    text = body_text(artifact.kind, content).replace("\r\n", "\n")  # CSV's line ends as the graph writes them
    return StoredArtifact(id=artifact.id, org_id=artifact.org_id, kind=artifact.kind,  # type: ignore[arg-type]
                          title=version.title, description=version.description,
                          content=text.rstrip("\n"),
                          language=content.get("language") if artifact.kind == "code" else None,
                          user_id=artifact.user_id, api_key_id=artifact.api_key_id, version=version.number)
