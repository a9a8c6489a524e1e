"""Running a Node.js project's commands from a test: the TypeScript client (clients/typescript) and the JS SDK
suite (tests/js) share them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

RUN_TIMEOUT_S = 300


async def run_in(folder: Path, *command: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """(exit code, stdout and stderr) of ``command`` run in ``folder``; -1 after ``RUN_TIMEOUT_S``."""
    process = await asyncio.create_subprocess_exec(*command, cwd=folder, env=env, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        return -1, f"{' '.join(command)}: no result after {RUN_TIMEOUT_S} s"
    return process.returncode or 0, output.decode(errors="replace")


async def npm_installed(npm: str, folder: Path) -> None:
    """``folder``'s packages, as pinned in its ``package-lock.json`` (``npm ci`` when they are missing or older
    than the lock file, as ``make install-dev`` does); the test fails if that fails."""
    installed, lock = folder / "node_modules" / ".package-lock.json", folder / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime > lock.stat().st_mtime:
        return
    code, output = await run_in(folder, npm, "ci", "--no-audit", "--no-fund")
    if code != 0:
        pytest.fail(f"npm ci in {folder} failed:\n{output}")
