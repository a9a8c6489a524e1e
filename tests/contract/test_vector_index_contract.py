"""The VectorIndex contract, run over every adapter, plus the HNSW adapter's persistence and recall."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import numpy as np
import pytest
from blockbuster import BlockBuster

from atrium.errors import InvalidRequest
from atrium.knowledge.ports import VectorIndex
from atrium.knowledge.vector import HnswVectorIndex
from atrium.knowledge.vector import hnsw as hnsw_module
from atrium.knowledge.vector.pgvector import PgVectorIndex
from atrium.store.engine import Database, build_engine
from tests.exact_vector_index import ExactVectorIndex

DIM = 32
IndexFactory = Callable[[], VectorIndex]


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def random_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).normal(size=(n, dim)))


def clustered_vectors(n: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    """Embedding-like data: points scattered around random cluster centres."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(clusters, dim)))
    members = centres[rng.integers(0, clusters, size=n)]
    return unit(members + rng.normal(scale=0.9 / np.sqrt(dim), size=(n, dim)))


async def files(root: Path, pattern: str) -> list[Path]:
    """Files under ``root`` matching ``pattern`` (listed off the event loop)."""
    return await anyio.to_thread.run_sync(lambda: [path for path in root.glob(pattern) if path.is_file()])


async def remove_sidecars(root: Path) -> None:
    for sidecar in await files(root, "*/*.json"):
        await anyio.Path(sidecar).unlink()


@pytest.fixture(params=["hnsw", "exact", pytest.param("pgvector", marks=pytest.mark.integration)])
def make_index(request: pytest.FixtureRequest, tmp_path: Path) -> IndexFactory:
    if request.param == "hnsw":
        return lambda: HnswVectorIndex(tmp_path / "index", DIM, initial_capacity=16)
    if request.param == "pgvector":
        url = request.getfixturevalue("postgres_url")
        return lambda: PgVectorIndex(Database(build_engine(url)), DIM)
    return lambda: ExactVectorIndex(DIM)


@pytest.fixture
async def index(make_index: IndexFactory) -> AsyncIterator[VectorIndex]:
    made = make_index()
    if isinstance(made, PgVectorIndex):
        await made.ensure_schema()
    yield made
    if isinstance(made, PgVectorIndex):
        await made.db.dispose()


def test_implements_the_port(index: VectorIndex) -> None:
    assert isinstance(index, VectorIndex)
    assert index.dimensions == DIM


async def test_search_finds_the_item_itself_first(index: VectorIndex) -> None:
    vectors = random_vectors(200)
    await index.add("t1", "docs", list(range(200)), vectors)
    for item in (0, 57, 199):
        hits = await index.search("t1", None, vectors[item], 5)
        assert hits[0].id == item
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert len(hits) == 5
        assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


async def test_scores_are_cosine_similarities(index: VectorIndex) -> None:
    vectors = random_vectors(50)
    await index.add("t1", "docs", list(range(50)), vectors)
    hits = await index.search("t1", None, vectors[3], 50)
    expected = {i: float(vectors[i] @ vectors[3]) for i in range(50)}
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.id], abs=1e-4)


async def test_limit_larger_than_the_collection_returns_everything(index: VectorIndex) -> None:
    vectors = random_vectors(7)
    await index.add("t1", "docs", [10, 11, 12, 13, 14, 15, 16], vectors)
    hits = await index.search("t1", None, vectors[0], 100)
    assert sorted(hit.id for hit in hits) == [10, 11, 12, 13, 14, 15, 16]
    assert await index.search("t1", None, vectors[0], 0) == []


async def test_delete_hides_items(index: VectorIndex) -> None:
    vectors = random_vectors(100)
    await index.add("t1", "docs", list(range(100)), vectors)
    await index.delete("t1", "docs", [5, 6, 7, 12345])  # an unknown id is ignored
    for item in (5, 6, 7):
        hits = await index.search("t1", None, vectors[item], 100)
        assert item not in {hit.id for hit in hits}
        assert len(hits) == 97
    assert await index.ids("t1", "docs") == set(range(100)) - {5, 6, 7}


