"""Builds every long-lived part once from ``Settings`` and closes them in reverse order.

The API (``create_app``) and the CLI share this wiring, so ``atrium ingest`` and the server use the same
adapters the same way. Adapters are chosen here, by configuration, and injected; nothing else branches on
which adapter is in use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
from redis.asyncio import Redis

from atrium.accounts.authenticate import Authenticator, build_authenticator
from atrium.accounts.login import SessionService, build_sessions
from atrium.accounts.ownership import Owner
from atrium.accounts.service import Accounts
from atrium.agents.artifact_store import StoreArtifactSink
from atrium.agents.chat_turns import ChatAssistant
from atrium.agents.context import AgentDeps
from atrium.agents.factory import build_assistant_deps
from atrium.agents.flows.service import FlowWaiting
from atrium.agents.ports import ProjectRecords
from atrium.agents.projects import SqlProjectRecords
from atrium.agents.registry import ASSISTANT_DEPS
from atrium.agents.service import Agents, build_agents
from atrium.conversations.artifacts.service import ArtifactService
from atrium.conversations.chat import ChatService
from atrium.conversations.erasure import ConversationErasure
from atrium.conversations.ports import StreamLog
from atrium.conversations.queries import QueryService
from atrium.conversations.replay import AnswerStreams
from atrium.conversations.runs import RunSupervisor
from atrium.conversations.stream_logs import InProcessStreamLog, RedisStreamLog
from atrium.gateway.http_client import upstream_http_client
from atrium.gateway.ports import ChatModel, Embedder
from atrium.gateway.service import Gateway, build_gateway
from atrium.gateway.tokens import TokenCounter
from atrium.guard.budgets.ledger import BudgetGuard
from atrium.guard.budgets.spend import SpendControl
from atrium.guard.egress import EgressGuard
from atrium.guard.pipeline import build_guard
from atrium.guard.policy import Guard
from atrium.guard.rate_limits import RequestRateLimiter, build_storage
from atrium.jobs.ports import Handler, JobWatcher
from atrium.jobs.queue import DatabaseJobQueue
from atrium.jobs.settings import job_engine, runs_in_api
from atrium.knowledge import reembed, rerank
from atrium.knowledge.answering import GroundedAnswerer
from atrium.knowledge.directory import CollectionDirectory
from atrium.knowledge.embedders.measured import MeasuredEmbedder
from atrium.knowledge.ingest import upload_cleanup, upload_job_handler
from atrium.knowledge.keyword import PostgresKeywordSearch, SqliteKeywordSearch
from atrium.knowledge.ports import KeywordSearch, VectorIndex
from atrium.knowledge.rerank import EmbeddingReranker
from atrium.knowledge.service import KnowledgeService
from atrium.knowledge.web.job import URL_JOB, UrlIngestion
from atrium.knowledge.web.wiring import build_url_ingestion
from atrium.notifications.service import NotificationService
from atrium.notifications.wiring import build_notifications
from atrium.realtime.hub import Hub
from atrium.realtime.ports import EventPublisher, publish_quietly
from atrium.realtime.publish import flow_prompt, job_watcher
from atrium.settings import Settings
from atrium.store.engine import Database, build_engine, temporary_database
from atrium.store.files import secure_data_dir
from atrium.store.migrate import upgrade
from atrium.store.objects.factory import build_object_store
from atrium.store.objects.ports import ObjectStore
from atrium.store.ports import PubSub
from atrium.store.pubsub import InProcessPubSub, RedisPubSub
from atrium.store.startup import startup_lock
from atrium.store.tenancy import app_role_name, grant_app_role, verify_isolation
from atrium.telemetry.metrics import Metrics
from atrium.telemetry.setup import Telemetry
from atrium.webhooks.dispatch import WebhookDispatcher
from atrium.webhooks.wiring import build_webhooks

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    embedder: Embedder
    index: VectorIndex
    knowledge: KnowledgeService
    gateway: Gateway
    chat: ChatService
    queries: QueryService
    artifacts: ArtifactService  # typed, versioned, searchable artifacts (conversations/artifacts/)
    jobs: DatabaseJobQueue
    runs: RunSupervisor
    streams: AnswerStreams  # the replay buffer of answer streams (resume after a lost connection)
    http_client: httpx.AsyncClient
    pubsub: PubSub
    metrics: Metrics
    authenticator: Authenticator  # any bearer credential -> Principal; announce_revocation(key_id)
    sessions: SessionService  # password login, refresh, logout
    accounts: Accounts  # administration, invitations, data rights (the account use cases)
    rate_limiter: RequestRateLimiter
    budgets: BudgetGuard  # spending caps; the gateway reserves and settles through it (guard/budgets/spend.py)
    redis: Redis | None
    agents: Agents  # the agents API: checkpointer, graph registry, thread states, runs
    erasure: ConversationErasure  # deleting a conversation erases its messages, artifacts, streams, threads
    realtime: Hub  # this process's WebSockets per organisation, presence, delivery (atrium.realtime)
    events: EventPublisher  # realtime events to every replica's sockets (through the PubSub port)
    notifications: NotificationService  # push to users' devices; told of jobs and waiting flows
    objects: ObjectStore  # where uploads wait for their ingestion job (store/objects/)
    webhooks: WebhookDispatcher  # signed job-completion webhooks; ``.registry`` for the routes (atrium.webhooks)
    guard: Guard | None = None  # guard policies (moderation, PII, injection, output links); routes/policy.py
    urls: UrlIngestion | None = None  # URL ingestion through the egress guard (knowledge/web/)
    telemetry: Telemetry | None = None  # metrics, traces, LangSmith, Sentry (telemetry/setup.py)
    owns_telemetry: bool = False  # built here (a CLI command): closed with the services


def build_embedder(settings: Settings, http_client: httpx.AsyncClient | None = None) -> Embedder:
    """The ``embedding`` section's adapter (knowledge/embedders/factory.py)."""
    from atrium.knowledge.embedders.factory import build_embedder as build

    return build(settings.embedding, http_client)


