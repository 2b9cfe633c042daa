"""The language model's own last-layer hidden states as an embedding, for SIFT's kernel.

SIFT's uncertainty is only as good as the geometry it is computed in. The authors' follow-up
work takes the kernel from the fine-tuned model itself (last layer, L2-normalised), so the
"information" a chunk carries is measured in the space the model learns in, while recall can stay
on the collection's own (usually much cheaper) embedding.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from qdrant_sift.errors import ConfigError, InvalidInputError

__all__ = ["POOLINGS", "ModelEmbedder"]

#: ``mean``: the mean of the last layer over the text's tokens; ``last``: the last token's state
#: (a causal model's summary of the whole text).
POOLINGS: tuple[str, ...] = ("mean", "last")


class ModelEmbedder:
    """Embeds texts with a causal LM's last hidden layer, pooled and L2-normalised.

    Implements the ``Embedder`` protocol (``dim``, ``embed_documents``, ``embed_query``). The
    adapter, if the model carries one, is disabled while embedding, so the kernel is always the
    base model's, whatever the tuner did before. Texts longer than ``max_tokens`` are cut.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        pooling: str = "mean",
        max_tokens: int = 512,
        batch_size: int = 8,
    ) -> None:
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigError(f"max_tokens must be a positive int, got {max_tokens!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
        config = getattr(model, "config", None)
        hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
        if not isinstance(hidden, int) or not callable(model):
            raise ConfigError(
                f"{type(model).__name__} is not a transformers model with a hidden size; "
                "ModelEmbedder cannot pool it"
            )
        pad = getattr(tokenizer, "pad_token_id", None)
        pad = pad if pad is not None else getattr(tokenizer, "eos_token_id", None)
        if not callable(tokenizer) or pad is None:
            raise ConfigError(
                "the tokenizer has neither a pad nor an eos token to pad batches with"
            )
        self._pad = int(pad)
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self._dim = int(hidden)
        self.name_or_path = f"{getattr(config, '_name_or_path', '') or 'model'}#{pooling}"

    @property
    def dim(self) -> int:
        return self._dim

    @functools.cached_property
    def kernel_id(self) -> str:
        """What this embedder's vectors are, recorded with stored kernel vectors so that a
        collection never mixes two kernels: the pooling, the size, and a fingerprint of the
        base model's input embeddings (the same weights give the same id on any machine,
        wherever the model lives; an adapter never changes them; weights cast to another
        dtype are other weights)."""
        digest = hashlib.sha256()
        try:
            weight = self.model.get_input_embeddings().weight
            digest.update(weight[:8].detach().to("cpu", torch.float32).numpy().tobytes())
            digest.update(str(tuple(weight.shape)).encode())
        except (AttributeError, TypeError, RuntimeError):  # not a transformers model: its name
            digest.update(self.name_or_path.encode())
        return f"model-{self.pooling}:{self._dim}:{digest.hexdigest()[:16]}"

    def _encode(self, texts: list[str]) -> list[list[int]]:
        out = []
        for i, text in enumerate(texts):
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if not ids:
                raise InvalidInputError(f"text {i} has no tokens to embed")
            out.append(ids[: self.max_tokens])
        return out

    def _device(self) -> torch.device:
        device: torch.device = next(self.model.parameters()).device
        return device

    @torch.inference_mode()
    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit rows."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InvalidInputError("texts must be a sequence of str")
        items = self._encode(list(texts))
        out = np.zeros((len(items), self._dim), np.float32)
        disable = getattr(self.model, "disable_adapter", None)
        was_training = bool(getattr(self.model, "training", False))
        self.model.eval()
        dev = self._device()
        # Short texts first, so a batch pads little; results go back to their own rows.
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        try:
            with disable() if callable(disable) else contextlib.nullcontext():
                for start in range(0, len(order), self.batch_size):
                    rows = order[start : start + self.batch_size]
                    width = max(len(items[i]) for i in rows)
                    ids = torch.full((len(rows), width), self._pad, dtype=torch.long)
                    mask = torch.zeros((len(rows), width), dtype=torch.long)
                    for r, i in enumerate(rows):  # right padding: position ids stay 0..len-1
                        ids[r, : len(items[i])] = torch.tensor(items[i])
                        mask[r, : len(items[i])] = 1
                    hidden = self.model(
                        input_ids=ids.to(dev),
                        attention_mask=mask.to(dev),
                        output_hidden_states=True,
                        use_cache=False,
                    ).hidden_states[-1]
                    hidden = hidden.float()
                    m = mask.to(dev).unsqueeze(-1).float()
                    if self.pooling == "mean":
                        pooled = (hidden * m).sum(1) / m.sum(1)
                    else:
                        last = mask.sum(1).to(dev) - 1
                        pooled = hidden[torch.arange(len(rows), device=dev), last]
                    out[rows] = pooled.cpu().numpy()
        finally:
            if was_training:
                self.model.train()
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: np.ndarray = out / np.maximum(norms, 1e-12)
        return unit

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32 unit vector."""
        if not isinstance(text, str):
            raise InvalidInputError(f"query must be a str, got {type(text).__name__}")
        row: np.ndarray = self.embed_documents([text])[0]
        return row

    def __repr__(self) -> str:
        return f"ModelEmbedder({self.name_or_path!r}, dim={self._dim})"