async def test_re_add_after_delete(index: VectorIndex) -> None:
    vectors = random_vectors(101)
    await index.add("t1", "docs", list(range(100)), vectors[:100])
    await index.delete("t1", "docs", [5])
    await index.add("t1", "docs", [5], vectors[100:101])  # the id comes back with a new vector
    hits = await index.search("t1", None, vectors[100], 1)
    assert hits[0].id == 5 and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert 5 not in {hit.id for hit in await index.search("t1", None, vectors[5], 3)}
    assert 5 in await index.ids("t1", "docs")


async def test_delete_then_add_new_ids_then_re_add_old_ones(index: VectorIndex) -> None:
    """New ids may take the slots of deleted ones (HNSW); the old ids must still come back cleanly."""
    vectors = random_vectors(300)
    await index.add("t1", "docs", list(range(100)), vectors[:100])
    await index.delete("t1", "docs", list(range(50)))
    await index.add("t1", "docs", list(range(100, 200)), vectors[100:200])
    await index.add("t1", "docs", list(range(50)), vectors[200:250])
    assert await index.ids("t1", "docs") == set(range(200))
    for item in (0, 49, 150):
        query = vectors[200 + item] if item < 50 else vectors[item]
        hits = await index.search("t1", None, query, 3)
        assert hits[0].id == item
    everything = await index.search("t1", None, vectors[0], 500)
    assert len(everything) == 200 == len({hit.id for hit in everything})


async def test_add_existing_id_replaces_its_vector(index: VectorIndex) -> None:
    vectors = random_vectors(21)
    await index.add("t1", "docs", list(range(20)), vectors[:20])
    await index.add("t1", "docs", [3], vectors[20:21])
    hits = await index.search("t1", None, vectors[20], 30)
    assert hits[0].id == 3
    assert [hit.id for hit in hits].count(3) == 1
    assert len(hits) == 20


async def test_repeated_ids_in_one_batch_keep_the_last_vector(index: VectorIndex) -> None:
    vectors = random_vectors(3)
    await index.add("t1", "docs", [1, 1, 2], vectors)
    assert await index.ids("t1", "docs") == {1, 2}
    assert (await index.search("t1", None, vectors[1], 1))[0].id == 1


async def test_tenant_isolation(index: VectorIndex) -> None:
    vectors = random_vectors(200)
    await index.add("tenant-a", "docs", list(range(100)), vectors[:100])
    await index.add("tenant-b", "docs", list(range(1000, 1100)), vectors[100:])
    for item in range(0, 100, 9):
        hits = await index.search("tenant-b", None, vectors[item], 50)
        assert all(1000 <= hit.id < 1100 for hit in hits)
        assert all(hit.id < 100 for hit in await index.search("tenant-a", ["docs"], vectors[100 + item], 50))
    assert await index.search("tenant-c", None, vectors[0], 10) == []
    assert await index.ids("tenant-c", "docs") == set()
    assert await index.collections("tenant-c") == []
    await index.delete("tenant-b", "docs", list(range(100)))  # tenant A's ids, under tenant B: no effect
    assert await index.ids("tenant-a", "docs") == set(range(100))


async def test_collection_filter(index: VectorIndex) -> None:
    vectors = random_vectors(300)
    await index.add("t1", "docs", list(range(100)), vectors[:100])
    await index.add("t1", "faq", list(range(100, 200)), vectors[100:200])
    await index.add("t1", "notes", list(range(200, 300)), vectors[200:])
    assert await index.collections("t1") == ["docs", "faq", "notes"]
    only_faq = await index.search("t1", ["faq"], vectors[5], 20)
    assert len(only_faq) == 20 and all(100 <= hit.id < 200 for hit in only_faq)
    two = await index.search("t1", ["docs", "notes"], vectors[150], 200)
    assert len(two) == 200 and all(hit.id < 100 or hit.id >= 200 for hit in two)
    assert await index.search("t1", ["missing"], vectors[0], 5) == []
    merged = await index.search("t1", None, vectors[250], 3)
    assert merged[0].id == 250
    assert [hit.score for hit in merged] == sorted((hit.score for hit in merged), reverse=True)