def rerank_model_files(settings: Settings) -> tuple[Path, Path]:
    """Where the reranking model and its tokenizer are read (``atrium models export-mpnet`` writes there)."""
    config = settings.knowledge.rerank
    folder = settings.data_dir / "models" / config.name
    return config.model_path or folder / "model.onnx", config.tokenizer_path or folder / "tokenizer.json"


def build_reranker(settings: Settings) -> EmbeddingReranker | None:
    """The ``knowledge.rerank`` stage, or None when it is off (or ``auto`` and its model is not there).
    Loading the model blocks (run it in a worker thread)."""
    from atrium.knowledge.embedders.onnx_minilm import OnnxEmbedder

    config = settings.knowledge.rerank
    if config.enabled == "off":
        return None
    model, tokenizer = rerank_model_files(settings)
    if config.enabled == "auto" and not (model.is_file() and tokenizer.is_file()):
        return None
    embedder = OnnxEmbedder(model_path=model, tokenizer_path=tokenizer, name=config.name,
                            max_length=config.max_length, intra_op_num_threads=config.threads)
    return EmbeddingReranker(embedder, config)


def cached_embedder(settings: Settings, db: Database, embedder: Embedder) -> Embedder:
    """``embedder`` behind the embedding cache (its table in ``db``), unless ``embedding.cache`` is off.
    Blocking (fingerprints the model's files)."""
    if not settings.embedding.cache:
        return embedder
    from atrium.knowledge.embedders.cache import CachingEmbedder, SqlVectorStore
    from atrium.knowledge.embedders.factory import model_fingerprint

    return CachingEmbedder(embedder, SqlVectorStore(db), fingerprint=model_fingerprint(settings.embedding, embedder),
                           query_cache_size=settings.embedding.query_cache_size)


def build_local_chat_model(settings: Settings, http_client: httpx.AsyncClient, *, name: str | None = None) -> ChatModel:
    """The bundled model, served by a managed llama.cpp server process (the ``local`` provider kind)."""
    from atrium.gateway.providers.llama_server import LlamaServerConfig, ManagedLlamaServer
    from atrium.gateway.providers.local_llama import LocalChatModel

    config = settings.chat

    server = ManagedLlamaServer(
        LlamaServerConfig(model=config.local_model, cache_dir=settings.models_dir,
                          log_dir=settings.data_dir / "logs", n_ctx=config.n_ctx, n_threads=config.n_threads,
                          n_threads_batch=config.n_threads_batch, startup_timeout_s=config.startup_timeout_s),
        http_client,
    )
    return LocalChatModel(server, name=name, ready_timeout_s=config.startup_timeout_s,
                          request_timeout_s=config.request_timeout_s)


