"""The assistant wired as the platform API will wire it (``agents.factory``): over the running app's
services, its model calls go down the one gateway stack (the injected adapter sits beneath the router,
and each call is metered under the run's endpoint), and its threads live in the embedded default's
checkpoint file."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from atrium.agents.factory import build_assistant_deps
from atrium.agents.graph import build_assistant_graph
from atrium.agents.memory import InMemoryArtifactSink, InMemoryProjectRecords
from atrium.gateway.providers.fake import FakeChatModel
from atrium.store.models import UsageRecord
from tests.agent_helpers import turn
from tests.conftest import ADMIN_KEY, make_settings, run_app


async def test_the_assistant_over_the_running_services_calls_the_model_through_the_gateway(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    adapter = FakeChatModel()
    async with run_app(settings, adapter) as app:
        services = app.services
        principal = await services.authenticator.authenticate(ADMIN_KEY)
        await services.knowledge.ingest_text(principal.org_id, "docs", "refunds.md",
                                             "# Refunds\n\nRefunds take up to 14 days.", title="Refunds")
        deps = build_assistant_deps(services.settings, services.chat, services.gateway, InMemoryArtifactSink(),
                                    InMemoryProjectRecords())
        assert deps.model is services.gateway.chat and deps.guard is services.chat.guard
        assert deps.settings.native_tools is False  # the fake declares no tool calling
        async with services.agents.checkpoints.for_tenant(principal.org_id) as saver:
            graph = build_assistant_graph(deps, saver)
            result = await turn(graph, "How long do refunds take?", principal=principal, thread="wired")
        await services.gateway.recorder.flush()
        async with services.db.tenant_session(principal.org_id) as session:
            endpoints = list(await session.scalars(select(UsageRecord.endpoint)
                                                   .where(UsageRecord.org_id == principal.org_id)))
    assert "14 days" in result.state["answer"] and result.state["answer"].endswith("[1]")
    [request] = adapter.requests
    assert request.route is not None and request.context.endpoint == "/threads/runs"
    assert request.guarded == frozenset({"input", "context"})
    assert endpoints == ["/threads/runs"]
    assert (settings.data_dir / "checkpoints.db").stat().st_size > 0
