"""What Atrium keeps on disk is readable by the user it runs as, and by nobody else.

The data dir is created 0700. The SQLite database and its ``-wal``/``-shm``/``-journal`` files (SQLite gives
those the database file's mode), the vector index, the uploads waiting for ingestion and the local model
server's logs are 0600 files in 0700 directories. ``secure_data_dir`` runs at every start (``migrate`` and
``build_services``): it creates what is missing that way and tightens what an earlier version left group-
or world-readable. Model files (``models/``) are not secrets and keep their mode.

Everything here is blocking file-system work: call it in a worker thread.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Protocol

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> None:
    """Create ``path`` and each missing parent with mode 0700 (existing ones are left as they are)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:
            continue  # made meanwhile by another process
        os.chmod(folder, PRIVATE_DIR)  # exactly 0700, whatever the umask


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new or replaced file that only this user can read (0600 from its creation)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.chmod(path, PRIVATE_FILE)  # an existing file keeps its mode through O_CREAT


def tighten(path: Path, mode: int) -> None:
    """Take away from ``path`` every permission bit ``mode`` lacks (nothing if it is missing). A file this
    user does not own cannot be changed: a warning, not a failure."""
    try:
        current = stat.S_IMODE(os.lstat(path).st_mode)
    except FileNotFoundError:
        return
    if current & ~mode:
        try:
            os.chmod(path, current & mode)
        except PermissionError:
            log.warning("%s is readable by other users (mode %o) and cannot be changed by this user", path, current)


def tighten_tree(root: Path) -> None:
    """``root`` and every directory under it 0700, every file 0600 (symbolic links are not followed)."""
    if not root.is_dir():
        return
    tighten(root, PRIVATE_DIR)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            tighten(Path(folder, name), PRIVATE_DIR)
        for name in files:
            tighten(Path(folder, name), PRIVATE_FILE)


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (``None`` for another database or an in-memory one)."""
    parsed = make_url(url)
    database = parsed.database
    if not parsed.drivername.startswith("sqlite") or not database or database == ":memory:" \
            or database.startswith("file:") or parsed.query.get("mode") == "memory":
        return None
    return Path(database)


def private_sqlite_file(path: Path) -> None:
    """Create the database file 0600 before SQLite does (it would use 0644), or tighten it and the files
    beside it. An empty file is a valid new database."""
    if not path.parent.is_dir():
        return  # SQLite refuses it too, with its own error
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    for file in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_COMPANIONS)):
        tighten(file, PRIVATE_FILE)


class DataPlaces(Protocol):
    """Where Atrium keeps its files (``Settings`` is one)."""

    @property
    def data_dir(self) -> Path: ...
    @property
    def uploads_dir(self) -> Path: ...
    @property
    def index_dir(self) -> Path: ...
    @property
    def resolved_database_url(self) -> str: ...
    @property
    def resolved_migration_database_url(self) -> str: ...


def secure_data_dir(settings: DataPlaces) -> None:
    """The data dir 0700, the SQLite database 0600, and what is already in ``index/``, ``uploads/`` and
    ``logs/`` private (see the module's docstring)."""
    private_dir(settings.data_dir)
    tighten(settings.data_dir, PRIVATE_DIR)
    private_dir(settings.uploads_dir)
    for tree in (settings.uploads_dir, settings.index_dir, settings.data_dir / "logs"):
        tighten_tree(tree)
    for url in {settings.resolved_database_url, settings.resolved_migration_database_url}:
        database = sqlite_file(url)
        if database is not None:
            private_sqlite_file(database)