def build_stream_log(settings: Settings, redis: Redis | None) -> StreamLog:
    """Redis Streams when Redis is configured (every replica reads every answer's stream), else in memory."""
    config = settings.streams
    if redis is not None:
        return RedisStreamLog(redis, max_len=config.max_events, ttl_s=config.ttl_s)
    return InProcessStreamLog(max_len=config.max_events, ttl_s=config.ttl_s)


def build_http_client(settings: Settings) -> httpx.AsyncClient:
    return upstream_http_client(httpx.Timeout(settings.chat.request_timeout_s, connect=10.0),
                                max_connections=settings.gateway.max_connections)


def build_index(settings: Settings, dimensions: int) -> VectorIndex:
    from atrium.knowledge.vector.hnsw import HnswVectorIndex

    config = settings.knowledge
    return HnswVectorIndex(settings.index_dir, dimensions, M=config.hnsw_m,
                           ef_construction=config.hnsw_ef_construction, ef_search=config.hnsw_ef_search)


async def build_vector_index(settings: Settings, db: Database, dimensions: int) -> VectorIndex:
    backend = settings.knowledge.vector_backend
    if backend == "pgvector" or (backend == "auto" and not db.is_sqlite):
        from atrium.knowledge.vector.pgvector import PgVectorIndex

        if db.is_sqlite:
            raise ValueError("knowledge.vector_backend=pgvector needs a PostgreSQL database_url")
        index = PgVectorIndex(db, dimensions, m=settings.knowledge.hnsw_m, ef_search=settings.knowledge.hnsw_ef_search)
        if settings.migration_database_url is not None:  # the application role may not create tables
            async with temporary_database(settings.resolved_migration_database_url) as owner:
                await index.ensure_schema(owner)
        else:
            await index.ensure_schema()
        return index
    return await anyio.to_thread.run_sync(build_index, settings, dimensions)


def build_job_queue(settings: Settings, db: Database, handlers: dict[str, Handler],
                    watchers: Sequence[JobWatcher], telemetry: Telemetry | None = None) -> DatabaseJobQueue:
    """The embedded worker over the job table, or procrastinate dispatching it (``jobs.engine``); handlers
    are registered here, so ``atrium worker`` runs exactly what the API queues."""
    engine = job_engine(settings.jobs, is_sqlite=db.is_sqlite)
    observed: dict[str, Any] = ({"tracer": telemetry.tracer, "metrics": telemetry.metrics}
                                if telemetry is not None else {})
    jobs: DatabaseJobQueue
    if engine == "procrastinate":
        from atrium.jobs.procrastinate_queue import ProcrastinateJobQueue

        jobs = ProcrastinateJobQueue(db, handlers, settings=settings.jobs, watchers=watchers,
                                     database_url=settings.resolved_database_url, **observed)
    else:
        jobs = DatabaseJobQueue(db, handlers, settings=settings.jobs, watchers=watchers, **observed)
    jobs.run_in_process = runs_in_api(settings.jobs, engine)
    return jobs


async def migrate(settings: Settings) -> None:
    """Bring the schema up to date, under the start-up lock: processes starting together migrate in turn
    (the later ones find nothing to do)."""
    await anyio.to_thread.run_sync(secure_data_dir, settings)  # 0700, the database 0600
    async with startup_lock(settings.resolved_migration_database_url):
        await anyio.to_thread.run_sync(upgrade, settings.resolved_migration_database_url)
        app_role = app_role_name(settings.resolved_database_url, settings.resolved_migration_database_url)
        if app_role is not None and not settings.is_sqlite:
            async with temporary_database(settings.resolved_migration_database_url) as owner:
                await grant_app_role(owner, app_role)
        if not settings.is_sqlite and job_engine(settings.jobs, is_sqlite=False) == "procrastinate":
            from atrium.jobs.procrastinate_queue import ensure_schema

            if await ensure_schema(settings.resolved_migration_database_url) and app_role is not None:
                # procrastinate's tables came after the grants
                async with temporary_database(settings.resolved_migration_database_url) as owner:
                    await grant_app_role(owner, app_role)


