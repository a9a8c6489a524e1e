"""A webhook receiver on a loopback port (aiohttp): it keeps every request (path, headers, raw body) and
answers 200, or what a test queued for the path (a status, after an optional delay). Signatures are checked
by the tests with the ``standardwebhooks`` library's own ``verify``, not here."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Self

from aiohttp import web

from tests.conftest import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class WebhookReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.received: list[Received] = []
        self.answers: dict[str, deque[tuple[int, float]]] = defaultdict(deque)
        self._arrived = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post("/{path:.*}", self._handle)
        self.runner: web.AppRunner | None = None

    def answer(self, path: str, status: int, *, delay_s: float = 0.0, times: int = 1) -> None:
        """The next ``times`` requests to ``/path`` get ``status``, after ``delay_s``."""
        for _ in range(times):
            self.answers[path].append((status, delay_s))

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        self.received.append(Received(path, {k.lower(): v for k, v in request.headers.items()}, body,
                                      time.monotonic()))
        self._arrived.set()
        status, delay = self.answers[path].popleft() if self.answers[path] else (200, 0.0)
        if delay:
            await asyncio.sleep(delay)
        return web.json_response({"ok": status < 300}, status=status)

    def at(self, path: str) -> list[Received]:
        return [item for item in self.received if item.path == path]

    async def wait_for(self, path: str, count: int = 1, timeout: float = 15.0) -> list[Received]:
        """The first ``count`` requests to ``/path`` (waiting up to ``timeout`` seconds for them)."""
        deadline = time.monotonic() + timeout
        while len(self.at(path)) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"{len(self.at(path))} of {count} requests to /{path} arrived"
            self._arrived.clear()
            if len(self.at(path)) < count:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)
        return self.at(path)[:count]

    async def __aenter__(self) -> Self:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_exc: Any) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
