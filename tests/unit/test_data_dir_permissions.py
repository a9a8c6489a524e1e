"""What Atrium writes is readable by the user it runs as and nobody else: the data dir is 0700, the SQLite
database and its -wal/-shm 0600, the vector index and the uploads 0600 files in 0700 directories, after a
start and after an ingestion; a data dir an earlier version left world-readable is tightened at start."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atrium.settings import Settings
from atrium.store.files import private_dir, secure_data_dir, write_private
from tests.api.helpers import ingest
from tests.conftest import make_settings, run_app


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def private(root: Path) -> dict[str, int]:
    """Every path under ``root`` (itself included) whose mode is not 0700 (directory) or 0600 (file)."""
    found = {} if mode(root) == 0o700 else {str(root): mode(root)}
    for path in root.rglob("*"):
        if mode(path) != (0o700 if path.is_dir() else 0o600):
            found[str(path)] = mode(path)
    return found


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # what most services run with: new files 0644, directories 0755
    try:
        yield
    finally:
        os.umask(previous)


async def test_the_data_dir_is_private_after_start_and_after_an_ingestion(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    data = settings.data_dir
    async with run_app(settings) as app:
        assert mode(data) == 0o700
        assert mode(data / "atrium.db") == 0o600
        assert (data / "atrium.db-wal").exists() and mode(data / "atrium.db-wal") == 0o600
        assert (data / "atrium.db-shm").exists() and mode(data / "atrium.db-shm") == 0o600
        assert mode(data / "jwt_secret") == 0o600
        assert mode(settings.uploads_dir) == 0o700
        await ingest(app.client)
        await app.services.knowledge.save_index(force=True)
        assert list(settings.index_dir.rglob("*.hnsw")), "the index was saved"
        assert private(settings.index_dir) == {}
        assert mode(settings.uploads_dir) == 0o700
    assert {str(path): mode(path) for path in data.rglob("*") if mode(path) & 0o077} == {}


async def test_uploaded_files_are_private_while_they_wait_for_their_job(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    seen: dict[str, int] = {}
    async with run_app(settings) as app:
        queue = app.services.jobs
        enqueue = queue.enqueue

        async def recording(tenant: str, kind: str, payload: dict[str, Any], **kwargs: Any) -> str:
            folder = settings.uploads_dir / payload["folder"]  # the upload as the worker will find it
            seen.update(private(folder))
            seen["files"] = len(list(folder.iterdir()))
            return await enqueue(tenant, kind, payload, **kwargs)

        queue.enqueue = recording  # type: ignore[method-assign]
        await ingest(app.client, {"a.md": "# A\nalpha", "b.txt": "beta"})
    assert seen == {"files": 2}


async def test_an_earlier_world_readable_data_dir_is_tightened_at_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    data = settings.data_dir
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    with sqlite3.connect(data / "atrium.db") as connection:  # as SQLite itself creates it: 0644
        connection.execute("PRAGMA journal_mode=WAL")
    (data / "atrium.db-wal").touch()
    old_index = settings.index_dir / "tenant"
    old_index.mkdir(parents=True)
    (old_index / "docs.hnsw").write_bytes(b"old graph")
    (settings.uploads_dir / "pending").mkdir(parents=True)
    (settings.uploads_dir / "pending" / "000-notes.md").write_text("waiting")
    assert mode(data / "atrium.db") == 0o644 and mode(old_index / "docs.hnsw") == 0o644

    secure_data_dir(settings)

    assert mode(data) == 0o700
    assert mode(data / "atrium.db") == 0o600 and mode(data / "atrium.db-wal") == 0o600
    assert private(settings.index_dir) == {} and private(settings.uploads_dir) == {}


def test_a_database_file_outside_the_data_dir_is_created_private(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite+aiosqlite:///{tmp_path / 'db' / 'a.db'}")
    secure_data_dir(settings)
    assert mode(tmp_path / "db" / "a.db") == 0o600 and mode(settings.data_dir) == 0o700


def test_private_helpers_ignore_the_umask(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    private_dir(folder)
    assert mode(tmp_path / "a") == 0o700 and mode(folder) == 0o700
    (folder / "f").write_text("old")
    write_private(folder / "f", b"new")
    write_private(folder / "g", b"new")
    assert mode(folder / "f") == 0o600 and mode(folder / "g") == 0o600 and (folder / "f").read_bytes() == b"new"
