"""Helpers shared by the benchmark scripts: run ``atrium`` as a user would, on a temp data dir."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

BENCH_KEY = "atr_bench_admin_key_0123456789abcdefghijklmnop"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def atrium_bin() -> str:
    return str(Path(sys.executable).with_name("atrium"))


def atrium_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRIUM_")}
    env.update({"ATRIUM_DATA_DIR": str(data_dir), "ATRIUM_BOOTSTRAP_ADMIN_KEY": BENCH_KEY})
    if "ATRIUM_MODEL_CACHE_DIR" in os.environ:
        env["ATRIUM_MODEL_CACHE_DIR"] = os.environ["ATRIUM_MODEL_CACHE_DIR"]
    env.update(extra)
    return env


def start_serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("ab") as sink:
        process = subprocess.Popen([atrium_bin(), "serve", "--port", str(port)], env=env, stdout=sink,
                                   stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


def wait_ready(process: subprocess.Popen[bytes], url: str, timeout: float = 600) -> float:
    """Seconds until ``GET /ready`` answers 200, counted from now."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError("server not ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
