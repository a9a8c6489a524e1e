"""The torch-free MPNet export (knowledge/embedders/mpnet_export.py): the ONNX graph it writes, run by
onnxruntime, computes what MPNet computes. A tiny MPNet with random weights is run twice: through the
exported graph and through a plain numpy transcription of Hugging Face's ``MPNetModel`` forward pass
(position ids from the padding, T5-style relative position buckets, post-norm layers, exact GELU)."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import onnxruntime as ort

from atrium.knowledge.embedders.mpnet_export import build_graph, read_safetensors, relative_buckets

VOCAB, HIDDEN, HEADS, LAYERS, INNER, POSITIONS, PAD = 30, 16, 2, 2, 32, 64, 1


def bucket(relative_position: int, num_buckets: int = 32, max_distance: int = 128) -> int:
    """HF ``MPNetEncoder.relative_position_bucket`` for one value."""
    ret = 0
    n = -relative_position
    num_buckets //= 2
    ret += (n < 0) * num_buckets
    n = abs(n)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(large, num_buckets - 1)


def weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def r(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    t = {"embeddings.word_embeddings.weight": r(VOCAB, HIDDEN, scale=1.0),
         "embeddings.position_embeddings.weight": r(POSITIONS, HIDDEN, scale=1.0),
         "embeddings.LayerNorm.weight": 1 + r(HIDDEN), "embeddings.LayerNorm.bias": r(HIDDEN),
         "encoder.relative_attention_bias.weight": r(32, HEADS, scale=1.0)}
    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        for name in ("q", "k", "v", "o"):
            t[f"{p}.attention.attn.{name}.weight"] = r(HIDDEN, HIDDEN)
            t[f"{p}.attention.attn.{name}.bias"] = r(HIDDEN)
        t[f"{p}.attention.LayerNorm.weight"], t[f"{p}.attention.LayerNorm.bias"] = 1 + r(HIDDEN), r(HIDDEN)
        t[f"{p}.intermediate.dense.weight"], t[f"{p}.intermediate.dense.bias"] = r(INNER, HIDDEN), r(INNER)
        t[f"{p}.output.dense.weight"], t[f"{p}.output.dense.bias"] = r(HIDDEN, INNER), r(HIDDEN)
        t[f"{p}.output.LayerNorm.weight"], t[f"{p}.output.LayerNorm.bias"] = 1 + r(HIDDEN), r(HIDDEN)
    return t


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def reference(t: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    """HF MPNetModel's last hidden state, transcribed."""
    mask = (ids != PAD).astype(np.int64)
    positions = np.cumsum(mask, axis=1) * mask + PAD
    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][positions]
    x = layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
    seq = ids.shape[1]
    buckets = np.array([[bucket(k - q) for k in range(seq)] for q in range(seq)])
    bias = t["encoder.relative_attention_bias.weight"][buckets].transpose(2, 0, 1)[None]  # 1, heads, q, k
    extended = (1.0 - mask[:, None, None, :]) * -1e4
    d = HIDDEN // HEADS

    def lin(v: np.ndarray, name: str) -> np.ndarray:
        return v @ t[f"{name}.weight"].T + t[f"{name}.bias"]

    def split(v: np.ndarray) -> np.ndarray:
        return v.reshape(v.shape[0], seq, HEADS, d).transpose(0, 2, 1, 3)

    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        q, k, v = (split(lin(x, f"{p}.attention.attn.{n}")) for n in ("q", "k", "v"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + bias + extended
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        x = layer_norm(lin(context, f"{p}.attention.attn.o") + x, t[f"{p}.attention.LayerNorm.weight"],
                       t[f"{p}.attention.LayerNorm.bias"])
        out = lin(gelu(lin(x, f"{p}.intermediate.dense")), f"{p}.output.dense")
        x = layer_norm(out + x, t[f"{p}.output.LayerNorm.weight"], t[f"{p}.output.LayerNorm.bias"])
    return x


def test_relative_buckets_match_mpnets_rule() -> None:
    table = relative_buckets(300)
    for q, k in [(0, 0), (0, 1), (1, 0), (5, 12), (12, 5), (0, 7), (0, 8), (0, 9), (3, 150), (150, 3), (0, 299)]:
        assert table[q, k] == bucket(k - q), (q, k)
    assert table.min() == 0 and table.max() == 31


def test_the_exported_graph_computes_mpnets_hidden_states() -> None:
    tensors = weights(np.random.default_rng(7))
    session = ort.InferenceSession(build_graph(tensors, layers=LAYERS, heads=HEADS).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    # Two rows, the second right-padded (as OnnxEmbedder batches them).
    ids = np.array([[0, 5, 9, 13, 21, 7, 2], [0, 11, 4, 2, PAD, PAD, PAD]], dtype=np.int64)
    mask = (ids != PAD).astype(np.int64)
    (got,) = session.run(["token_embeddings"], {"input_ids": ids, "attention_mask": mask})
    want = reference(tensors, ids)
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=2e-4, rtol=1e-3)
    # A padded row's real tokens do not depend on the padding.
    (alone,) = session.run(["token_embeddings"], {"input_ids": ids[1:, :4], "attention_mask": mask[1:, :4]})
    np.testing.assert_allclose(alone[0], got[1, :4], atol=1e-4)


def test_safetensors_are_read_as_written() -> None:
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([[7, -1]], dtype=np.int64)}
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    body = b""
    for name, value in tensors.items():
        raw = value.tobytes()
        header[name] = {"dtype": "F32" if value.dtype == np.float32 else "I64", "shape": list(value.shape),
                        "data_offsets": [len(body), len(body) + len(raw)]}
        body += raw
    encoded = json.dumps(header).encode()
    read = read_safetensors(struct.pack("<Q", len(encoded)) + encoded + body)
    assert set(read) == {"a", "b"}
    for name, value in tensors.items():
        np.testing.assert_array_equal(read[name], value)
