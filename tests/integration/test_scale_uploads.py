"""The scale profile end to end, across processes: an API process (PostgreSQL with procrastinate, Redis, the
S3 object store on moto's server) that runs no job, and an ``atrium worker`` process with its own empty data
dir, given the store through the environment (the standard ``AWS_*`` credential variables). An upload through
the API lands in the bucket; the worker reads it from there, ingests it, and reports the end: the signed
webhook is sent by the worker process (verified with ``standardwebhooks``), the ``job`` event reaches a
WebSocket on the API process (through Redis), and the upload's objects are deleted. The secret key never
appears in the worker's log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook as Verifier

from atrium.app import create_app
from atrium.gateway.providers.fake import FakeChatModel
from atrium.store.objects.settings import ObjectStoreSettings
from tests.api.helpers import DOCS, upload, wait_job
from tests.api.test_ws_api import AUTH, ready, socket
from tests.api.test_ws_realtime import next_of
from tests.conftest import LiveServer, free_port, make_settings
from tests.postgres_fixtures import PostgresServer
from tests.s3_fixtures import S3_ACCESS_KEY, S3_SECRET_KEY, bucket_keys
from tests.tenancy_helpers import database_with_app_role
from tests.webhook_receiver import WebhookReceiver
from tests.worker_harness import Profile, start_worker, stop_worker, wait_ready

pytestmark = pytest.mark.integration

HOOKS = {"allow_http": True, "allow_private": True, "initial_backoff_s": 0.05}


async def test_an_upload_runs_on_a_worker_process_from_the_s3_store(
        tmp_path: Path, postgres: PostgresServer, redis_url: str, s3_endpoint: str,
        s3_settings: ObjectStoreSettings) -> None:
    bucket = s3_settings.bucket
    assert bucket is not None
    urls = await database_with_app_role(postgres)
    settings = await asyncio.to_thread(
        make_settings, tmp_path / "api", database_url=urls.app_url, migration_database_url=urls.owner_url,
        redis_url=redis_url, object_store=s3_settings, webhooks=HOOKS,
        jobs={"engine": "procrastinate", "run_in_api": False})
    worker_profile = Profile("procrastinate", tmp_path / "worker", urls.app_url, urls.owner_url)
    worker_env = {"ATRIUM_REDIS_URL": redis_url, "ATRIUM_OBJECT_STORE__BACKEND": "s3",
                  "ATRIUM_OBJECT_STORE__BUCKET": bucket, "ATRIUM_OBJECT_STORE__ENDPOINT_URL": s3_endpoint,
                  "ATRIUM_OBJECT_STORE__REGION": "us-east-1", "ATRIUM_OBJECT_STORE__ADDRESSING_STYLE": "path",
                  "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
                  "ATRIUM_WEBHOOKS__ALLOW_HTTP": "true", "ATRIUM_WEBHOOKS__ALLOW_PRIVATE": "true"}
    app = create_app(settings, chat_model=FakeChatModel())
    worker = None
    async with WebhookReceiver() as receiver, LiveServer(app, free_port()) as server, \
            httpx.AsyncClient(base_url=server.url, headers=AUTH) as client:
        try:
            made = await client.post("/api/v1/webhooks", json={"url": f"{receiver.url}/scale"})
            assert made.status_code == 201, made.text
            secret = made.json()["secret"]
            async with socket(server, additional_headers=AUTH) as ws:
                await ready(ws)
                job_id = (await upload(client, DOCS))["job_id"]
                stored = await asyncio.to_thread(bucket_keys, s3_endpoint, bucket)
                assert len(stored) == len(DOCS) and all(key.startswith("atrium/uploads/") for key in stored)
                await asyncio.sleep(1.0)
                assert (await client.get(f"/api/v1/jobs/{job_id}")).json()["status"] == "queued"  # no job here
                worker = start_worker(worker_profile, "s3-worker", extra_env=worker_env)
                await wait_ready(worker_profile, "s3-worker")
                job = await wait_job(client, job_id, timeout=60)
                assert job["status"] == "succeeded" and job["result"]["counts"] == {"created": len(DOCS)}, job
                while (event := (await next_of(ws, "job", timeout=20))["job"])["status"] != "succeeded":
                    assert event["id"] == job_id
                assert event["id"] == job_id
            [delivery] = await receiver.wait_for("scale", timeout=30)
            payload = Verifier(secret).verify(delivery.body, delivery.headers)
            assert payload["type"] == "job.succeeded" and payload["data"]["job"]["id"] == job_id
            for _ in range(100):
                if not await asyncio.to_thread(bucket_keys, s3_endpoint, bucket):
                    break
                await asyncio.sleep(0.1)
            assert await asyncio.to_thread(bucket_keys, s3_endpoint, bucket) == []
            hits = (await client.post("/api/v1/search/semantic", json={"query": "refunds", "mode": "keyword"})).json()
            assert hits["results"][0]["source"] == "billing.md"
        finally:
            if worker is not None:
                assert stop_worker(worker) == 0
    log = await asyncio.to_thread((worker_profile.data_dir / "s3-worker.log").read_text, errors="replace")
    assert S3_SECRET_KEY not in log and secret not in log