async def build_services(settings: Settings, *, chat_model: ChatModel | None = None,
                         projects: ProjectRecords | None = None, telemetry: Telemetry | None = None) -> Services:
    """Everything but background loops; the caller starts those (server) or runs jobs inline (CLI).
    ``projects``: where the assistant's ``create_project`` tool and the ``project`` flow make records
    (default: the ``projects`` table). ``telemetry``: the app's (default: built here from the settings,
    and closed with the services)."""
    owns_telemetry = telemetry is None
    if telemetry is None:
        telemetry = Telemetry.build(settings.telemetry)
        await telemetry.start()
    await anyio.to_thread.run_sync(secure_data_dir, settings)  # 0700, the database 0600
    db = Database(await anyio.to_thread.run_sync(partial(build_engine, settings.resolved_database_url,
                                                         pool_timeout_s=settings.database.pool_timeout_s)))
    telemetry.instrument_engine(db.engine)
    # One HTTP client for every upstream call of this process.
    http_client = build_http_client(settings)
    telemetry.instrument_http_client(http_client)
    metrics = telemetry.metrics
    bare_embedder = await anyio.to_thread.run_sync(build_embedder, settings, http_client)
    embedder: Embedder = MeasuredEmbedder(bare_embedder, metrics)
    index = await build_vector_index(settings, db, embedder.dimensions)
    await verify_isolation(db, require=settings.database.require_rls)
    keyword: KeywordSearch = (
        SqliteKeywordSearch(max_postings=settings.knowledge.keyword_max_postings or None)
        if db.is_sqlite else PostgresKeywordSearch())
    pubsub: PubSub = (RedisPubSub(settings.redis_url.get_secret_value()) if settings.redis_url is not None
                      else InProcessPubSub())
    # Who may read which collection, kept per process; a change another replica missed lasts at most as
    # long as a revoked key's cache entry.
    directory = CollectionDirectory(db, ttl_s=settings.auth.key_cache_ttl_s)
    reranker = await anyio.to_thread.run_sync(build_reranker, settings)
    knowledge = KnowledgeService(db, await anyio.to_thread.run_sync(cached_embedder, settings, db, embedder), index,
                                 keyword, settings.knowledge, pubsub, directory, reranker)
    redis = Redis.from_url(settings.redis_url.get_secret_value()) if settings.redis_url is not None else None
    counter = TokenCounter()
    await anyio.to_thread.run_sync(counter.load)
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url is not None else None
    rate_limiter = RequestRateLimiter(settings.rate_limits,
                                      build_storage(redis_url, timeout_s=settings.rate_limits.storage_timeout_s),
                                      metrics=metrics)
    hub = Hub(pubsub, settings.realtime, metrics=metrics)
    budgets = BudgetGuard(db, settings.budgets, pubsub=pubsub)
    spend = SpendControl(counter=counter, budgets=budgets, tokens=rate_limiter,
                         prompt_margin=settings.budgets.prompt_margin)
    pipeline = build_guard(settings.guard, settings.gateway.providers, db=db, pubsub=pubsub, metrics=metrics,
                           http_client=http_client)
    gateway = build_gateway(settings.gateway, settings.chat, http_client=http_client, db=db, redis=redis,
                            embedder=bare_embedder, metrics=metrics, counter=counter, chat_model=chat_model,
                            spend=spend, guard=pipeline, tracer=telemetry.otel_tracer,
                            local_factory=lambda name: build_local_chat_model(settings, http_client, name=name))
    model = gateway.chat
    authenticator = await build_authenticator(settings.auth, data_dir=settings.data_dir, db=db, pubsub=pubsub,
                                              http_client=http_client)
    sessions = build_sessions(settings.auth, db=db, access_tokens=authenticator.access_tokens,
                              storage=build_storage(redis_url))
    answerer = GroundedAnswerer(knowledge, top_k=settings.knowledge.top_k,
                                min_relevance=settings.knowledge.min_relevance)
    runs = RunSupervisor()
    streams = AnswerStreams(db, build_stream_log(settings, redis), settings.streams, shared=redis is not None)
    chat = ChatService(db, answerer, model, runs, settings.chat, directory, pipeline)
    chat.streams = streams
    chat.events = hub.publisher
    notifications = await build_notifications(settings.notifications, data_dir=settings.data_dir, db=db,
                                              http_client=http_client, egress=EgressGuard(settings.egress))
    urls = await build_url_ingestion(settings, knowledge)
    objects = await build_object_store(settings.object_store, uploads_dir=settings.uploads_dir)
    webhooks = build_webhooks(settings.webhooks, db, EgressGuard(settings.egress))
    # Each change of a job: its owner's sockets, devices and the organisation's webhooks told of it; an
    # upload's files deleted from the object store when it ends.
    jobs = build_job_queue(settings, db, {"ingest": upload_job_handler(knowledge, objects),
                                          URL_JOB: urls.job_handler(),
                                          reembed.JOB_KIND: reembed.handler(knowledge),
                                          rerank.JOB_KIND: rerank.handler(knowledge)},
                           watchers=(job_watcher(hub.publisher), notifications.job_changed, webhooks.job_changed,
                                     upload_cleanup(objects)), telemetry=telemetry)

    async def flow_waiting(waiting: FlowWaiting) -> None:  # a flow waits: its owner's sockets, then devices
        owner = Owner(waiting.user_id, waiting.api_key_id)
        await publish_quietly(hub.publisher, flow_prompt(waiting.org_id, owner, flow_id=waiting.flow_id,
                                                         flow=waiting.flow, prompt=waiting.prompt))
        notifications.flow_waiting(waiting.org_id, owner, waiting.flow_id, str(waiting.prompt.get("question", "")))

    artifacts = ArtifactService(knowledge, model, pipeline, top_k=settings.knowledge.top_k,
                                min_relevance=settings.knowledge.min_relevance, temperature=settings.chat.temperature,
                                events=hub.publisher)
    accounts = Accounts(db, authenticator, sessions.passwords, knowledge)
    projects = projects or SqlProjectRecords(db)
    assistant = build_assistant_deps(settings, chat, gateway, StoreArtifactSink(artifacts), projects,
                                     telemetry.graph_runs)
    agents = await build_agents(settings, db, model, runs, pubsub, deps=AgentDeps(chat=model, extra={
        ASSISTANT_DEPS: assistant, "accounts": accounts, "projects": projects}, graph_runs=telemetry.graph_runs),
        on_flow_waiting=flow_waiting)
    agents.erase_products = lambda org_id, thread_id: artifacts.erase_made_by(org_id, agent_thread_id=thread_id)
    accounts.erase_thread = agents.erase_thread  # erasing an account erases its agent threads whole
    services = Services(settings=settings, db=db, embedder=embedder, index=index, knowledge=knowledge,
                        gateway=gateway, chat=chat,
                        queries=QueryService(db, answerer, model, runs, settings.chat, directory, pipeline),
                        artifacts=artifacts,
                        jobs=jobs, runs=runs, streams=streams, http_client=http_client, pubsub=pubsub, metrics=metrics,
                        authenticator=authenticator, sessions=sessions, accounts=accounts,
                        rate_limiter=rate_limiter, budgets=budgets, redis=redis, agents=agents, guard=pipeline.guard,
                        erasure=ConversationErasure(db, artifacts.index, streams.log,
                                                    agents.erase_conversation_threads),
                        realtime=hub, events=hub.publisher, notifications=notifications, urls=urls,
                        objects=objects, webhooks=webhooks,
                        telemetry=telemetry, owns_telemetry=owns_telemetry)
    chat.assistant = ChatAssistant(assistant)  # /api/v1/chat/ask answers through the same assistant graph
    return services


async def close_services(services: Services, *, reconcile: bool = True) -> None:
    """Finish answer runs, then make the saved index match the database (unless ``reconcile`` is off, as
    for ``atrium index check``, which must report the files as they are), then release everything."""
    services.agents.stopping()
    await services.realtime.aclose()
    await services.runs.drain(timeout=services.settings.server.shutdown_grace_s)
    if reconcile:
        try:
            await services.knowledge.reconcile()
        except Exception:
            log.exception("final index reconciliation failed; the next start will repair it")
    await services.knowledge.save_index(force=True)
    await services.agents.aclose()
    await services.jobs.aclose()
    await services.notifications.close()  # sends in progress use the HTTP client
    await services.webhooks.close()
    await services.objects.aclose()
    if services.urls is not None:
        await services.urls.aclose()
    await services.gateway.aclose()
    await services.http_client.aclose()
    await services.streams.log.aclose()
    if services.redis is not None:
        await services.redis.aclose()
    await services.pubsub.aclose()
    await services.db.dispose()
    if services.telemetry is not None and services.owns_telemetry:
        await services.telemetry.aclose()
