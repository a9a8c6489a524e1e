"""The probes of an ``atrium worker`` process, which serves no API: ``GET /health`` answers 200 while its job
loop runs (503 once it has stopped: restart me) and ``GET /ready`` 200 while the database answers too.

Served by uvicorn on ``jobs.health_port`` (off when unset) beside the job loop, in the same event loop, so
a loop blocked by a job shows as a probe timeout. No tenant data and no authentication: bind it where only
the orchestrator reaches it (``jobs.health_host``, loopback by default).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from atrium.store.engine import Database
from atrium.store.health import database_answers


def health_app(job_loop_running: Callable[[], bool], db: Database) -> Starlette:
    """The worker's probe endpoints over ``job_loop_running`` (is the job loop alive?) and ``db``."""

    async def health(_: Request) -> JSONResponse:
        alive = job_loop_running()
        return JSONResponse({"status": "ok" if alive else "stopped"}, status_code=200 if alive else 503)

    async def ready(_: Request) -> JSONResponse:
        checks = {"jobs": job_loop_running(), "database": await database_answers(db)}
        ok = all(checks.values())
        return JSONResponse({"status": "ready" if ok else "not_ready", "checks": checks},
                            status_code=200 if ok else 503)

    return Starlette(routes=[Route("/health", health), Route("/ready", ready)])


def serve_health(app: Starlette, host: str, port: int) -> tuple[asyncio.Task[None], Callable[[], None]]:
    """Serve ``app`` on ``host:port`` in the running loop; returns the serving task and a function that
    asks it to stop."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           lifespan="off"))

    def stop() -> None:
        server.should_exit = True

    return asyncio.create_task(server.serve()), stop
