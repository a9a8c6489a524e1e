"""The TypeScript client (``clients/typescript``) is generated from the app's current OpenAPI document and
type-checks with its React example.

The client's types (``src/schema.d.ts``) are generated again here with the pinned openapi-typescript and the
flags of the package's ``generate`` script, from ``create_app(...).openapi()``; a committed file that differs
fails the test (run ``make client``), so the client never drifts from the API. Then ``tsc --noEmit`` checks the
client and the example, and, so that the check cannot pass vacuously, a call to a path the API does not have
must fail it.

``make install-dev`` installs the pinned packages (``npm ci --prefix clients/typescript``); without them this
test runs ``npm ci`` itself. Without Node.js 20.19+ it fails."""

from __future__ import annotations

import asyncio
import difflib
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from atrium.app import create_app
from tests.conftest import make_settings
from tests.node_projects import npm_installed, run_in

pytestmark = pytest.mark.integration

CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "typescript"
GENERATED = CLIENT_DIR / "src" / "schema.d.ts"


async def _run(*command: str) -> tuple[int, str]:
    return await run_in(CLIENT_DIR, *command)


@pytest.fixture(scope="module")
def npx() -> str:
    node, npm, npx = shutil.which("node"), shutil.which("npm"), shutil.which("npx")
    if node is None or npm is None or npx is None:
        pytest.fail("Node.js 20.19+ (node, npm, npx) is needed to build the TypeScript client (clients/typescript); "
                    "install it, then `make install-dev`.")
    asyncio.run(npm_installed(npm, CLIENT_DIR))
    return npx


def _generate_command(spec: Path, output: Path) -> list[str]:
    """The package's ``generate`` script with its input and output swapped for ours (same flags)."""
    script = json.loads((CLIENT_DIR / "package.json").read_text())["scripts"]["generate"].split()
    assert script[:2] == ["openapi-typescript", "openapi.json"] and script[-2:] == ["--output", "src/schema.d.ts"], \
        script
    return [script[0], str(spec), *script[2:-1], str(output)]


async def test_the_committed_client_is_generated_from_the_current_api(npx: str, tmp_path: Path) -> None:
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(create_app(make_settings(tmp_path / "data")).openapi(), indent=2))
    fresh = tmp_path / "schema.d.ts"
    code, output = await _run(npx, "--no-install", *_generate_command(spec, fresh))
    assert code == 0, output
    assert "/api/v1/chat/ask" in fresh.read_text()
    if fresh.read_text() != GENERATED.read_text():
        diff = difflib.unified_diff(GENERATED.read_text().splitlines(), fresh.read_text().splitlines(),
                                    "committed", "generated", lineterm="", n=1)
        pytest.fail("clients/typescript/src/schema.d.ts is not what the current API generates: run `make client`"
                    " and commit it.\n" + "\n".join(list(diff)[:60]))


async def test_the_client_and_its_example_type_check(npx: str) -> None:
    code, output = await _run(npx, "--no-install", "tsc", "--noEmit", "-p", ".")
    assert code == 0, f"tsc --noEmit in {CLIENT_DIR}:\n{output}"

    # The same check over one more file that calls a path the API does not have: it must fail, and for that.
    with tempfile.TemporaryDirectory(dir=CLIENT_DIR, prefix=".tscheck-") as scratch:
        folder = Path(scratch)
        (folder / "wrong.ts").write_text(
            'import { createAtriumClient } from "../src";\n'
            'const client = createAtriumClient({ baseUrl: "http://127.0.0.1:8000", credential: "atr_x" });\n'
            'export const answer = client.POST("/api/v1/chat/nope", { body: { message: "hi" } });\n')
        config = folder / "tsconfig.json"
        config.write_text(json.dumps({"extends": "../tsconfig.json", "include": ["../src", "../example", "wrong.ts"]}))
        code, output = await _run(npx, "--no-install", "tsc", "--noEmit", "-p", str(config))
    assert code != 0 and "wrong.ts" in output and "/api/v1/chat/nope" in output, output
