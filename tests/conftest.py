"""Shared fixtures: settings on a temp data dir, the app with injected adapters, an authenticated client,
and the guard that fails any blocking call made inside the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import uvicorn
from blockbuster import BlockBuster, blockbuster_ctx
from fastapi import FastAPI

from atrium.app import create_app
from atrium.gateway.ports import ChatModel
from atrium.gateway.providers.fake import FakeChatModel
from atrium.settings import Settings

ADMIN_KEY = "atr_test_admin_key_0123456789abcdefghijklmnop"


@pytest.fixture
def blockbuster() -> Iterator[BlockBuster]:
    """Fails the test on a blocking call (sleep, file or socket I/O...) made on the event loop thread."""
    with blockbuster_ctx() as guard:
        yield guard


@pytest.fixture(autouse=True)
def uvicorn_access_logger_restored() -> Iterator[None]:
    """uvicorn.Config(access_log=False) unhooks the process-wide ``uvicorn.access`` logger (no handlers, no
    propagation) for good; a later server in the same process would then log no request."""
    logger = logging.getLogger("uvicorn.access")
    saved = (list(logger.handlers), logger.propagate, logger.level, logger.disabled)
    yield
    logger.handlers[:], logger.propagate, logger.level, logger.disabled = saved


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "bootstrap_admin_key": ADMIN_KEY,
        "chat": {"provider": "fake"},
        "embedding": {"provider": "hash"},
        "knowledge": {"demo_collection": False, "reconcile_interval_s": 0.2, "index_save_interval_s": 0,
                      "min_relevance": 0.05},
        # The app under test runs its jobs itself on PostgreSQL too (procrastinate's worker in the API process);
        # tests/integration/test_job_workers.py runs ``atrium worker`` processes instead.
        "jobs": {"run_in_api": True},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return Settings(**values)


class RunningApp:
    """An app with its lifespan running, reachable through an in-process httpx client. ``model`` is the
    injected chat model adapter (beneath the gateway's routing, cache and metering)."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, model: ChatModel | None = None) -> None:
        self.app = app
        self.client = client
        self.model = model

    @property
    def services(self) -> Any:
        return self.app.state.services


async def start_app(settings: Settings, chat_model: ChatModel | None = None, *,
                    configured: bool = False) -> tuple[FastAPI, Any]:
    """The app with its lifespan entered. ``configured``: build the models from ``settings.gateway`` (and
    ``chat``) instead of injecting ``chat_model`` (default: a ``FakeChatModel``)."""
    injected = None if configured else chat_model or FakeChatModel()
    app = create_app(settings, chat_model=injected)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    return app, lifespan


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@contextlib.asynccontextmanager
async def run_app(settings: Settings, chat_model: ChatModel | None = None, *,
                  configured: bool = False) -> AsyncIterator[RunningApp]:
    """The app (see ``start_app``) with an in-process client authenticated as the admin."""
    model = None if configured else chat_model or FakeChatModel()
    app, lifespan = await start_app(settings, model, configured=configured)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://atrium.test",
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        try:
            yield RunningApp(app, client, model)
        finally:
            await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[RunningApp]:
    async with run_app(settings) as app:
        yield app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """The app served by uvicorn on a real loopback port, inside the test's event loop. ``lifespan="off"``
    serves an app whose lifespan is already running (``start_app``)."""

    def __init__(self, app: FastAPI, port: int, *, lifespan: Literal["on", "off"] = "on") -> None:
        self.app = app
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                                    lifespan=lifespan))
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveServer:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task

    @property
    def services(self) -> Any:
        return self.app.state.services


pytest_plugins = ["tests.postgres_fixtures", "tests.redis_fixtures", "tests.s3_fixtures", "tests.gateway_helpers"]
