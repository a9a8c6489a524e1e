"""The ``project`` guided flow end to end as a user runs it: the real ``atrium serve`` process, the real
0.5B local model proposing the project's type from its description (whatever it answers, the proposals
are valid types: the model's when usable, else the keyword rule's), the record created and readable."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from atrium.agents.ports import PROJECT_KINDS
from tests.e2e.conftest import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def _answer(client: httpx.Client, flow_id: str, answer: Any) -> dict[str, Any]:
    response = client.post(f"/api/v1/flows/{flow_id}/answer", json={"answer": answer})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_the_project_flow_on_the_local_model(serve: ServerProcess) -> None:
    serve.wait_ready()
    with serve.client() as client:
        started = client.post("/api/v1/flows/project")
        assert started.status_code == 201, started.text
        flow_id = started.json()["id"]
        assert _answer(client, flow_id, "x" * 101)["prompt"]["error"]  # re-prompted, not advanced
        _answer(client, flow_id, "Lyra release train")
        kind = _answer(client, flow_id, "Build the backend API and the mobile app for the Lyra release, "
                                        "with automated deploys.")
        suggestions = kind["prompt"]["suggestions"]
        assert kind["prompt"]["step"] == "kind" and 1 <= len(suggestions) <= 3, kind
        assert set(suggestions) <= set(PROJECT_KINDS) and len(set(suggestions)) == len(suggestions)
        _answer(client, flow_id, suggestions[0])
        _answer(client, flow_id, "private")
        done = _answer(client, flow_id, "yes")
        assert done["status"] == "done" and done["result"]["kind"] == suggestions[0], done
        project = client.get(f"/api/v1/projects/{done['result']['project_id']}")
        assert project.status_code == 200 and project.json()["title"] == "Lyra release train"
