"""Builds URL ingestion once from the settings (called by ``container.py``): the egress guard of the
``egress`` section, its guarded client, and the browser renderer when the ``browser`` extra and Chromium
are installed (else ``render: browser`` answers ``browser_unavailable`` and ``auto`` stays static)."""

from __future__ import annotations

import logging

import anyio

from atrium.guard.egress import EgressGuard, Resolver
from atrium.guard.egress_transport import guarded_client
from atrium.knowledge.service import KnowledgeService
from atrium.knowledge.web.browser import BrowserRenderer, browser_missing
from atrium.knowledge.web.job import UrlIngestion
from atrium.settings import Settings

log = logging.getLogger(__name__)


async def build_url_ingestion(settings: Settings, knowledge: KnowledgeService, *,
                        resolver: Resolver | None = None) -> UrlIngestion:
    web = settings.knowledge.web
    guard = EgressGuard(settings.egress, resolver)
    client = guarded_client(guard, timeout=web.timeout_s, max_redirects=web.max_redirects,
                            user_agent=web.user_agent)
    missing = await anyio.to_thread.run_sync(browser_missing, web.browser_path)
    if missing is not None:
        log.info("URL ingestion without a browser: %s", missing)
    renderer = BrowserRenderer(client, web) if missing is None else None
    return UrlIngestion(knowledge, guard, web, renderer, client)
