"""llama.cpp's OpenAI-compatible server in a supervised child process (the bundled local model).

llama.cpp can hard-abort its process (``GGML_ASSERT``) on a bad batch or context setting, so it never runs
inside the API process. :class:`ManagedLlamaServer` assembles the model file if needed, starts
``python -m llama_cpp.server`` on a free loopback port, waits until ``/v1/models`` lists the model, restarts
it with backoff whenever it exits, and stops it with SIGTERM then SIGKILL. The child also dies with its
parent when the parent is killed outright: a tiny launcher sets ``PR_SET_PDEATHSIG`` (Linux) or polls
``getppid`` (elsewhere) and then runs the server module. (``preexec_fn`` would do the same, but it is
unsafe in a process that runs threads.)

:class:`LocalChatModel` (``atrium.gateway.providers.local_llama``) is the ChatModel on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from atrium.errors import ModelUnavailable
from atrium.gateway.local_models import LOCAL_MODELS, assemble_model

logger = logging.getLogger(__name__)

# Runs in the child: bind its life to the parent's, then run ``llama_cpp.server`` with the remaining argv.
_LAUNCHER = """\
import ctypes, os, runpy, signal, sys, threading, time
parent = int(sys.argv.pop(1))
try:
    bound = ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL) == 0  # PR_SET_PDEATHSIG
except (AttributeError, OSError):
    bound = False
if os.getppid() != parent:
    os._exit(0)
if not bound:
    def _watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)
    threading.Thread(target=_watch, daemon=True).start()
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""

_MAX_LOG_BYTES = 10 * 1024 * 1024
_HEALTHY_RUN_RESETS_BACKOFF_S = 60.0
_DEATH_GRACE_S = 0.5


@dataclass(frozen=True, slots=True)
class LlamaServerConfig:
    """How to run the llama.cpp server.

    ``model`` is the alias the server answers to; unless ``model_path`` points at a GGUF file, it is also
    the catalogue name assembled into ``cache_dir`` (:mod:`atrium.gateway.local_models`). ``n_ctx=None``
    takes the catalogue default. The thread defaults are the settings measured best on a 2-core CPU: one
    decode thread, two prompt threads, ``OMP_WAIT_POLICY=PASSIVE`` (busy-waiting OpenMP threads collapse
    decode speed there).
    """

    model: str
    cache_dir: Path
    log_dir: Path
    model_path: Path | None = None
    n_ctx: int | None = None
    n_threads: int = 1
    n_threads_batch: int = 2
    n_batch: int = 512
    n_ubatch: int = 512
    host: str = "127.0.0.1"
    startup_timeout_s: float = 120.0
    stop_timeout_s: float = 5.0
    restart_backoff_s: float = 0.5
    restart_backoff_max_s: float = 30.0
    python: str = field(default_factory=lambda: sys.executable)
    extra_args: tuple[str, ...] = ()

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"llama-server-{self.model}.log"

    @property
    def context_size(self) -> int:
        if self.n_ctx is not None:
            return self.n_ctx
        spec = LOCAL_MODELS.get(self.model)
        return spec.default_n_ctx if spec is not None else 4096

    def server_args(self, model_path: Path, port: int) -> list[str]:
        """The ``llama_cpp.server`` command-line flags (llama-cpp-python 0.3.36 spelling)."""
        return [
            "--model", str(model_path),
            "--model_alias", self.model,
            "--host", self.host,
            "--port", str(port),
            "--n_ctx", str(self.context_size),
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads_batch),
            "--n_batch", str(self.n_batch),
            "--n_ubatch", str(self.n_ubatch),
            # A new request must queue behind a running stream, not cut it off with a bare [DONE].
            "--interrupt_requests", "False",
            # Logits for every prompt position only serve prompt logprobs; skip that work.
            "--logits_all", "False",
            "--use_mlock", "False",
            *self.extra_args,
        ]  # fmt: skip

    def command(self, model_path: Path, port: int, parent_pid: int) -> list[str]:
        return [self.python, "-c", _LAUNCHER, str(parent_pid), *self.server_args(model_path, port)]


