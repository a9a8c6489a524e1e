"""``StoreArtifactSink``, the assistant's artifacts in the artifact store: every kind the graph writes (its
text form) is stored as the store's typed content and read back as the same text; the caller's
permissions hold (a viewer may not save, another member may not read a private one); the thread that
made an artifact is remembered, and erasing what the thread made removes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from atrium.accounts.principal import Principal
from atrium.agents.artifact_store import StoreArtifactSink
from atrium.agents.ports import ArtifactDraft
from atrium.errors import Forbidden
from tests.conftest import ADMIN_KEY, make_settings, run_app

DRAFTS = [
    ArtifactDraft("markdown", "Notes", "Meeting notes", "# Notes\n\n- refunds take 14 days"),
    ArtifactDraft("code", "Fib", "Fibonacci", "def fib(n):\n    return n", language="python"),
    ArtifactDraft("checklist", "Release", "", "- [ ] Run the tests\n- [x] Tag the version"),
    ArtifactDraft("table", "Team", "", "name,role\nAda,engineer\nGrace,manager"),
    ArtifactDraft("json", "Flags", "", '{\n  "beta": true\n}'),
]


async def test_every_kind_round_trips_as_the_caller(tmp_path: Path) -> None:
    async with run_app(make_settings(tmp_path / "data")) as app:
        services = app.services
        sink = StoreArtifactSink(services.artifacts)
        owner = await services.authenticator.authenticate(ADMIN_KEY)
        for draft in DRAFTS:
            stored = await sink.save(owner, draft, thread_id="thread-1")
            again = await sink.read(owner, stored.id)
            assert again is not None
            assert (again.kind, again.title, again.description, again.language) == (
                draft.kind, draft.title, draft.description, draft.language)
            assert again.content == draft.content
        listed = (await app.client.get("/api/v1/artifacts")).json()["artifacts"]
        assert sorted(a["kind"] for a in listed) == sorted(d.kind for d in DRAFTS)
        checklist = next(a for a in listed if a["kind"] == "checklist")
        shown = (await app.client.get(f"/api/v1/artifacts/{checklist['id']}")).json()
        assert shown["content"]["items"] == [{"text": "Run the tests", "done": False},
                                             {"text": "Tag the version", "done": True}]

        other = Principal(owner.org_id, "someone-else", "member")
        assert await sink.read(other, checklist["id"]) is None
        with pytest.raises(Forbidden):
            await sink.save(Principal(owner.org_id, owner.user_id, "viewer"), DRAFTS[0])
        assert await sink.read(owner, "no-such-artifact") is None

        assert await services.artifacts.erase_made_by(owner.org_id, agent_thread_id="thread-1") == len(DRAFTS)
        assert (await app.client.get("/api/v1/artifacts")).json()["artifacts"] == []