async def test_ids_and_collections_track_changes(index: VectorIndex) -> None:
    vectors = random_vectors(10)
    assert await index.ids("t1", "docs") == set()
    await index.add("t1", "docs", [1, 2, 3], vectors[:3])
    await index.add("t1", "docs", [3, 4], vectors[3:5])
    assert await index.ids("t1", "docs") == {1, 2, 3, 4}
    await index.delete("t1", "docs", [1, 2, 3, 4])
    assert await index.ids("t1", "docs") == set()
    assert await index.collections("t1") == []


async def test_bad_shapes_are_refused(index: VectorIndex) -> None:
    with pytest.raises(InvalidRequest):
        await index.add("t1", "docs", [1, 2], random_vectors(3))
    with pytest.raises(InvalidRequest):
        await index.add("t1", "docs", [1], random_vectors(1, dim=DIM + 1))
    with pytest.raises(InvalidRequest):
        await index.add("t1", "docs", [-1], random_vectors(1))
    with pytest.raises(InvalidRequest):
        await index.search("t1", None, random_vectors(1, dim=DIM - 1)[0], 5)
    with pytest.raises(InvalidRequest):
        await index.add("", "docs", [1], random_vectors(1))


async def test_concurrent_adds_and_searches(index: VectorIndex) -> None:
    vectors = random_vectors(2000)
    await index.add("t1", "docs", list(range(100)), vectors[:100])
    found: list[int] = []

    async def writer(start: int) -> None:
        for offset in range(start, 2000, 200):
            await index.add("t1", "docs", list(range(offset, offset + 100)), vectors[offset:offset + 100])

    async def reader() -> None:
        for item in range(50):
            hits = await index.search("t1", None, vectors[item], 1)
            found.append(hits[0].id)

    async with anyio.create_task_group() as group:
        group.start_soon(writer, 100)
        group.start_soon(writer, 200)
        group.start_soon(reader)
        group.start_soon(reader)
    assert sorted(found) == sorted(list(range(50)) * 2)
    assert await index.ids("t1", "docs") == set(range(2000))


async def test_operations_do_not_block_the_event_loop(index: VectorIndex, blockbuster: BlockBuster) -> None:
    vectors = random_vectors(300)
    await index.add("t1", "docs", list(range(300)), vectors)
    await index.delete("t1", "docs", [1])
    assert (await index.search("t1", None, vectors[0], 3))[0].id == 0
    await index.ids("t1", "docs")
    await index.collections("t1")
    await index.save()


# -- HNSW: persistence, file safety, recall --------------------------------------------------------


async def test_hnsw_persistence_round_trip(tmp_path: Path) -> None:
    vectors = random_vectors(600)
    first = HnswVectorIndex(tmp_path, DIM, initial_capacity=16)
    await first.add("t1", "docs", list(range(500)), vectors[:500])
    await first.add("t1", "faq", list(range(500, 600)), vectors[500:])
    await first.add("t2", "docs", list(range(600, 700)), vectors[:100])
    await first.delete("t1", "docs", [3, 4])
    await first.save()
    queries = [vectors[i] for i in (0, 3, 250, 550)]
    before = [await first.search("t1", None, query, 10) for query in queries]

    second = HnswVectorIndex(tmp_path, DIM)
    assert await second.collections("t1") == ["docs", "faq"]
    assert await second.ids("t1", "docs") == set(range(500)) - {3, 4}
    assert await second.ids("t2", "docs") == set(range(600, 700))
    after = [await second.search("t1", None, query, 10) for query in queries]
    assert [[hit.id for hit in hits] for hits in after] == [[hit.id for hit in hits] for hits in before]
    for old, new in zip(before, after, strict=True):
        assert [hit.score for hit in new] == pytest.approx([hit.score for hit in old], abs=1e-5)
    # The reloaded graph still accepts deletes, re-adds and new ids.
    await second.add("t1", "docs", [3, 900], vectors[[3, 599]])
    assert (await second.search("t1", ["docs"], vectors[3], 1))[0].id == 3
    await second.delete("t1", "docs", [0])
    await second.save()
    third = HnswVectorIndex(tmp_path, DIM)
    assert await third.ids("t1", "docs") == (set(range(500)) - {0, 4}) | {900}


