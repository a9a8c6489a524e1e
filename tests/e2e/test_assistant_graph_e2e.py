"""One grounded answer end to end through the assistant graph, on the real server process with the real
local model (0.5B) and ONNX embeddings: ``POST /api/v1/chat/ask`` streamed with ``steps: true`` walks
retrieve -> classify -> answer -> validate -> finish, streams the answer, cites the right document and
stores exactly what it streamed."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

DOC = ("# Zephyr service\n\n## Network\n\nThe Zephyr service listens on TCP port 7421. Clients must connect "
       "with TLS.\n")


def test_a_grounded_answer_through_the_assistant_graph(serve: ServerProcess) -> None:
    serve.wait_ready()
    with serve.client() as client:
        job = client.post("/api/v1/documents", data={"collection": "ops"},
                          files=[("files", ("zephyr.md", DOC.encode(), "text/markdown"))]).json()
        for _ in range(600):
            state = client.get(f"/api/v1/jobs/{job['job_id']}").json()
            if state["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.2)
        assert state["status"] == "succeeded", state
        events = []
        with client.stream("POST", "/api/v1/chat/ask", json={
                "message": "Which TCP port does the Zephyr service listen on?", "collection": "ops",
                "stream": True, "steps": True}) as response:
            assert response.status_code == 200
            name = None
            for line in response.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:") and name:
                    events.append((name, json.loads(line[5:])))
        names = [n for n, _ in events]
        assert names[0] == "meta" and names[-1] == "done", names
        steps = [data["node"] for n, data in events if n == "step"]
        assert steps[:3] == ["retrieve", "classify", "answer"] and steps[-2:] == ["validate", "finish"], steps
        assert all(data["status"] == "ok" for n, data in events if n == "step")
        done = events[-1][1]
        assert "7421" in done["answer"], done
        cut = max((i for i, n in enumerate(names) if n == "discard"), default=-1)
        assert "".join(d["text"] for n, d in events[cut + 1:] if n == "token") == done["answer"]
        sources = next(d["sources"] for n, d in events if n == "sources")
        assert any(s["cited"] and s["source"] == "zephyr.md" for s in sources), sources
        assert done["model"] == "qwen2.5-coder-0.5b" and done["usage"]["completion_tokens"] > 0
        stored = client.get(f"/api/v1/conversations/{done['conversation_id']}/messages").json()["messages"]
        assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "complete")]
        assert stored[1]["content"] == done["answer"]
