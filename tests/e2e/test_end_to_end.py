"""The whole product as a user runs it: the real server process, real ONNX embeddings, the real 0.5B
local model. Ingest a small document set with the CLI while the server runs, ask, check the answer cites
the right document; stream an answer over SSE; check the demo collection and the printed admin key."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY
from tests.e2e.conftest import ServerProcess, atrium_bin

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

DOCS = {
    "zephyr.md": "# Zephyr service\n\n## Network\n\nThe Zephyr service listens on TCP port 7421. Clients must "
                 "connect with TLS.\n",
    "orion.md": "# Orion backups\n\n## Schedule\n\nOrion backups run every night at 02:00 UTC and are kept for "
                "35 days.\n",
    "lyra.md": "# Lyra mobile app\n\n## Releases\n\nThe Lyra mobile app ships a new release every second "
               "Tuesday.\n",
}


def write_docs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in DOCS.items():
        (folder / name).write_text(body)
    return folder


def test_ingest_ask_and_cite_the_right_source(serve: ServerProcess, tmp_path: Path) -> None:
    serve.wait_ready()
    docs = write_docs(tmp_path / "docs")
    result = subprocess.run([atrium_bin(), "ingest", str(docs), "--collection", "ops"], env=serve.env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "3 documents" in result.stderr
    with serve.client() as client:
        for _ in range(100):  # the server picks up the CLI's ingestion through reconciliation
            hits = client.post("/api/v1/search/semantic", json={"query": "Zephyr port", "collection": "ops",
                                                                "mode": "vector"}).json()
            if {hit["source"] for hit in hits["results"]} == set(DOCS):
                break
            time.sleep(0.2)
        hits = client.post("/api/v1/search/semantic", json={"query": "Zephyr port", "collection": "ops"}).json()
        assert hits["results"][0]["source"] == "zephyr.md"
        response = client.post("/api/v1/chat/ask", json={"message": "Which TCP port does the Zephyr service "
                                                         "listen on?", "collection": "ops"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert "7421" in body["answer"]
        cited = {source["source"] for source in body["sources"] if source["cited"]}
        assert "zephyr.md" in cited, body
        assert body["model"] == "qwen2.5-coder-0.5b"
        assert body["usage"]["completion_tokens"] > 0 and body["usage"]["prompt_tokens"] > 0
        stored = client.get(f"/api/v1/conversations/{body['conversation_id']}/messages").json()["messages"]
        assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "complete")]
        assert stored[1]["content"] == body["answer"]


def test_streamed_answer_over_sse_ends_with_done(serve: ServerProcess) -> None:
    serve.wait_ready()
    with serve.client() as client, client.stream(
        "POST", "/api/v1/chat/ask", json={"message": "How do I add an OpenAI provider?", "stream": True,
                                          "collection": "atrium-docs"}) as response:
        events = []
        name = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:") and name:
                events.append((name, json.loads(line[5:])))
    names = [n for n, _ in events]
    assert names[0] == "meta" and names[-1] == "done", names
    assert names.count("token") >= 3
    sources = next(data for n, data in events if n == "sources")["sources"]
    assert any(s["source"] == "configuration.md" for s in sources), sources


def test_first_start_prints_the_admin_key_once_without_a_preset(tmp_path: Path, model_cache: Path) -> None:
    from tests.e2e.conftest import start_server

    server = start_server(tmp_path / "fresh", model_cache, ATRIUM_BOOTSTRAP_ADMIN_KEY="",
                          ATRIUM_CHAT__PROVIDER="fake")
    try:
        server.wait_ready()
        output = server.log.read_text()
        keys = [word for word in output.split() if word.startswith("atr_")]
        assert len(keys) == 1 and keys[0] != ADMIN_KEY
        import httpx

        ok = httpx.post(f"{server.url}/api/v1/search/semantic", json={"query": "configuration"},
                        headers={"Authorization": f"Bearer {keys[0]}"})
        assert ok.status_code == 200 and ok.json()["results"], "the demo docs are searchable"
    finally:
        server.stop()
    assert keys[0] not in (tmp_path / "fresh" / "atrium.db").read_bytes().decode("latin-1")
