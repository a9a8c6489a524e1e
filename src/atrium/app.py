"""``create_app(settings)``: the FastAPI app and the lifespan that builds everything once."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI
from opentelemetry.sdk.trace.export import SpanExporter
from starlette.middleware.cors import CORSMiddleware

from atrium.accounts.bootstrap import ensure_admin
from atrium.container import Services, build_services, close_services, migrate
from atrium.demo import ingest_demo
from atrium.gateway.ports import ChatModel
from atrium.http.errors import install_error_handlers
from atrium.http.middleware import EdgeMiddleware
from atrium.http.openapi import install_security_schemes
from atrium.http.routes import (
    accounts,
    admin,
    analytics,
    anthropic_compat,
    artifacts,
    assistants,
    auth,
    budgets,
    chat,
    collections,
    conversations,
    document_urls,
    documents,
    flows,
    health,
    invitations,
    me,
    metrics,
    notifications,
    openai_compat,
    policy,
    projects,
    query,
    runs,
    search,
    sync,
    threads,
    webhooks,
    ws,
)
from atrium.http.schemas.agents import RunStreamEvent
from atrium.knowledge import reembed, rerank
from atrium.settings import Settings
from atrium.store.startup import startup_lock
from atrium.telemetry.logging import install_record_redaction, register_secrets, secrets_of
from atrium.telemetry.setup import Telemetry
from atrium.web import install_playground

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, chat_model: ChatModel | None = None,
               auto_migrate: bool = True, sole_process: bool = True,
               span_exporter: SpanExporter | None = None) -> FastAPI:
    """Build the app. ``chat_model`` overrides the configured one, ``span_exporter`` the OTLP exporter of
    ``telemetry.tracing`` (tests inject adapters this way).
    ``sole_process``: whether this process may take the embedded profile's unfinished agent runs for its
    own dead ones at start-up (``atrium serve --workers N`` recovers them in the parent, before its workers
    start, and builds each worker with False: a worker started later would end a sibling's live runs)."""
    settings = settings or Settings()
    # Every log record is redacted when created, and the settings' own secrets are masked by value.
    install_record_redaction()
    register_secrets(secrets_of(settings))
    telemetry = Telemetry.build(settings.telemetry, span_exporter=span_exporter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if auto_migrate:
            await migrate(settings)
        try:
            await telemetry.start()
            services = await build_services(settings, chat_model=chat_model, telemetry=telemetry)
        except BaseException:
            await telemetry.aclose()
            raise
        app.state.services = services
        background: list[asyncio.Task[None]] = []
        try:
            async with startup_lock(settings.resolved_migration_database_url):  # one process bootstraps
                await _first_start(services)
            await services.knowledge.reconcile()
            if services.jobs.run_in_process:  # the scale profile leaves jobs to ``atrium worker`` processes
                await services.jobs.recover()
            else:
                log.warning("this process runs no background job (jobs.run_in_api is off): run `atrium worker`")
            await reembed.schedule(services.knowledge, services.jobs)  # after a change of embedding model
            await rerank.schedule(services.knowledge, services.jobs)  # chunks lacking reranking vectors
            await services.realtime.start()
            if services.db.is_sqlite and sole_process:  # this process owns every run; elsewhere others may be live
                await services.agents.runs.recover()
            background = [
                asyncio.create_task(services.knowledge.keep_consistent(), name="index-upkeep"),
                asyncio.create_task(_warm_up(services.gateway.chat), name="model-warm-up"),
                asyncio.create_task(services.authenticator.listen_for_revocations(), name="auth-revocations"),
                asyncio.create_task(services.streams.keep_reaping(), name="abandoned-answers"),
                asyncio.create_task(services.agents.runs.listen(), name="agent-run-cancels"),
                asyncio.create_task(services.agents.keep_sweeping(), name="agent-thread-retention"),
            ]
            if services.jobs.run_in_process:
                background.append(asyncio.create_task(services.jobs.work(), name="jobs"))
            if services.guard is not None:
                background.append(asyncio.create_task(services.guard.policies.listen(), name="policy-changes"))
            app.state.ready = True
            # What start-up built lives as long as the process (modules, models, the tokenizer's 100k-entry
            # vocabulary): move it out of the garbage collector's reach, so a full collection does not walk
            # it again and again and pause every stream (measured: bench/gateway_ttft.py).
            gc.freeze()
            yield
        finally:
            app.state.ready = False
            await services.jobs.stop(settings.server.shutdown_grace_s)
            for task in background:
                task.cancel()
            for task in background:
                with suppress(asyncio.CancelledError, Exception):
                    await task
            try:
                await close_services(services)
            finally:
                await telemetry.aclose()  # the spans of the shutdown itself included

    # FastAPI's built-in OpenTelemetry hooks are off: they cost a provider lookup per request and Atrium
    # exports Prometheus metrics itself.
    app = FastAPI(title="Atrium", version="0.1.0", lifespan=lifespan,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.settings = settings
    app.state.ready = False
    install_error_handlers(app)
    limits = settings.limits
    app.add_middleware(
        EdgeMiddleware,
        limit_for=lambda path: limits.max_upload_bytes if path.startswith("/api/v1/documents")
        else limits.max_request_bytes,
        pid_header=settings.server.pid_header,
        metrics=telemetry.metrics, traced=telemetry.tracing,
    )
    if settings.server.cors_origins:  # outermost: preflights are answered before the edge's work
        # Exposed: the run a start made (Content-Location, read by the LangGraph SDKs), the request id, and
        # when to retry.
        app.add_middleware(CORSMiddleware, allow_origins=settings.server.cors_origins, allow_headers=["*"],
                           allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"], max_age=600,
                           expose_headers=["Content-Location", "Location", "Retry-After", "X-Request-ID"])
    # The model endpoints first: FastAPI tries routes in order, and these are the hot path.
    for module in (openai_compat, anthropic_compat, health, metrics, chat, search, document_urls, documents,
                   collections, query, conversations, sync, me, admin, auth, accounts, invitations, budgets, policy,
                   ws, assistants, threads, runs, flows, projects, notifications, webhooks, analytics):
        app.include_router(module.router)
    app.include_router(artifacts.router)
    app.include_router(conversations.admin_router)
    install_playground(app)  # the public page at /; its API calls carry the signed-in user's credential
    install_security_schemes(app, extra_schemas=(RunStreamEvent,))
    telemetry.instrument_app(app)  # server spans (tracing on), outside every middleware
    return app


async def _first_start(services: Services) -> None:
    """On a new data dir: create the admin org, user and key, print the key once, load the demo docs."""
    preset = services.settings.bootstrap_admin_key
    created = await ensure_admin(services.db, preset_key=preset.get_secret_value() if preset else None)
    if created is None:
        return
    if created.raw_key is not None:
        # Printed to the terminal, never logged: this is the only time the key exists in clear text.
        print(
            "\n  Atrium admin API key (shown once, stored only as a hash):\n\n"
            f"    {created.raw_key}\n\n  Use it as: Authorization: Bearer <key>\n",
            file=sys.stderr, flush=True,
        )
    if services.settings.knowledge.demo_collection:
        count = await ingest_demo(services.knowledge, created.org_id)
        log.info("demo collection ingested: %d documents", count)


async def _warm_up(model: ChatModel) -> None:
    """Start the model in the background so liveness answers at once and readiness follows the model."""
    try:
        await model.ready()
    except Exception:
        log.exception("chat model failed to start")
