"""``atrium worker``'s probes (``jobs.health_port``): a real worker process answers ``GET /health`` and
``GET /ready`` while its job loop runs, still works its queue, and SIGTERM stops it cleanly, probes included."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.worker_harness import Harness, Profile, start_worker, stop_worker, wait_ready

pytestmark = pytest.mark.integration


async def test_worker_probes_answer_while_it_works_and_stop_with_it(tmp_path: Path) -> None:
    profile = Profile("embedded", tmp_path / "data")
    port = free_port()
    async with Harness(profile) as harness:
        worker = start_worker(profile, "probed", extra_env={"ATRIUM_JOBS__HEALTH_PORT": str(port)})
        try:
            await wait_ready(profile, "probed")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as probe:
                health = None
                for _ in range(100):  # the probe server starts beside the job loop
                    try:
                        health = await probe.get("/health")
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.1)
                assert health is not None, "no probe server on jobs.health_port"
                assert health.status_code == 200 and health.json() == {"status": "ok"}
                ready = await probe.get("/ready")
                assert ready.status_code == 200, ready.text
                assert ready.json()["checks"] == {"jobs": True, "database": True}
                job_id = await harness.enqueue({"probe.md": "# Probe\n\nThe worker still works its queue.\n"})
                done = await harness.wait_for([job_id], lambda job: job.status == "succeeded", timeout_s=60)
                assert done[0].status == "succeeded"
                assert worker.poll() is None
        finally:
            code = stop_worker(worker)
        assert code == 0, (profile.data_dir / "probed.log").read_text(errors="replace")[-2000:]
        async with httpx.AsyncClient(timeout=2) as after:
            with pytest.raises(httpx.ConnectError):  # the probes stopped with the worker
                await after.get(f"http://127.0.0.1:{port}/health")

