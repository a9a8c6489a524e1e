"""User-supplied embedding models: an ONNX file with its tokenizer and pooling, and a GGUF file through
llama.cpp (the bundled 0.5B chat model stands for Qwen3-Embedding: last-token pooling, an instruction
before queries). Real models, real inference."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from atrium.errors import InvalidRequest, ModelUnavailable
from atrium.gateway.local_models import assemble_model
from atrium.gateway.ports import Embedder
from atrium.knowledge.embedders import OnnxEmbedder
from atrium.knowledge.embedders.onnx_minilm import bundled_model_paths

TEXTS = [
    "How do I reset my password?",
    "Steps to change your account password",
    "Quarterly tax filing deadlines for corporations",
    "The cat sat on the mat",
    "",
]
RELATED = ("How do I reset my password?", "Steps to change your account password")
UNRELATED = "Quarterly tax filing deadlines for corporations"
PREFIX = "Instruct: Given a question, retrieve passages that answer it\nQuery: "


def unit_rows(vectors: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4))


@pytest.fixture(scope="module")
def bundled() -> OnnxEmbedder:
    return OnnxEmbedder()


def user_onnx(**options: object) -> OnnxEmbedder:
    model, tokenizer = bundled_model_paths()
    return OnnxEmbedder(model_path=model, tokenizer_path=tokenizer, name="my-model", **options)  # type: ignore[arg-type]


async def test_a_user_onnx_file_with_mean_pooling_reproduces_the_bundled_model(bundled: OnnxEmbedder) -> None:
    user = user_onnx(pooling="mean", output_name="last_hidden_state", max_length=256)
    assert isinstance(user, Embedder) and user.name == "my-model" and user.dimensions == 384
    mine, theirs = await user.embed(TEXTS), await bundled.embed(TEXTS)
    assert (np.sum(mine * theirs, axis=1) > 0.999).all()


@pytest.mark.parametrize("pooling", ["cls", "last_token"])
async def test_cls_and_last_token_pooling_give_other_valid_vectors(bundled: OnnxEmbedder, pooling: str) -> None:
    user = user_onnx(pooling=pooling)
    vectors, mean = await user.embed(TEXTS), await bundled.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32 and unit_rows(vectors)
    assert np.isfinite(vectors).all()
    assert (np.sum(vectors[:4] * mean[:4], axis=1) < 0.995).all()  # not mean pooling under another name
    np.testing.assert_allclose(await user.embed(TEXTS), vectors, atol=1e-6)  # deterministic
    # Padding must not move the pooled token: a text alone equals the same text in a padded batch.
    np.testing.assert_allclose((await user.embed([TEXTS[3]]))[0], vectors[3], atol=1e-5)


async def test_the_query_prefix_changes_query_vectors_only(bundled: OnnxEmbedder) -> None:
    user = user_onnx(pooling="mean", query_prefix=PREFIX)
    documents, queries = await user.embed(TEXTS[:4]), await user.embed(TEXTS[:4], kind="query")
    np.testing.assert_allclose(documents, await bundled.embed(TEXTS[:4]), atol=2e-3)
    assert (np.sum(documents * queries, axis=1) < 0.99).all()
    np.testing.assert_allclose(queries, await bundled.embed([PREFIX + text for text in TEXTS[:4]]), atol=2e-3)


async def test_normalisation_can_be_turned_off() -> None:
    raw = await user_onnx(pooling="mean", normalize=False).embed(TEXTS[:2])
    assert not unit_rows(raw)
    normalised = await user_onnx(pooling="mean").embed(TEXTS[:2])
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), normalised, atol=1e-5)


def test_bad_user_onnx_options_are_refused_with_a_clear_error() -> None:
    with pytest.raises(InvalidRequest, match="no output 'pooled'"):
        user_onnx(output_name="pooled")
    with pytest.raises(InvalidRequest, match="pooling"):
        user_onnx(pooling="max")


# -- GGUF through llama.cpp --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (extra `local`)")
    try:
        return assemble_model("qwen2.5-coder-0.5b", tmp_path_factory.getbasetemp() / "model-cache")
    except ModelUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
async def gguf(gguf_path: Path) -> Embedder:
    from atrium.knowledge.embedders.gguf import GgufEmbedder

    return await GgufEmbedder.create(gguf_path, name="qwen-last", pooling="last_token", max_length=128,
                                     query_prefix=PREFIX)


async def test_gguf_last_token_vectors_are_normalised_deterministic_and_meaningful(gguf: Embedder) -> None:
    assert isinstance(gguf, Embedder) and gguf.name == "qwen-last" and gguf.dimensions == 896
    vectors = await gguf.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 896) and vectors.dtype == np.float32 and unit_rows(vectors)
    np.testing.assert_array_equal(await gguf.embed(TEXTS), vectors)
    alone = await gguf.embed([TEXTS[0]])
    assert float(alone[0] @ vectors[0]) > 0.999  # batching changes float rounding only
    first, second = await gguf.embed(list(RELATED))
    (unrelated,) = await gguf.embed([UNRELATED])
    assert float(first @ second) > float(first @ unrelated) + 0.1


async def test_gguf_prefix_applies_to_queries_only_and_long_texts_are_cut(gguf: Embedder) -> None:
    documents = await gguf.embed(TEXTS[:2])
    queries = await gguf.embed(TEXTS[:2], kind="query")
    assert (np.sum(documents * queries, axis=1) < 0.99).all()
    np.testing.assert_allclose(await gguf.embed(TEXTS[:2]), documents, atol=1e-6)
    long = await gguf.embed(["word " * 2000])  # far beyond max_length: cut, not an error
    assert long.shape == (1, 896) and unit_rows(long)


async def test_gguf_pooling_mean_and_cls_differ_and_dimensions_truncate(gguf_path: Path) -> None:
    from atrium.knowledge.embedders.gguf import GgufEmbedder

    mean = await GgufEmbedder.create(gguf_path, pooling="mean", max_length=64, dimensions=256)
    assert mean.dimensions == 256 and mean.name == gguf_path.stem
    mean_rows = await mean.embed(TEXTS[:2])
    assert mean_rows.shape == (2, 256) and unit_rows(mean_rows)
    cls = await GgufEmbedder.create(gguf_path, pooling="cls", max_length=64, dimensions=256)
    assert (np.sum(mean_rows * await cls.embed(TEXTS[:2]), axis=1) < 0.99).all()
    with pytest.raises(InvalidRequest, match="dimensions"):
        GgufEmbedder(gguf_path, dimensions=4096)