class ManagedLlamaServer:
    """Supervises one ``llama_cpp.server`` child process.

    A background supervisor (started by ``start``, or lazily by ``wait_ready``/``ensure_started``)
    launches the server and relaunches it whenever it exits, with exponential backoff. ``wait_ready``
    waits for a launch in progress and fails fast with the last launch error while the supervisor backs
    off after a failed launch. ``aclose`` stops everything. ``client`` (only used for the readiness
    probe) is closed by ``aclose`` only when this object created it.
    """

    def __init__(self, config: LlamaServerConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.client = client or httpx.AsyncClient()
        self.restarts = 0
        self._owns_client = client is None
        self._model_path = config.model_path
        self._process: asyncio.subprocess.Process | None = None
        self._port: int | None = None
        self._healthy = False
        self._launching = False
        self._last_error: ModelUnavailable | None = None
        self._changed = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def root_url(self) -> str:
        if self._port is None:
            raise ModelUnavailable("The local model server is not running.", retryable=True)
        return f"http://{self.config.host}:{self._port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-format base URL (``.../v1``) of the current server process."""
        return f"{self.root_url}/v1"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_healthy(self) -> bool:
        """True while the current process has passed its readiness probe and has not exited."""
        process = self._process
        return self._healthy and process is not None and process.returncode is None

    def ensure_started(self) -> None:
        """Start the supervisor if it is not running (non-blocking)."""
        if self._closing or (self._supervisor is not None and not self._supervisor.done()):
            return
        self._launching = True
        self._supervisor = asyncio.create_task(self._supervise(), name=f"llama-server:{self.config.model}",
                                               context=contextvars.Context())  # outlives the request that starts it

    async def start(self) -> None:
        """Start the server and wait until it serves; ``ModelUnavailable`` if the first launch fails."""
        await self.wait_ready(self.config.startup_timeout_s + 60.0)

    async def wait_ready(self, timeout: float) -> str:
        """The base URL once the server is healthy. Raises ``ModelUnavailable``: the last launch error if
        the last launch failed, or a retryable one when no launch finished within ``timeout``."""
        self.ensure_started()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if self._closing:
                        raise ModelUnavailable("The local model server is closed.")
                    if self.is_healthy():
                        return self.base_url
                    if self._last_error is not None and not self._launching:
                        raise ModelUnavailable(self._last_error.message, retryable=True)
                    await self._changed.wait()
        except TimeoutError:
            raise ModelUnavailable(
                f"The local model server was not ready within {timeout:g} s.", retryable=True
            ) from None

    async def exited(self, pid: int | None, grace: float = _DEATH_GRACE_S) -> bool:
        """True if process ``pid`` is gone (exited, maybe already replaced), waiting up to ``grace``
        seconds for its exit to be noticed."""
        process = self._process
        if process is None or process.pid != pid:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), grace)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Stop supervising and terminate the process (SIGTERM, then SIGKILL after ``stop_timeout_s``)."""
        self._closing = True
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        await self._terminate()
        self._notify()
        if self._owns_client:
            await self.client.aclose()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._closing:
            try:
                process = self._process
                if process is not None:  # running: wait for it to exit, then relaunch after a backoff
                    started = loop.time()
                    code = await process.wait()
                    self._healthy = False
                    self._process = None
                    ran = loop.time() - started
                    failures = 1 if ran > _HEALTHY_RUN_RESETS_BACKOFF_S else failures + 1
                    self._launching = True  # requests wait for the relaunch rather than fail
                    self._notify()
                    logger.warning(
                        "llama.cpp server (pid %s) exited with code %s after %.1f s; restarting (log: %s)",
                        process.pid, code, ran, self.config.log_path,
                    )  # fmt: skip
                if failures:
                    await asyncio.sleep(
                        min(self.config.restart_backoff_s * 2 ** (failures - 1), self.config.restart_backoff_max_s)
                    )
                self._launching = True
                self._notify()
                try:
                    await self._launch()
                    if self._last_error is not None or process is not None:
                        self.restarts += 1
                    self._last_error = None
                except ModelUnavailable as exc:
                    failures += 1
                    self._last_error = exc
                    logger.error("llama.cpp server launch failed (attempt %d): %s", failures, exc.message)
                finally:
                    self._launching = False
                    self._notify()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep supervising whatever happens
                failures += 1
                self._last_error = ModelUnavailable(f"The local model server failed: {exc!r}")
                logger.exception("llama.cpp server supervisor error")

    async def _launch(self) -> None:
        """Resolve the model file, spawn a process on a free port, wait for its readiness probe."""
        await self._terminate()
        config = self.config
        if self._model_path is None:
            self._model_path = await asyncio.to_thread(assemble_model, config.model, config.cache_dir)
        port, log, log_offset = await asyncio.to_thread(_prepare_launch, config.host, config.log_path)
        spawn = asyncio.ensure_future(self._spawn(self._model_path, port, log))
        try:
            # Shielded so that a cancellation arriving mid-spawn cannot orphan the new process.
            process = await asyncio.shield(spawn)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                self._process = await spawn
                await self._terminate()
            raise
        self._process, self._port = process, port
        logger.info("llama.cpp server starting: pid %s, port %s, model %s", process.pid, port, config.model)
        try:
            await self._wait_serving(process, log_offset)
        except BaseException:
            await self._terminate()
            raise
        self._healthy = True

    async def _spawn(self, model_path: Path, port: int, log: IO[bytes]) -> asyncio.subprocess.Process:
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
        try:
            return await asyncio.create_subprocess_exec(
                *self.config.command(model_path, port, os.getpid()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,  # terminal signals go to the API, which stops the server itself
            )
        except OSError as exc:
            raise ModelUnavailable(f"Cannot start the local model server: {exc}") from exc
        finally:
            await asyncio.to_thread(log.close)

    async def _wait_serving(self, process: asyncio.subprocess.Process, log_offset: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.startup_timeout_s
        url = f"{self.root_url}/v1/models"
        while True:
            if process.returncode is not None:
                output = await asyncio.to_thread(_log_excerpt, self.config.log_path, log_offset)
                raise ModelUnavailable(
                    f"The local model server exited with code {process.returncode} while starting "
                    f"(log {self.config.log_path}):\n{output}"
                )
            if loop.time() > deadline:
                raise ModelUnavailable(
                    f"The local model server was not ready within {self.config.startup_timeout_s:g} s "
                    f"(log {self.config.log_path})."
                )
            with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError):
                response = await self.client.get(url, timeout=2.0)
                if response.status_code == 200:
                    ids = {model.get("id") for model in response.json().get("data", [])}
                    if self.config.model in ids:
                        return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), 0.2)

    async def _terminate(self) -> None:
        self._healthy = False
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        for sig, wait in ((signal.SIGTERM, self.config.stop_timeout_s), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)  # it leads its own session: the group holds only the server
            try:
                await asyncio.wait_for(process.wait(), wait)
                return
            except TimeoutError:
                continue


def _prepare_launch(host: str, log_path: Path) -> tuple[int, IO[bytes], int]:
    """Pick a free port, open the log (rotated past 10 MB) and return where this launch's output starts.
    Blocking: runs in a thread."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if log_path.stat().st_size > _MAX_LOG_BYTES:
            os.replace(log_path, log_path.with_name(log_path.name + ".1"))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port = int(probe.getsockname()[1])
    log = log_path.open("ab")
    log.write(f"--- atrium: starting llama.cpp server on port {port} ---\n".encode())
    log.flush()
    return port, log, log.tell()


def _log_excerpt(path: Path, offset: int, limit: int = 700) -> str:
    """What the server printed since ``offset``: its beginning and its end when it is long (the cause of a
    failed start is often printed first, followed by a long usage text)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return text if len(text) <= 2 * limit else f"{text[:limit]}\n[...]\n{text[-limit:]}"
