"""The official LangGraph JavaScript SDK (``@langchain/langgraph-sdk``: its ``Client`` and the React hook
``useStream``) against Atrium's agents API, given only Atrium's URL and key: the vitest suite of
``tests/js`` run with Node against a live server (uvicorn on loopback, the fake chat model).

``make install-dev`` installs the suite's pinned packages (``npm ci --prefix tests/js``); without them this
test runs ``npm ci`` itself. Node 20.19+ is required: without ``node`` the test fails (CI has Node 20)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from atrium.app import create_app
from atrium.gateway.providers.fake import FakeChatModel
from atrium.settings import Settings
from tests.api.auth_helpers import add_user
from tests.conftest import ADMIN_KEY, LiveServer, free_port
from tests.node_projects import npm_installed, run_in

pytestmark = pytest.mark.integration

JS_DIR = Path(__file__).resolve().parent.parent / "js"
MIN_TESTS = 11  # client.test.js and react.test.js: none skipped, none missing
USER_EMAIL, USER_PASSWORD = "js-user@example.com", "correct horse battery staple"


async def _access_token(server: LiveServer) -> str:
    """A member's access token, as a browser app holds one after its user signed in."""
    await add_user(cast(Any, server), USER_EMAIL, USER_PASSWORD)
    async with httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.post("/api/v1/auth/token", json={"email": USER_EMAIL, "password": USER_PASSWORD})
    answer.raise_for_status()
    return str(answer.json()["access_token"])


async def test_the_js_sdk_and_use_stream_work_against_atrium(settings: Settings) -> None:
    node, npm, npx = shutil.which("node"), shutil.which("npm"), shutil.which("npx")
    if node is None or npm is None or npx is None:
        pytest.fail("Node.js 20.19+ (node, npm, npx) is needed to run the LangGraph JS SDK tests (tests/js); "
                    "install it, then `make install-dev`.")
    await npm_installed(npm, JS_DIR)
    # Tokens a few milliseconds apart: the suite cancels a run while it streams.
    app = create_app(settings, chat_model=FakeChatModel(token_delay=0.01))
    async with LiveServer(app, free_port()) as server:
        env = {**os.environ, "ATRIUM_URL": server.url, "ATRIUM_KEY": ADMIN_KEY,
               "ATRIUM_USER_TOKEN": await _access_token(server), "CI": "1", "NO_COLOR": "1", "FORCE_COLOR": "0"}
        for fallback in ("LANGGRAPH_API_KEY", "LANGSMITH_API_KEY", "LANGCHAIN_API_KEY"):
            env.pop(fallback, None)  # the SDK's fallback keys: the suite gives Atrium's credentials itself
        code, output = await run_in(JS_DIR, npx, "--no-install", "vitest", "run", env=env)
    assert code == 0, f"vitest failed in {JS_DIR}:\n{output}"
    summary = re.search(r"Tests\s+(\d+) passed \((\d+)\)", output)
    assert summary is not None and summary[1] == summary[2] and int(summary[1]) >= MIN_TESTS, output
