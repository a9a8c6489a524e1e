"""The playground in a real browser against the real product: Debian's Chromium driven by Playwright, the
real ``atrium serve`` process on the embedded default (SQLite, ONNX embeddings, the local 0.5B model).

A member signs in with their password, uploads a document and waits for its ingestion job, asks a question
and sees the answer stream in, then cite the uploaded document. The page runs under its Content-Security-
Policy the whole time (a violation fails the test). The screenshot goes to docs/images/playground.png.

Skips only when Chromium is absent (``make install-dev`` installs it where it can: Debian, as root)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.test_end_to_end import DOCS
from tests.playground_helpers import CHROMIUM, CHROMIUM_ARGS, needs_chromium, usage_shown

pytestmark = [pytest.mark.e2e, pytest.mark.integration, needs_chromium]

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "playground.png"
EMAIL, PASSWORD = "ada@example.com", "correct horse battery staple"
ANSWER_TIMEOUT_MS = 300_000


def _prepare(server: ServerProcess) -> bool:
    """A member who logs in with a password; whether this server has usage analytics."""
    server.wait_ready()
    with server.client() as admin:
        created = admin.post("/api/v1/admin/users", json={"email": EMAIL, "name": "Ada", "role": "member",
                                                          "password": PASSWORD})
        assert created.status_code == 201, created.text
        return "/api/v1/analytics/user" in admin.get("/openapi.json").json()["paths"]


async def test_sign_in_upload_ask_and_see_a_cited_answer(serve: ServerProcess, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright  # the browser extra, installed by make install-dev

    has_analytics = await asyncio.to_thread(_prepare, serve)
    document = tmp_path / "zephyr.md"
    document.write_text(DOCS["zephyr.md"])
    problems: list[str] = []

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 540})
            page.on("console", lambda message: problems.append(message.text)
                    if message.type == "error" and "Content Security Policy" in message.text else None)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            await page.goto(serve.url + "/")

            # Sign in with a password; the tokens stay in this tab's sessionStorage, out of the URL.
            await page.fill("#password-form [name=email]", EMAIL)
            await page.fill("#password-form [name=password]", PASSWORD)
            await page.click("#password-form [type=submit]")
            await page.wait_for_selector("#workspace:not([hidden])")
            assert EMAIL in await page.text_content("#whoami-text")
            stored = await page.evaluate("() => [sessionStorage.getItem('atrium.credential'), localStorage.length]")
            assert stored[0] is not None and '"access"' in stored[0] and stored[1] == 0
            assert page.url == serve.url + "/"

            # Upload into a new collection and follow the job to its end.
            await page.click("[data-view=documents]")
            await page.set_input_files("#upload-form [name=files]", str(document))
            await page.fill("#upload-form [name=collection]", "ops")
            await page.click("#upload-form [type=submit]")
            await page.wait_for_selector("#job-status[data-status=succeeded], #job-status[data-status=failed]",
                                         timeout=120_000)
            assert await page.get_attribute("#job-status", "data-status") == "succeeded", \
                await page.text_content("#job-status")
            await page.wait_for_selector("#documents td:text-is('zephyr.md')")
            assert await page.input_value("#collection") == "ops"

            # Ask: the answer streams in (text before the end), then cites the uploaded document.
            await page.click("[data-view=chat]")
            await page.fill("#chat-form textarea", "Which TCP port does the Zephyr service listen on?")
            await page.click("#chat-form [type=submit]")
            await page.wait_for_function(
                "() => { const a = document.querySelector('.answer');"
                " return a && (a.dataset.status !== 'streaming' || a.textContent.length > 0); }",
                timeout=ANSWER_TIMEOUT_MS)
            streamed = await page.evaluate("() => document.querySelector('.answer').dataset.status")
            await page.wait_for_selector(".answer:not([data-status=streaming])", timeout=ANSWER_TIMEOUT_MS)
            status = await page.get_attribute(".answer", "data-status")
            reply = await page.text_content(".turn.assistant")
            assert status == "done", reply
            assert streamed == "streaming", "the answer arrived whole instead of streaming"
            assert "7421" in await page.text_content(".answer"), reply
            cited = await page.eval_on_selector_all(".source.cited", "els => els.map(e => e.dataset.source)")
            assert "zephyr.md" in cited, reply
            assert await page.is_visible(".source.cited[data-source='zephyr.md'] .badge")

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)

            # The usage chart counts that answer where the server has usage analytics; elsewhere it says so.
            assert await usage_shown(page) == ("counted" if has_analytics else "unavailable")
        finally:
            await browser.close()
    assert problems == []

    # The page itself is public; the API it calls is not.
    async with httpx.AsyncClient(base_url=serve.url) as anonymous:
        assert (await anonymous.get("/")).status_code == 200
        assert (await anonymous.get("/api/v1/documents")).status_code == 401