async def test_hnsw_save_without_changes_rewrites_nothing(tmp_path: Path) -> None:
    index = HnswVectorIndex(tmp_path, DIM)
    await index.add("t1", "docs", [1, 2], random_vectors(2))
    await index.save()
    (graph,) = await files(tmp_path, "*/*.hnsw")
    stamp = (await anyio.Path(graph).stat()).st_mtime_ns
    await anyio.sleep(0.01)
    await index.save()
    assert (await anyio.Path(graph).stat()).st_mtime_ns == stamp


async def test_hnsw_recovers_deleted_ids_without_a_matching_sidecar(tmp_path: Path) -> None:
    vectors = random_vectors(100)
    index = HnswVectorIndex(tmp_path, DIM)
    await index.add("t1", "docs", list(range(100)), vectors)
    await index.delete("t1", "docs", [10, 20])
    await index.save()
    await remove_sidecars(tmp_path)  # as if the process died between the two renames of a first save
    await anyio.Path(tmp_path / "t1" / "docs.hnsw.deadbeef.tmp").write_bytes(b"half-written")
    reloaded = HnswVectorIndex(tmp_path, DIM)
    assert await reloaded.ids("t1", "docs") == set(range(100)) - {10, 20}
    assert not await files(tmp_path, "*/*.tmp")


async def test_hnsw_names_cannot_escape_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "index"
    index = HnswVectorIndex(root, DIM)
    names = [("../../evil", "../x"), ("a/b", "c\\d"), (".", ".."), ("t1", "Ünïcode collection")]
    for number, (tenant, collection) in enumerate(names):
        await index.add(tenant, collection, [number], random_vectors(1, seed=number))
    await index.save()
    written = await files(tmp_path, "**/*")
    assert written and all(path.resolve().is_relative_to(root.resolve()) for path in written)
    assert all(path.parent.parent == root for path in written)
    reloaded = HnswVectorIndex(root, DIM)
    for number, (tenant, collection) in enumerate(names):
        assert await reloaded.collections(tenant) == [collection]
        assert await reloaded.ids(tenant, collection) == {number}


@pytest.mark.parametrize("sidecars", [True, False], ids=["sidecar", "header-only"])
async def test_hnsw_sets_aside_an_index_of_other_dimensions(tmp_path: Path, sidecars: bool) -> None:
    """After a change of embedding model the old shard is never loaded: set aside, the collection starts
    empty in the new width (knowledge/reembed.py fills it)."""
    index = HnswVectorIndex(tmp_path, DIM)
    await index.add("t1", "docs", [1], random_vectors(1))
    await index.save()
    if not sidecars:
        await remove_sidecars(tmp_path)  # the graph file header alone must reveal the mismatch
    wider = HnswVectorIndex(tmp_path, DIM * 2)
    assert await wider.ids("t1", "docs") == set()
    assert await wider.search("t1", None, random_vectors(1, dim=DIM * 2)[0], 5) == []
    await wider.add("t1", "docs", [2], random_vectors(1, dim=DIM * 2))
    await wider.save()
    assert await HnswVectorIndex(tmp_path, DIM * 2).ids("t1", "docs") == {2}
    assert [path.name for path in await files(tmp_path, f"**/*.{DIM}d-*")]  # kept aside, not deleted


class _Crash(Exception):
    """Stands for the process dying: the adapter's clean-up handlers do not catch it."""


