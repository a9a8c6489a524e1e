"""The playground's other screens in Debian's Chromium (Playwright), against the app served by uvicorn with
the fake chat model (fast and deterministic; ``tests/e2e/test_playground_browser.py`` runs the real server
and local model): a refused key, signing in with a key, search with highlighted words, a guided flow walked
to its end (the project it made is then readable through the API), the usage chart (the caller's answer
counted where the server has usage analytics, "unavailable" where it has none), and signing out.

Skips only when Chromium is absent (``make install-dev`` installs it where it can)."""

from __future__ import annotations

import httpx
import pytest

from atrium.app import create_app
from atrium.gateway.providers.fake import FakeChatModel
from atrium.settings import Settings
from tests.conftest import ADMIN_KEY, LiveServer, free_port
from tests.playground_helpers import CHROMIUM, CHROMIUM_ARGS, needs_chromium, usage_shown

pytestmark = [pytest.mark.integration, needs_chromium]

HANDBOOK = "# Handbook\n\n## Refunds\n\nRefunds are issued within 14 days of a request.\n"


async def test_key_sign_in_search_and_a_guided_flow(settings: Settings) -> None:
    from playwright.async_api import async_playwright

    app = create_app(settings, chat_model=FakeChatModel())
    async with LiveServer(app, free_port()) as server:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as api:
            accepted = await api.post("/api/v1/documents", files={"files": ("handbook.md", HANDBOOK.encode())},
                                      data={"collection": "handbook"})
            assert accepted.status_code == 202, accepted.text
            for _ in range(200):
                job = (await api.get(f"/api/v1/jobs/{accepted.json()['job_id']}")).json()
                if job["status"] not in ("queued", "running"):
                    break
            assert job["status"] == "succeeded", job
            answered = await api.post("/api/v1/chat/ask", json={"message": "How soon are refunds issued?"})
            assert answered.status_code == 200 and answered.json()["sources"], answered.text
            has_analytics = "/api/v1/analytics/user" in (await api.get("/openapi.json")).json()["paths"]

        problems: list[str] = []
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                page.on("console", lambda message: problems.append(message.text)
                        if "Content Security Policy" in message.text else None)
                page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
                await page.goto(server.url + "/")

                # A wrong key is refused and nothing is kept; the right one opens the workspace.
                await page.click("[data-signin=key]")
                await page.fill("#key-form [name=key]", "atr_" + "x" * 40)
                await page.click("#key-form [type=submit]")
                await page.wait_for_selector("#sign-in-error:has-text('refused')")
                assert await page.is_hidden("#workspace")
                assert await page.evaluate("() => sessionStorage.length") == 0
                await page.fill("#key-form [name=key]", ADMIN_KEY)
                await page.click("#key-form [type=submit]")
                await page.wait_for_selector("#workspace:not([hidden])")
                assert "API key" in await page.text_content("#whoami-text")
                assert ADMIN_KEY not in page.url and ADMIN_KEY not in await page.content()

                # Search: the hit, with the query's words marked in its snippet.
                await page.click("[data-view=search]")
                await page.fill("#search-form [name=query]", "refunds issued")
                await page.click("#search-form [type=submit]")
                await page.wait_for_selector("#search-results li[data-source='handbook.md']")
                marked = await page.eval_on_selector_all("#search-results mark", "ms => ms.map(m => m.textContent)")
                assert {"Refunds", "issued"} <= set(marked), marked

                # A guided flow, one prompt after another, to the project it creates.
                await page.click("[data-view=flow]")
                await page.select_option("#flow-names", "project")
                await page.click("#flow-start [type=submit]")
                answers = {"title": "Launch plan", "description": "A plan to launch the product in spring."}
                for _ in range(8):
                    await page.wait_for_selector("#flow-state :is(.question, [data-status])")
                    if await page.query_selector("#flow-state [data-status]"):
                        break
                    question = await page.text_content("#flow-state .question")
                    step = await page.get_attribute("#flow-state .question", "data-step")
                    if step in answers:
                        await page.fill("#flow-state input[name=answer]", answers.pop(step))
                        await page.click("#flow-state form [type=submit]")
                    else:  # a choice or the confirmation: the first button (a type, public, yes)
                        await page.click("#flow-state .controls button >> nth=0")
                    await page.wait_for_function(
                        "q => document.querySelector('#flow-state .question')?.textContent !== q", arg=question)
                assert await page.get_attribute("#flow-state [data-status]", "data-status") == "done"
                result = await page.text_content("#flow-state pre")
                assert "Launch plan" in result and answers == {}

                assert await usage_shown(page) == ("counted" if has_analytics else "unavailable")

                await page.click("#sign-out")
                await page.wait_for_selector("#sign-in:not([hidden])")
                assert await page.evaluate("() => sessionStorage.length") == 0
            finally:
                await browser.close()
        assert problems == []

        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as api:
            projects = (await api.get("/api/v1/projects")).json()["projects"]
        assert [p["title"] for p in projects] == ["Launch plan"]
