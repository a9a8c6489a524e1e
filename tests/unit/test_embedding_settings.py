"""The ``embedding`` settings: what each provider needs, refused early with a message naming the setting;
the factory builds the configured adapter with the user's options."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from atrium.knowledge.embedders import HashEmbedder, OnnxEmbedder
from atrium.knowledge.embedders.factory import build_embedder
from atrium.knowledge.embedders.onnx_minilm import bundled_model_paths
from atrium.knowledge.settings import EmbeddingSettings


@pytest.mark.parametrize(("values", "message"), [
    ({"provider": "gguf"}, "embedding.model_path"),
    ({"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}, "embedding.dimensions"),
    ({"provider": "openai", "model": "m", "dimensions": 64}, "embedding.base_url"),
    ({"provider": "onnx", "pooling": "max"}, "pooling"),
])
def test_incomplete_embedding_settings_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EmbeddingSettings(**values)


def test_the_factory_passes_the_user_model_options() -> None:
    model, tokenizer = bundled_model_paths()
    embedder = build_embedder(EmbeddingSettings(provider="onnx", model_path=model, tokenizer_path=tokenizer,
                                                name="user-minilm", pooling="cls", normalize=False, max_length=64,
                                                output_name="last_hidden_state", query_prefix="q: "))
    assert isinstance(embedder, OnnxEmbedder)
    assert (embedder.name, embedder.pooling, embedder.normalize, embedder.max_length, embedder.query_prefix) == (
        "user-minilm", "cls", False, 64, "q: ")
    hashed = build_embedder(EmbeddingSettings(provider="hash", dimensions=64, name="h", query_prefix="q: "))
    assert isinstance(hashed, HashEmbedder)
    assert (hashed.name, hashed.dimensions, hashed.query_prefix) == ("h", 64, "q: ")
    with pytest.raises(ValueError, match="HTTP client"):
        build_embedder(EmbeddingSettings(provider="openai", base_url="http://127.0.0.1:9/v1", model="m",
                                         dimensions=64))
