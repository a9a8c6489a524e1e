"""The ``atrium`` command: serve | worker | migrate | ingest | ask | search | config show."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from atrium.cli_accounts import keys_app, users_app
from atrium.cli_common import admin_principal, console, load_settings, run_async
from atrium.container import build_services, close_services, migrate
from atrium.settings import Settings, masked_dump
from atrium.telemetry.logging import configure_logging

if TYPE_CHECKING:
    import uvicorn

app = typer.Typer(help="Atrium: a self-hosted AI backend.", no_args_is_help=True, add_completion=False)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
index_app = typer.Typer(help="Vector index upkeep.", no_args_is_help=True)
app.add_typer(index_app, name="index")
models_app = typer.Typer(help="Optional models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")


def server_config(app: Any, settings: Settings, *, host: str | None = None,
                  port: int | None = None, workers: int = 1) -> uvicorn.Config:
    """How ``atrium serve`` has uvicorn run ``app`` (tests serve it through this too). With ``workers`` > 1,
    ``app`` is the import string of a factory each worker process calls (``atrium.cli:worker_app``).

    ``X-Forwarded-For``/``-Proto`` are believed only from ``server.forwarded_allow_ips``. uvicorn's own
    default believes them from 127.0.0.1: any process on the host (or a local proxy that passes the header
    through) could then pick the client IP, e.g. a new one per login attempt past the per-IP throttle."""
    import uvicorn

    from atrium.http.routes.ws import HARD_CAP_FACTOR

    trusted = settings.server.forwarded_allow_ips
    # The server refuses a WebSocket message over /ws's hard cap itself (1009), before buffering all of it.
    return uvicorn.Config(app, host=host or settings.server.host, port=port or settings.server.port,
                          log_config=None, timeout_graceful_shutdown=30, access_log=settings.server.access_log,
                          ws_max_size=settings.limits.max_ws_message_bytes * HARD_CAP_FACTOR,
                          proxy_headers=bool(trusted), forwarded_allow_ips=list(trusted),
                          workers=workers, factory=workers > 1,
                          # a worker answers the supervisor's pings once spawned and its imports done: on a
                          # busy host that takes more than uvicorn's 5 s, and a slow one was killed as hung
                          timeout_worker_healthcheck=60)


@app.command()
def serve(host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
          port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
          workers: Annotated[int, typer.Option(
              min=1, max=64, help="API processes sharing the port (uvicorn's supervisor restarts one that "
                                  "dies). More than 1 needs ATRIUM_REDIS_URL: rate limits, budgets' caches, "
                                  "the response cache, circuit breakers, pub/sub and answer streams are then "
                                  "shared through Redis. The database is shared too (SQLite or PostgreSQL); "
                                  "migrations run once, in this process, before the workers start.")] = 1) -> None:
    """Run the API server (migrates the database and bootstraps the admin key on first start)."""
    import uvicorn

    from atrium.app import create_app

    settings = load_settings()
    configure_logging(settings.log_level, settings.telemetry.log_format)
    if workers > 1:
        _serve_workers(settings, host, port, workers)
        return
    server = uvicorn.Server(server_config(create_app(settings), settings, host=host, port=port))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise typer.Exit(3)  # uvicorn's exit status for a failed start-up


def several_workers_refusal(settings: Settings, workers: int) -> str | None:
    """Why ``atrium serve --workers N`` cannot run on these settings, or None."""
    if settings.redis_url is None:
        return (f"--workers {workers} needs ATRIUM_REDIS_URL (e.g. redis://127.0.0.1:6379/0). Without Redis, rate "
                "limits, the response cache, circuit breakers, pub/sub (key revocations, realtime events) and "
                "answer streams live inside each process: every process would admit the whole rate limit and "
                "miss the others' events. Set ATRIUM_REDIS_URL, or run one process (--workers 1).")
    return None


def _serve_workers(settings: Settings, host: str | None, port: int | None, workers: int) -> None:
    """``workers`` uvicorn processes on one socket. What must run once runs here, before they start: the
    migrations and, on SQLite, ending the agent runs a stopped server left (a worker cannot tell them from a
    sibling's live ones). Each worker then builds its own services (``worker_app``)."""
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    refusal = several_workers_refusal(settings, workers)
    if refusal is not None:
        console.print(f"[red]Cannot serve with several processes:[/red] {refusal}")
        raise typer.Exit(2)
    if any(provider.kind == "local" for provider in settings.gateway.providers.values()):
        console.print(f"[yellow]warning:[/yellow] each of the {workers} processes starts its own local model "
                      "server (memory and cores times the processes); a shared model server scales better")

    async def prepare() -> None:
        from atrium.agents.runs import recover_runs
        from atrium.store.engine import temporary_database

        await migrate(settings)
        if settings.is_sqlite:
            async with temporary_database(settings.resolved_database_url) as db:
                await recover_runs(db)

    run_async(prepare)
    config = server_config("atrium.cli:worker_app", settings, host=host, port=port, workers=workers)
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise typer.Exit(3)


def worker_app() -> Any:
    """The app of one ``atrium serve --workers N`` process (uvicorn calls this factory in each): settings from
    the environment the parent validated, no migration (the parent ran it)."""
    from atrium.app import create_app

    settings = Settings()
    configure_logging(settings.log_level, settings.telemetry.log_format)
    return create_app(settings, auto_migrate=False, sole_process=False)


@app.command()
def worker(concurrency: Annotated[int | None, typer.Option(
        min=1, max=64, help="Jobs run at once (procrastinate engine; default jobs.concurrency).")] = None) -> None:
    """Run background jobs (ingestion) in this process, no HTTP, until SIGTERM or Ctrl-C, which let the
    running job finish first (up to server.shutdown_grace_s; then it goes back to the queue for another)."""
    settings = load_settings()
    if concurrency is not None:
        settings = settings.model_copy(update={"jobs": settings.jobs.model_copy(update={"concurrency": concurrency})})
    configure_logging(settings.log_level, settings.telemetry.log_format)

    async def work() -> None:
        await migrate(settings)
        services = await build_services(settings)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        try:
            await services.jobs.recover()
            runner = asyncio.create_task(services.jobs.work())
            probes: list[asyncio.Task[None]] = []
            stop_probes: Callable[[], None] = _nothing
            if settings.jobs.health_port is not None:
                from atrium.jobs.health import health_app, serve_health

                probe, stop_probes = serve_health(health_app(lambda: not runner.done(), services.db),
                                                  settings.jobs.health_host, settings.jobs.health_port)
                probes.append(probe)
            logging.getLogger("atrium.worker").info("worker ready (jobs engine: %s, concurrency %d)",
                                                    type(services.jobs).__name__, settings.jobs.concurrency)
            waiter = asyncio.create_task(stopping.wait())
            await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
            await services.jobs.stop(settings.server.shutdown_grace_s)
            stop_probes()
            for task in (runner, waiter):
                task.cancel()
            await asyncio.gather(runner, waiter, *probes, return_exceptions=True)
        finally:
            await close_services(services)

    run_async(work)


def _nothing() -> None:
    return None


@app.command("migrate")
def migrate_command() -> None:
    """Create or upgrade the database schema (SQLite or PostgreSQL)."""
    settings = load_settings()
    run_async(lambda: migrate(settings))
    console.print("[green]database is at the latest schema[/green]")


@app.command()
def ingest(paths: Annotated[list[str], typer.Argument(
               help="Files or directories (.txt, .md, .html, .pdf, .docx, .csv), or http(s) URLs.")],
           collection: Annotated[str, typer.Option(help="Collection to add the documents to.")] = "default",
           org: Annotated[str | None, typer.Option(help="Organisation id (default: the first).")] = None,
           depth: Annotated[int, typer.Option(min=0, max=3, help="URLs: link levels to follow (same site).")] = 0,
           max_pages: Annotated[int | None, typer.Option(min=1, help="URLs: the most pages fetched.")] = None,
           render: Annotated[str, typer.Option(help="URLs: auto | static | browser")] = "auto") -> None:
    """Ingest local files or web pages into a collection, with a progress bar."""
    from atrium.knowledge.ingest import discover, ingest_files
    from atrium.knowledge.service import IngestResult, check_collection
    from atrium.knowledge.web.job import UrlRequest

    settings = load_settings()
    configure_logging("warning", settings.telemetry.log_format)
    urls = [p for p in paths if p.startswith(("http://", "https://"))]
    if render not in ("auto", "static", "browser"):
        raise typer.BadParameter("--render must be auto, static or browser")

    async def work() -> dict[str, Any]:
        check_collection(collection)
        files = discover([Path(p) for p in paths if p not in urls])
        await migrate(settings)
        services = await build_services(settings)
        try:
            principal = await admin_principal(services, org)
            await services.knowledge.reconcile()
            with Progress(TextColumn("[bold]ingesting[/bold]"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[source]}"), TimeElapsedColumn(), console=console) as bar:
                task = bar.add_task("ingest", total=len(files), source="")

                async def on_file(done: int, _total: int, result: IngestResult | None) -> None:
                    bar.update(task, completed=done, source=result.source if result else "")

                summary = await ingest_files(services.knowledge, principal.org_id, collection, files, on_file)
            result = summary.to_dict()
            for url in urls:
                assert services.urls is not None
                report = await services.urls.ingest(principal.org_id, UrlRequest(
                    url, collection, depth, max_pages, render), user_id=principal.user_id)  # type: ignore[arg-type]
                for page in report.pages:
                    result["documents"].append({"source": page["url"], **page})
                    result["counts"][page["status"]] = result["counts"].get(page["status"], 0) + 1
                    result["chunks"] += page["chunks"]
                result["errors"] += [{"source": s["url"], "code": s["code"], "message": s["message"]}
                                     for s in report.skipped]
            return result
        finally:
            await close_services(services)

    result = run_async(work)
    for error in result["errors"]:
        console.print(f"[yellow]skipped {error['source']}:[/yellow] {error['message']}")
    console.print(f"[green]{len(result['documents'])} documents, {result['chunks']} chunks[/green] "
                  f"({', '.join(f'{k}: {v}' for k, v in sorted(result['counts'].items())) or 'nothing new'})")
    if result["errors"]:
        raise typer.Exit(1)


@app.command()
def search(query: str,
           limit: Annotated[int, typer.Option(min=1, max=50)] = 5,
           mode: Annotated[str, typer.Option(help="hybrid | vector | keyword")] = "hybrid",
           collection: Annotated[str | None, typer.Option()] = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Search the ingested documents."""
    if mode not in ("hybrid", "vector", "keyword"):
        raise typer.BadParameter("mode must be hybrid, vector or keyword")
    settings = load_settings()
    configure_logging("warning", settings.telemetry.log_format)

    async def work() -> list[dict[str, Any]]:
        services = await build_services(settings)
        try:
            principal = await admin_principal(services, None)
            await services.knowledge.reconcile()
            hits = await services.knowledge.search(principal.org_id, query, mode=mode, limit=limit,  # type: ignore[arg-type]
                                                   collections=[collection] if collection else None)
            return [{"score": round(hit.score, 4), "source": hit.chunk.source, "heading": hit.chunk.heading,
                     "text": hit.chunk.text} for hit in hits]
        finally:
            await close_services(services)

    results = run_async(work)
    if as_json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return
    for number, item in enumerate(results, start=1):
        console.print(f"[bold]{number}. {item['source']}[/bold] — {item['heading']}  ({item['score']})")
        console.print("   " + item["text"][:200].replace("\n", " "))


@app.command()
def ask(question: str, collection: Annotated[str | None, typer.Option()] = None) -> None:
    """Ask a grounded question; the answer streams into the terminal, then its sources."""
    settings = load_settings()
    configure_logging("warning", settings.telemetry.log_format)

    async def work() -> int:
        await migrate(settings)
        services = await build_services(settings)
        try:
            principal = await admin_principal(services, None)
            await services.knowledge.reconcile()
            run = await services.chat.ask(principal, question, conversation_id=None,
                                          collections=[collection] if collection else None)
            status = 0
            async for item in run.events():
                if item.event == "token":
                    sys.stdout.write(item.data["text"])
                    sys.stdout.flush()
                elif item.event == "sources":
                    sys.stdout.write("\n\n")
                    for source in item.data["sources"]:
                        mark = "*" if source["cited"] else " "
                        console.print(f" {mark}[{source['number']}] {source['source']} — {source['heading']}")
                elif item.event == "error":
                    console.print(f"\n[red]{item.data['code']}:[/red] {item.data['message']}")
                    status = 1
            return status
        finally:
            await close_services(services)

    raise typer.Exit(run_async(work))


@index_app.command("check")
def index_check(repair: Annotated[bool, typer.Option(help="Reconcile with the database and save.")] = False) -> None:
    """Compare the vector index on disk with the database; exit 1 if they differ (after --repair: if they
    still differ)."""
    settings = load_settings()
    configure_logging("warning", settings.telemetry.log_format)

    async def work() -> dict[tuple[str, str], tuple[int, int]]:
        await migrate(settings)
        services = await build_services(settings)
        try:
            before = await services.knowledge.differences()
            for (tenant, collection), (missing, extra) in before.items():
                console.print(f"{tenant}/{collection}: {missing} missing from the index, {extra} extra")
            if repair and before:
                await services.knowledge.reconcile()
                await services.knowledge.save_index(force=True)
                return await services.knowledge.differences()
            return before
        finally:
            await close_services(services, reconcile=repair)

    differences = run_async(work)
    console.print("[green]index matches the database[/green]" if not differences else
                  f"[red]index differs from the database in {len(differences)} collections[/red]")
    raise typer.Exit(1 if differences else 0)


@index_app.command("rerank-vectors")
def index_rerank_vectors() -> None:
    """Make the reranking vectors that chunks lack, now (the server does it in the background)."""
    settings = load_settings()
    configure_logging("warning")

    async def work() -> int:
        from atrium.knowledge.rerank import cover_collection, uncovered

        await migrate(settings)
        services = await build_services(settings)
        try:
            reranker = services.knowledge.reranker
            if reranker is None:
                console.print("[red]no reranking model is loaded: run `atrium models export-mpnet` first[/red]")
                return 1
            for tenant, collection in sorted(await uncovered(services.db, reranker.name)):
                done = await cover_collection(services.db, reranker, tenant, collection)
                console.print(f"{tenant}/{collection}: {done} reranking vectors made")
            return 0
        finally:
            await close_services(services)

    raise typer.Exit(run_async(work))


@models_app.command("export-mpnet")
def models_export_mpnet(out: Annotated[Path | None, typer.Option(
        help="Folder to write model.onnx and tokenizer.json to (default: where knowledge.rerank reads them).")
        ] = None) -> None:
    """Build the int8 ONNX reranking model (all-mpnet-base-v2) from the `quality` extra's packages, without
    torch; about a minute and 1.5 GB of memory."""
    from atrium.container import rerank_model_files
    from atrium.errors import AppError
    from atrium.knowledge.embedders.mpnet_export import export

    settings = load_settings()
    model, tokenizer = rerank_model_files(settings)
    if out is None and model.parent != tokenizer.parent:
        raise typer.BadParameter("knowledge.rerank's model and tokenizer are in two folders: give --out")
    try:
        written = export(out or model.parent)
    except AppError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    console.print(f"wrote {written} and its tokenizer.json")


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration as JSON, secrets masked."""
    print(json.dumps(masked_dump(load_settings()), indent=2, default=str))


@config_app.command("doc")
def config_doc(
    write: Annotated[Path | None, typer.Option(
        help="Rewrite the generated reference inside this Markdown file (docs/operations.md) instead of "
             "printing it.")] = None,
    check: Annotated[bool, typer.Option(help="With --write: change nothing, exit 1 if it is stale.")] = False,
) -> None:
    """Print the configuration reference (every setting, its variable, type, bounds and default) generated
    from the settings classes."""
    from atrium import config_doc as reference

    if write is None:
        sys.stdout.write(reference.render(Settings))
        return
    current = write.read_text(encoding="utf-8")
    fresh = reference.replace_generated(current, reference.render(Settings))
    if check:
        raise typer.Exit(0 if fresh == current else 1)
    if fresh != current:
        write.write_text(fresh, encoding="utf-8")
        console.print(f"{write}: configuration reference rewritten")


def main() -> None:
    app()
