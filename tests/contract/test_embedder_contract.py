"""The Embedder contract, run over every adapter, plus the ONNX adapter's own options."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import anyio
import numpy as np
import pytest
from blockbuster import BlockBuster
from tokenizers import Encoding

from atrium.errors import InvalidRequest
from atrium.gateway.ports import Embedder, EmbedKind
from atrium.knowledge.embedders import HashEmbedder, OnnxEmbedder
from atrium.knowledge.embedders.onnx_minilm import bundled_model_paths

# Lengths vary on purpose: the ONNX adapter sorts by length and runs small batches, so order must survive.
TEXTS = [
    "How do I reset my password?",
    "hello",
    "The installation guide explains how to build the project from source on Linux and macOS, "
    "including the compiler flags and the optional GPU support.",
    "",
    "Steps to change your account password",
    "Paris is the capital of France.",
    "one two three four five six seven eight nine ten eleven twelve",
    "The cat sat on the mat",
    "Vector indexes trade a little recall for a lot of speed.",
]


@pytest.fixture(scope="session")
def onnx_embedder() -> OnnxEmbedder:
    # A batch size below len(TEXTS) so that batching and re-ordering are exercised.
    return OnnxEmbedder(batch_size=4)


@pytest.fixture(params=["hash", "onnx"])
def embedder(request: pytest.FixtureRequest, onnx_embedder: OnnxEmbedder) -> Iterator[Embedder]:
    yield HashEmbedder(dimensions=256) if request.param == "hash" else onnx_embedder


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_implements_the_port(embedder: Embedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.name
    assert isinstance(embedder.dimensions, int) and embedder.dimensions > 0


async def test_shape_and_dtype(embedder: Embedder) -> None:
    vectors = await embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), embedder.dimensions)
    assert vectors.dtype == np.float32


async def test_vectors_are_unit_length(embedder: Embedder) -> None:
    vectors = await embedder.embed(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(vectors).all()


async def test_deterministic(embedder: Embedder) -> None:
    first = await embedder.embed(TEXTS)
    second = await embedder.embed(TEXTS)
    np.testing.assert_array_equal(first, second)


async def test_batch_equals_one_by_one_in_input_order(embedder: Embedder) -> None:
    batch = await embedder.embed(TEXTS)
    single = np.vstack([await embedder.embed([text]) for text in TEXTS])
    np.testing.assert_allclose(batch, single, atol=1e-4)
    reversed_batch = await embedder.embed(TEXTS[::-1])
    np.testing.assert_allclose(reversed_batch[::-1], batch, atol=1e-4)


async def test_empty_input(embedder: Embedder) -> None:
    vectors = await embedder.embed([])
    assert vectors.shape == (0, embedder.dimensions)
    assert vectors.dtype == np.float32


async def test_distinct_texts_get_distinct_vectors(embedder: Embedder) -> None:
    vectors = await embedder.embed(TEXTS)
    similarities = vectors @ vectors.T
    off_diagonal = similarities[~np.eye(len(TEXTS), dtype=bool)]
    assert off_diagonal.max() < 0.99


async def test_texts_sharing_words_are_closer(embedder: Embedder) -> None:
    anchor, near, far = await embedder.embed([
        "the quick brown fox jumps over the lazy dog",
        "a quick brown fox jumped over a sleeping dog",
        "quarterly revenue grew in the european market",
    ])
    assert cosine(anchor, near) > cosine(anchor, far) + 0.1


def test_count_tokens(embedder: Embedder) -> None:
    assert embedder.count_tokens("") == 0
    short = embedder.count_tokens("one two three")
    assert short >= 3
    assert embedder.count_tokens("one two three " * 10) >= 10 * short - 1


async def test_embedding_does_not_block_the_event_loop(embedder: Embedder, blockbuster: BlockBuster) -> None:
    vectors = await embedder.embed(TEXTS * 4)
    assert len(vectors) == len(TEXTS) * 4


# -- OnnxEmbedder specifics ------------------------------------------------------------------------


async def test_onnx_semantic_sanity(onnx_embedder: OnnxEmbedder) -> None:
    query, paraphrase, unrelated = await onnx_embedder.embed([
        "How do I reset my password?", "Steps to change your account password", "The cat sat on the mat",
    ])
    assert cosine(query, paraphrase) > 0.5
    assert cosine(query, paraphrase) > cosine(query, unrelated) + 0.3


async def test_onnx_reads_dimensions_from_the_model(onnx_embedder: OnnxEmbedder) -> None:
    assert onnx_embedder.dimensions == onnx_embedder.native_dimensions == 384


async def test_onnx_smaller_dimensions_truncate_and_renormalise(onnx_embedder: OnnxEmbedder) -> None:
    small = OnnxEmbedder(dimensions=128)
    assert small.dimensions == 128
    full = await onnx_embedder.embed(TEXTS)
    truncated = await small.embed(TEXTS)
    assert truncated.shape == (len(TEXTS), 128)
    expected = full[:, :128] / np.linalg.norm(full[:, :128], axis=1, keepdims=True)
    np.testing.assert_allclose(truncated, expected, atol=1e-5)


def test_onnx_larger_dimensions_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        OnnxEmbedder(dimensions=385)


async def test_onnx_truncates_long_inputs(onnx_embedder: OnnxEmbedder) -> None:
    long_text = " ".join(f"word{i % 50}" for i in range(600))
    assert onnx_embedder.count_tokens(long_text) > onnx_embedder.max_length
    same_prefix, with_more = await onnx_embedder.embed([long_text, long_text + " and a different ending"])
    np.testing.assert_allclose(same_prefix, with_more, atol=1e-5)


def test_onnx_counts_tokens_without_special_tokens(onnx_embedder: OnnxEmbedder) -> None:
    # "hello world" is two WordPiece tokens; [CLS] and [SEP] are not counted.
    assert onnx_embedder.count_tokens("hello world") == 2
    assert onnx_embedder.max_input_tokens == onnx_embedder.max_length - 2


async def test_onnx_user_supplied_model_paths(onnx_embedder: OnnxEmbedder) -> None:
    model_path, tokenizer_path = bundled_model_paths()
    custom = OnnxEmbedder(model_path=model_path, tokenizer_path=tokenizer_path, name="my-model")
    assert custom.name == "my-model"
    np.testing.assert_allclose(await custom.embed(TEXTS), await onnx_embedder.embed(TEXTS), atol=1e-5)


def test_onnx_model_path_needs_a_tokenizer() -> None:
    model_path, _ = bundled_model_paths()
    with pytest.raises(InvalidRequest):
        OnnxEmbedder(model_path=model_path)


def test_onnx_missing_model_file_is_a_clear_error() -> None:
    _, tokenizer_path = bundled_model_paths()
    with pytest.raises(InvalidRequest, match="not found"):
        OnnxEmbedder(model_path="/nonexistent/model.onnx", tokenizer_path=tokenizer_path)


async def test_onnx_token_capped_batches_give_the_same_vectors(onnx_embedder: OnnxEmbedder) -> None:
    capped = OnnxEmbedder(batch_size=64, max_batch_tokens=40)  # batches of 1 to 4 texts here
    np.testing.assert_allclose(await capped.embed(TEXTS * 3), await onnx_embedder.embed(TEXTS * 3), atol=1e-4)


async def test_onnx_queries_do_not_wait_behind_a_bulk_embedding(onnx_embedder: OnnxEmbedder) -> None:
    bulk = [f"{TEXTS[2]} Variant number {i}." for i in range(192)]
    finished: list[str] = []

    async def embed(label: str, texts: list[str], kind: EmbedKind) -> None:
        await onnx_embedder.embed(texts, kind=kind)
        finished.append(label)

    async with anyio.create_task_group() as group:
        group.start_soon(embed, "bulk", bulk, "document")
        await anyio.sleep(0.05)  # the bulk call is under way
        group.start_soon(embed, "query", ["how do I reset my password"], "query")
    assert finished == ["query", "bulk"]


async def test_onnx_create_loads_off_the_event_loop(blockbuster: BlockBuster) -> None:
    embedder = await OnnxEmbedder.create(batch_size=8)
    assert (await embedder.embed(["ok"])).shape == (1, 384)


class OverlapOnnx(OnnxEmbedder):
    """The ONNX adapter, noting how many of its batches run at the same time."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._lock = threading.Lock()
        self.running = self.most = 0

    def _run(self, encodings: list[Encoding]) -> np.ndarray:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.005)  # long enough for the other lane thread to start its batch
            return super()._run(encodings)
        finally:
            with self._lock:
                self.running -= 1