@pytest.mark.parametrize("crash_at", ["writing the graph", "before the renames", "between the renames"])
@pytest.mark.parametrize("change", ["delete only", "delete and add"])
async def test_hnsw_crash_during_save_leaves_the_old_or_the_new_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: str, change: str) -> None:
    vectors = random_vectors(300)
    index = HnswVectorIndex(tmp_path, DIM)
    await index.add("t1", "docs", list(range(200)), vectors[:200])
    await index.save()
    old_state = set(range(200))
    await index.delete("t1", "docs", list(range(20)))
    if change == "delete and add":
        await index.add("t1", "docs", list(range(200, 300)), vectors[200:])
    new_state = await index.ids("t1", "docs")

    real_replace, real_fsync = os.replace, hnsw_module._fsync
    replaced: list[str] = []

    def fsync(path: Path) -> None:
        if crash_at == "writing the graph" and path.name.startswith("docs.hnsw."):
            with path.open("r+b") as file:  # the tail of the graph never reached the disk
                file.truncate(path.stat().st_size // 2)
            raise _Crash
        real_fsync(path)

    def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        if crash_at == "before the renames" or (crash_at == "between the renames" and replaced):
            raise _Crash
        real_replace(source, target)
        replaced.append(str(target))

    monkeypatch.setattr(hnsw_module, "_fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_Crash):
        await index.save()
    monkeypatch.undo()

    reloaded = HnswVectorIndex(tmp_path, DIM)
    expected = new_state if crash_at == "between the renames" else old_state
    assert await reloaded.ids("t1", "docs") == expected
    for item in sorted(expected)[::37]:
        query = vectors[item]
        assert (await reloaded.search("t1", None, query, 1))[0].id == item
    assert not await files(tmp_path, "*/*.corrupt-*")


_SAVER = textwrap.dedent("""
    import sys
    from pathlib import Path

    import anyio
    import numpy as np

    from atrium.knowledge.vector import HnswVectorIndex

    async def main() -> None:
        rng = np.random.default_rng(0)
        index = HnswVectorIndex(Path(sys.argv[1]), 128, ef_construction=32, num_threads=2)
        vectors = rng.normal(size=(12000, 128)).astype(np.float32)
        await index.add("t1", "docs", list(range(12000)), vectors)
        next_id = 12000
        while True:  # saves dominate the loop, so the kill mostly lands inside one
            await index.save()
            print("saved", flush=True)
            await index.delete("t1", "docs", [next_id - 12000])
            await index.add("t1", "docs", [next_id], rng.normal(size=(1, 128)).astype(np.float32))
            next_id += 1

    anyio.run(main)
""")


def test_hnsw_kill_during_save_leaves_a_loadable_index(tmp_path: Path) -> None:
    """SIGKILL the process at random points of a save loop; every time, the files on disk must load."""
    rng = np.random.default_rng(1)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    for attempt in range(3):
        directory = tmp_path / str(attempt)
        process = subprocess.Popen([sys.executable, "-c", _SAVER, str(directory)], stdout=subprocess.PIPE,
                                   env=env, text=True)
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "saved"
            time.sleep(float(rng.uniform(0.0, 0.4)))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        ids = anyio.run(HnswVectorIndex(directory, 128).ids, "t1", "docs")
        assert len(ids) == 12000
        assert not list(directory.glob("*/*.corrupt-*"))


async def test_hnsw_recall_against_exact_search() -> None:
    dim, n = 384, 5000
    vectors = clustered_vectors(n, dim, clusters=50, seed=7)
    hnsw, exact = HnswVectorIndex(None, dim), ExactVectorIndex(dim)
    for index in (hnsw, exact):
        await index.add("t1", "docs", list(range(n)), vectors)
    rng = np.random.default_rng(8)
    picks = rng.choice(n, size=200, replace=False)
    queries = unit(vectors[picks] + rng.normal(scale=0.5 / np.sqrt(dim), size=(200, dim)))
    overlap = 0
    for query in queries:
        truth = {hit.id for hit in await exact.search("t1", None, query, 10)}
        found = {hit.id for hit in await hnsw.search("t1", None, query, 10)}
        overlap += len(truth & found)
    recall = overlap / (10 * len(queries))
    assert recall >= 0.95, recall


async def test_hnsw_search_survives_heavy_deletion() -> None:
    vectors = random_vectors(400)
    index = HnswVectorIndex(None, DIM, ef_search=4, initial_capacity=16)
    await index.add("t1", "docs", list(range(400)), vectors)
    await index.delete("t1", "docs", list(range(390)))
    hits = await index.search("t1", None, vectors[0], 10)
    assert sorted(hit.id for hit in hits) == list(range(390, 400))
