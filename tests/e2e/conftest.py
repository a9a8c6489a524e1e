"""Start the real ``atrium serve`` process on a temp data dir with the real local model (0.5B) and the real
ONNX embedder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY, free_port

E2E_MODEL = "qwen2.5-coder-0.5b"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One assembled model file for the whole session (assembling it is the slow part)."""
    shared = os.environ.get("TEST_MODEL_CACHE_DIR")
    return Path(shared) if shared else tmp_path_factory.mktemp("models")


def atrium_env(data_dir: Path, model_cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRIUM_")}
    env.update({
        "ATRIUM_DATA_DIR": str(data_dir),
        "ATRIUM_MODEL_CACHE_DIR": str(model_cache),
        "ATRIUM_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "ATRIUM_CHAT__LOCAL_MODEL": E2E_MODEL,
        "ATRIUM_CHAT__MAX_TOKENS": "120",
        "ATRIUM_CHAT__TEMPERATURE": "0",
        "ATRIUM_KNOWLEDGE__RECONCILE_INTERVAL_S": "0.5",
    })
    env.update(extra)
    return env


def atrium_bin() -> str:
    return str(Path(sys.executable).with_name("atrium"))


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    env: dict[str, str]
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=300)

    def wait_ready(self, timeout: float = 300) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready after {timeout}s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_server(data_dir: Path, model_cache: Path, **extra: str) -> ServerProcess:
    port = free_port()
    env = atrium_env(data_dir, model_cache, **extra)
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"serve-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([atrium_bin(), "serve", "--port", str(port)], env=env, stdout=sink,
                                   stderr=subprocess.STDOUT)
    return ServerProcess(process, f"http://127.0.0.1:{port}", env, log)


@pytest.fixture
def serve(tmp_path: Path, model_cache: Path) -> Iterator[ServerProcess]:
    server = start_server(tmp_path / "data", model_cache)
    try:
        yield server
    finally:
        server.stop()