async def test_onnx_runs_a_large_call_s_batches_side_by_side(onnx_embedder: OnnxEmbedder) -> None:
    texts = [f"{text} (copy {i})" for i in range(6) for text in TEXTS]
    parallel = OverlapOnnx(batch_size=4, max_concurrency=2)
    serial = OverlapOnnx(batch_size=4, max_concurrency=1)
    vectors = await parallel.embed(texts)
    np.testing.assert_allclose(vectors, await serial.embed(texts), atol=1e-5)
    np.testing.assert_allclose(vectors, await onnx_embedder.embed(texts), atol=1e-4)
    assert (parallel.most, serial.most) == (2, 1)


class PriorityOnnx(OnnxEmbedder):
    """The ONNX adapter, noting the nice value of the threads that run its batches."""

    seen: set[int]

    def _run(self, encodings: list[Encoding]) -> np.ndarray:
        self.seen.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return super()._run(encodings)


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread nice values are a Linux feature")
async def test_onnx_document_batches_run_below_the_process_priority_and_questions_do_not() -> None:
    embedder = PriorityOnnx(batch_size=4, max_concurrency=2, bulk_nice=5)
    process = os.getpriority(os.PRIO_PROCESS, 0)
    embedder.seen = set()
    await embedder.embed(TEXTS * 2)
    assert embedder.seen == {min(process + 5, 19)}
    embedder.seen = set()
    await embedder.embed(["how do I reset my password"], kind="query")
    assert embedder.seen == {process}


def test_onnx_counts_many_texts_in_one_call_as_one_by_one(onnx_embedder: OnnxEmbedder) -> None:
    texts = [*TEXTS, "", "hello world", "a " * 600]
    assert onnx_embedder.count_tokens_many(texts) == [onnx_embedder.count_tokens(text) for text in texts]


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread nice values are a Linux feature")
async def test_onnx_document_tokenization_runs_below_the_process_priority() -> None:
    embedder = OnnxEmbedder(batch_size=4, max_concurrency=2, bulk_nice=5)
    seen: set[int] = set()
    tokenizer = embedder._tokenizer

    class Recording:
        def encode_batch(self, texts: list[str]) -> list[Encoding]:
            seen.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return tokenizer.encode_batch(texts)

    embedder._tokenizer = Recording()  # type: ignore[assignment]
    await embedder.embed(TEXTS * 2)
    assert seen == {min(os.getpriority(os.PRIO_PROCESS, 0) + 5, 19)}


def test_onnx_tokenizes_on_the_calling_thread_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tokenizer's own thread pool is off (it competed with searches at normal priority) unless the
    environment says otherwise."""
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    OnnxEmbedder()
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    OnnxEmbedder()
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
