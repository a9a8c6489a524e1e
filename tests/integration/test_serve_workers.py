"""``atrium serve --workers N`` for real: uvicorn's supervisor and N spawned worker processes on one port.

With Redis, both worker processes answer (``X-Atrium-Pid``, on with ``server.pid_header``) and one key's rate
limit binds them together: a burst answered by both admits exactly the limit in all (a process refuses before it
has admitted the limit itself). Without Redis, ``--workers 2`` exits at once with a message that says why and
what to set.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY, free_port

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SRC = Path(__file__).resolve().parents[2] / "src"
COMPLETION = {"model": "fake", "max_tokens": 8, "messages": [{"role": "user", "content": "Hello there."}]}


def serve_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ATRIUM_")}
    env.update({"PYTHONPATH": str(SRC), "ATRIUM_DATA_DIR": str(data_dir), "ATRIUM_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
                "ATRIUM_CHAT__PROVIDER": "fake", "ATRIUM_EMBEDDING__PROVIDER": "hash",
                "ATRIUM_KNOWLEDGE__DEMO_COLLECTION": "false", "ATRIUM_SERVER__PID_HEADER": "true"})
    env.update(extra)
    return env


def serve(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "atrium", "serve", *args], env=env, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the supervisor and its workers (their own session)
        return process.wait(10)


@pytest.fixture
def two_workers(tmp_path: Path, redis_url: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    log = tmp_path / "serve.log"
    process = serve(["--workers", "2", "--port", str(port)], serve_env(tmp_path / "data", ATRIUM_REDIS_URL=redis_url),
                    log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        ready: set[str] = set()
        while len(ready) < 2:  # both workers ready (each answers /ready once its lifespan has run)
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                reply = httpx.get(f"{base}/ready", timeout=2)  # a new connection each time
                if reply.status_code == 200:
                    ready.add(reply.headers["x-atrium-pid"])
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        yield base, process
    finally:
        assert stop(process) == 0, log.read_text()[-3000:]


async def burst(base: str, key: str, count: int) -> list[httpx.Response]:
    """``count`` completions at once, each on a connection of its own (so the kernel hands them to either
    worker)."""
    async def one() -> httpx.Response:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            return await client.post("/v1/chat/completions", json=COMPLETION)

    return await asyncio.gather(*(one() for _ in range(count)))


async def test_two_worker_processes_answer_and_share_one_rate_limit(
        two_workers: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, supervisor = two_workers
    limit = 12
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                 timeout=60) as admin:
        for _attempt in range(8):  # the kernel may hand a whole burst to one worker: then try a fresh key
            made = await admin.post("/api/v1/admin/keys", json={"name": "burst", "role": "member",
                                                                "requests_per_minute": limit})
            assert made.status_code == 201, made.text
            replies = await burst(base, made.json()["key"], 4 * limit)
            answered = {r.headers["x-atrium-pid"] for r in replies}
            if len(answered) == 2:
                break
        statuses = Counter(reply.status_code for reply in replies)
        assert statuses == {200: limit, 429: 3 * limit}, statuses
        assert len(answered) == 2, answered  # both processes answered
        assert supervisor.pid not in {int(pid) for pid in answered}  # the parent only supervises
        admitted = Counter(r.headers["x-atrium-pid"] for r in replies if r.status_code == 200)
        refused = Counter(r.headers["x-atrium-pid"] for r in replies if r.status_code == 429)
        # Together exactly the limit, and a process refused requests before it had admitted the limit itself:
        # it counted the other's admissions too (a count of its own would have let it admit up to the limit).
        assert any(refused[pid] > 0 and admitted[pid] < limit for pid in answered), (admitted, refused)
        assert all(r.json()["error"]["code"] == "rate_limit_exceeded" for r in replies if r.status_code == 429)


def test_several_workers_without_redis_are_refused_with_what_to_set(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    process = serve(["--workers", "2", "--port", str(free_port())], serve_env(tmp_path / "data"), log)
    assert process.wait(60) == 2
    said = " ".join(log.read_text().split())
    assert "--workers 2 needs ATRIUM_REDIS_URL" in said and "rate limits" in said, said
    assert not (tmp_path / "data" / "atrium.db").exists()  # refused before any start-up work


def test_the_pid_header_is_off_by_default(tmp_path: Path) -> None:
    from atrium.app import create_app
    from tests.conftest import make_settings

    async def headers(pid_header: bool) -> httpx.Headers:
        settings = make_settings(tmp_path / ("on" if pid_header else "off"), server={"pid_header": pid_header})
        transport = httpx.ASGITransport(app=create_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://atrium.test") as client:
            return (await client.get("/health")).headers

    assert "x-atrium-pid" not in asyncio.run(headers(False))
    assert asyncio.run(headers(True))["x-atrium-pid"] == str(os.getpid())
