"""One contract for the ObjectStore port, over the local directory and a real S3-compatible server (moto's,
on loopback, reached over HTTP by aiobotocore)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from atrium.store.objects.factory import build_object_store
from atrium.store.objects.ports import ObjectMissing, ObjectStore, ObjectStoreUnavailable
from atrium.store.objects.settings import ObjectStoreSettings
from tests.s3_fixtures import bucket_keys, s3_settings_for


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    settings = ObjectStoreSettings() if request.param == "local" else request.getfixturevalue("s3_settings")
    made = await build_object_store(settings, uploads_dir=tmp_path / "uploads")
    yield made
    await made.aclose()


async def test_an_object_reads_back_byte_for_byte(store: ObjectStore) -> None:
    data = bytes(range(256)) * 1000 + b"\x00end"
    await store.put("org1/folder/000-a.pdf", data)
    assert await store.get("org1/folder/000-a.pdf") == data


async def test_put_replaces_and_empty_objects_are_kept(store: ObjectStore) -> None:
    await store.put("f/x.txt", b"first")
    await store.put("f/x.txt", b"second")
    await store.put("f/empty.txt", b"")
    assert await store.get("f/x.txt") == b"second"
    assert await store.get("f/empty.txt") == b""


async def test_a_missing_key_is_object_missing(store: ObjectStore) -> None:
    with pytest.raises(ObjectMissing):
        await store.get("nobody/wrote/this.txt")


async def test_keys_lists_one_folder_only(store: ObjectStore) -> None:
    for key in ("a/1/x.txt", "a/1/y.txt", "a/1/sub/z.txt", "a/10/other.txt", "a/2/w.txt"):
        await store.put(key, key.encode())
    assert await store.keys("a/1") == ["a/1/sub/z.txt", "a/1/x.txt", "a/1/y.txt"]
    assert await store.keys("a/3") == []


async def test_delete_folder_removes_that_folder_and_nothing_else(store: ObjectStore) -> None:
    for key in ("t/job1/000-a.md", "t/job1/001-b.md", "t/job10/000-c.md", "t/job2/000-d.md"):
        await store.put(key, b"data")
    assert await store.delete_folder("t/job1") == 2
    with pytest.raises(ObjectMissing):
        await store.get("t/job1/000-a.md")
    assert await store.get("t/job10/000-c.md") == b"data"  # a folder whose name starts the same is another
    assert await store.keys("t/job2") == ["t/job2/000-d.md"]
    assert await store.delete_folder("t/job1") == 0  # deleting again is no error


@pytest.mark.parametrize("key", ["../escape.txt", "a/../../b", "/abs/path", "a//b", "a/./b", "", "a/b/",
                                 "sp ace/x", "a\\b"])
async def test_keys_that_could_escape_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        await store.put(key, b"x")
    with pytest.raises(ValueError):
        await store.get(key)


async def test_the_s3_adapter_keeps_objects_under_its_prefix(s3_endpoint: str, s3_bucket: str) -> None:
    store = await build_object_store(s3_settings_for(s3_endpoint, s3_bucket, prefix="/tenant-files/up/"),
                                     uploads_dir=Path("/nonexistent"))
    try:
        await store.put("o/j/000-a.md", b"hello")
        assert bucket_keys(s3_endpoint, s3_bucket) == ["tenant-files/up/o/j/000-a.md"]
        assert await store.keys("o/j") == ["o/j/000-a.md"]
    finally:
        await store.aclose()


async def test_s3_errors_are_ours_and_never_show_the_secret(s3_endpoint: str, s3_bucket: str) -> None:
    wrong = s3_settings_for(s3_endpoint, "no-such-bucket-here")
    store = await build_object_store(wrong, uploads_dir=Path("/nonexistent"))
    try:
        with pytest.raises(ObjectStoreUnavailable) as refused:
            await store.put("a/b.txt", b"x")
        assert "NoSuchBucket" in refused.value.message
        assert wrong.secret_access_key is not None
        assert wrong.secret_access_key.get_secret_value() not in refused.value.message
    finally:
        await store.aclose()
    down = s3_settings_for("http://127.0.0.1:9", s3_bucket, max_attempts=1, connect_timeout_s=1)
    store = await build_object_store(down, uploads_dir=Path("/nonexistent"))
    try:
        with pytest.raises(ObjectStoreUnavailable, match="could not"):
            await store.get("a/b.txt")
    finally:
        await store.aclose()
