"""Model assembly from chunk files: numeric order, sha256 verified while streaming, atomic, cached."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest

from atrium.errors import ModelUnavailable
from atrium.gateway import local_models
from atrium.gateway.local_models import (
    DEFAULT_LOCAL_MODEL,
    LOCAL_MODELS,
    LocalModelSpec,
    assemble_model,
    find_chunks,
    get_local_model,
)

PARTS = 11  # part10/part11 sort before part2 as text: the join must be numeric


@pytest.fixture
def chunks(tmp_path: Path) -> tuple[Path, bytes]:
    """Eleven chunk files named part1.bin .. part11.bin (unpadded) and the bytes they join to."""
    chunk_dir = tmp_path / "chunks"
    chunk_dir.mkdir()
    joined = b""
    for part in range(1, PARTS + 1):
        data = os.urandom(1000 + part) + f"<part {part}>".encode()
        (chunk_dir / f"part{part}.bin").write_bytes(data)
        joined += data
    return chunk_dir, joined


def spec_for(joined: bytes) -> LocalModelSpec:
    return LocalModelSpec(
        name="tiny-test", file_name="tiny-test.gguf", package_prefix="atrium_missing_pkg_part",
        distribution_prefix="atrium-missing-pkg-part", version="1.0", parts=PARTS,
        sha256=hashlib.sha256(joined).hexdigest(), size=len(joined), context_length=2048, default_n_ctx=1024,
        extra="model-small",
    )  # fmt: skip


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.endswith(".part"))


def test_joins_in_numeric_order_and_verifies(tmp_path: Path, chunks: tuple[Path, bytes]) -> None:
    chunk_dir, joined = chunks
    cache = tmp_path / "cache"
    path = assemble_model(spec_for(joined), cache, chunk_dir=chunk_dir)
    assert path == cache / "tiny-test.gguf"
    assert path.read_bytes() == joined
    assert (cache / "tiny-test.gguf.sha256").exists()
    assert leftovers(cache) == []
    assert path.stat().st_mode & 0o777 == 0o644


def test_wrong_hash_is_rejected_and_leaves_nothing(tmp_path: Path, chunks: tuple[Path, bytes]) -> None:
    chunk_dir, joined = chunks
    cache = tmp_path / "cache"
    bad = replace(spec_for(joined), sha256="0" * 64)
    with pytest.raises(ModelUnavailable, match="sha256 mismatch"):
        assemble_model(bad, cache, chunk_dir=chunk_dir)
    assert not (cache / "tiny-test.gguf").exists()
    assert leftovers(cache) == []


def test_cache_hit_does_not_rehash(tmp_path: Path, chunks: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    chunk_dir, joined = chunks
    spec = spec_for(joined)
    first = assemble_model(spec, tmp_path / "cache", chunk_dir=chunk_dir)

    def forbidden(*_args: object) -> None:
        raise AssertionError("a verified cached file must not be re-read")

    monkeypatch.setattr(local_models, "_sha256_of", forbidden)
    monkeypatch.setattr(local_models, "_join_verified", forbidden)
    assert assemble_model(spec, tmp_path / "cache", chunk_dir=chunk_dir) == first


def test_changed_mtime_rehashes_once(
    tmp_path: Path, chunks: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk_dir, joined = chunks
    spec = spec_for(joined)
    path = assemble_model(spec, tmp_path / "cache", chunk_dir=chunk_dir)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    calls: list[Path] = []
    real = local_models._sha256_of

    def counting(target: Path) -> str:
        calls.append(target)
        return real(target)

    monkeypatch.setattr(local_models, "_sha256_of", counting)
    assert assemble_model(spec, tmp_path / "cache", chunk_dir=chunk_dir) == path
    assert assemble_model(spec, tmp_path / "cache", chunk_dir=chunk_dir) == path
    assert calls == [path]  # re-hashed once, then the refreshed sidecar is trusted again


def test_corrupt_cached_file_is_rebuilt(tmp_path: Path, chunks: tuple[Path, bytes]) -> None:
    chunk_dir, joined = chunks
    spec = spec_for(joined)
    path = assemble_model(spec, tmp_path / "cache", chunk_dir=chunk_dir)
    path.write_bytes(b"X" * len(joined))  # same size, new mtime: the sidecar no longer vouches for it
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))  # (mtime ticks are coarse: make the change certain)
    assert assemble_model(spec, tmp_path / "cache", chunk_dir=chunk_dir).read_bytes() == joined


def test_wrong_total_size_fails_before_hashing(tmp_path: Path, chunks: tuple[Path, bytes]) -> None:
    chunk_dir, joined = chunks
    with pytest.raises(ModelUnavailable, match="bytes"):
        assemble_model(replace(spec_for(joined), size=len(joined) + 1), tmp_path / "cache", chunk_dir=chunk_dir)


def test_missing_chunk_file(tmp_path: Path, chunks: tuple[Path, bytes]) -> None:
    chunk_dir, joined = chunks
    (chunk_dir / "part7.bin").unlink()
    with pytest.raises(ModelUnavailable, match="expected 11 chunk files"):
        assemble_model(spec_for(joined), tmp_path / "cache", chunk_dir=chunk_dir)


def test_missing_packages_are_named_with_the_extra(tmp_path: Path) -> None:
    spec = spec_for(b"abc")
    with pytest.raises(ModelUnavailable) as caught:
        assemble_model(spec, tmp_path / "cache")
    message = caught.value.message
    assert "atrium-missing-pkg-part1==1.0" in message and "atrium-missing-pkg-part11==1.0" in message
    assert "model-small" in message


def test_catalogue() -> None:
    assert DEFAULT_LOCAL_MODEL == "qwen2.5-coder-1.5b"
    assert set(LOCAL_MODELS) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"}
    assert get_local_model("qwen2.5-coder-0.5b").extra == "model-small"
    assert get_local_model("qwen2.5-coder-1.5b").extra == "model-default"
    with pytest.raises(ModelUnavailable, match="Unknown local model"):
        get_local_model("gpt-5")


@pytest.mark.parametrize("name", sorted(LOCAL_MODELS))
def test_installed_chunk_packages_match_the_catalogue(name: str) -> None:
    """Cheap check of the real packages (sizes only; the hash is checked by assembly)."""
    spec = LOCAL_MODELS[name]
    try:
        found = find_chunks(spec)
    except ModelUnavailable:
        pytest.skip(f"{spec.extra} is not installed")
    assert len(found) == spec.parts
    assert [int(path.stem.removeprefix("part")) for path in found] == list(range(1, spec.parts + 1))
    assert sum(path.stat().st_size for path in found) == spec.size
