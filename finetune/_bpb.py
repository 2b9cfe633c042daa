"""Bits per byte, computed the way lm-evaluation-harness scores rolling log-likelihood.

The paper reports bits per byte from lm-evaluation-harness, so the numbers must be comparable:
the text is tokenised without special tokens, cut into windows of the model's context length
whose *predicted* tokens are disjoint (every token scored exactly once), the first window is
conditioned on a single prefix token (BOS, else EOS), and later windows on the tokens just before
them (a full window of context, also for a short last window). Then
``bits_per_byte = sum(NLL in nats) / UTF-8 bytes / ln 2``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from qdrant_sift.errors import InvalidInputError, ModelLoadError

from ._models import context_length_of

__all__ = ["BpbResult", "bits_per_byte", "prefix_token_id", "rolling_windows"]


@dataclass(frozen=True)
class BpbResult:
    """Bits per byte of one text and the sums it was computed from."""

    bits_per_byte: float
    nll_nats: float
    n_bytes: int
    n_tokens: int


def rolling_windows(
    tokens: Sequence[int], prefix_token: int, max_length: int
) -> Iterator[tuple[list[int], list[int]]]:
    """Yield ``(model_input, targets)`` pairs covering ``tokens`` once each.

    ``model_input`` has at most ``max_length`` tokens and its last ``len(targets)`` positions
    predict ``targets``. Equivalent to lm-eval's ``get_rolling_token_windows`` with
    ``context_len=1`` followed by ``make_disjoint_window`` and the harness's input trimming.
    """
    if max_length < 1:
        raise InvalidInputError(f"max_length must be >= 1, got {max_length}")
    n = len(tokens)
    if n == 0:
        return
    first = min(max_length, n)
    # First window: the prefix token stands in for the missing left context.
    yield [prefix_token, *tokens[: first - 1]], list(tokens[:first])
    done = first
    while done < n:
        end = min(done + max_length, n)
        # Inputs are the max_length tokens just before each target, i.e. shifted left by one.
        start = max(end - max_length - 1, 0)
        yield list(tokens[start : end - 1]), list(tokens[done:end])
        done = end


def prefix_token_id(tokenizer: Any) -> int:
    """The token that conditions the first window: BOS if the tokenizer has one, else EOS."""
    for attr in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    raise ModelLoadError("the tokenizer has neither a BOS nor an EOS token to condition on")


def _model_device(model: Any) -> torch.device:
    try:
        device: torch.device = next(model.parameters()).device
        return device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def bits_per_byte(
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    max_length: int | None = None,
    device: str | torch.device | None = None,
) -> BpbResult:
    """Rolling log-likelihood of ``text`` under ``model`` in bits per UTF-8 byte.

    ``max_length`` defaults to the model's context window (as lm-eval does). The model is run in
    eval mode without gradients; it is not otherwise changed (a LoRA adapter, if any, is used).
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a str, got {type(text).__name__}")
    n_bytes = len(text.encode("utf-8"))
    if n_bytes == 0:
        raise InvalidInputError("cannot compute bits per byte of an empty text")
    window = max_length if max_length is not None else context_length_of(model, tokenizer)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise InvalidInputError(f"max_length must be a positive integer, got {max_length!r}")
    tokens: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    prefix = prefix_token_id(tokenizer)
    dev = torch.device(device) if device is not None else _model_device(model)
    was_training = bool(getattr(model, "training", False))
    model.eval()
    total = 0.0
    try:
        with torch.inference_mode():
            for inputs, targets in rolling_windows(tokens, prefix, window):
                ids = torch.tensor([inputs], dtype=torch.long, device=dev)
                logits = model(input_ids=ids, use_cache=False).logits[0, -len(targets) :]
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                tgt = torch.tensor(targets, dtype=torch.long, device=dev)
                total -= float(logprobs.gather(1, tgt[:, None]).sum())
    finally:
        if was_training:
            model.train()
    return BpbResult(
        bits_per_byte=total / n_bytes / math.log(2),
        nll_nats=total,
        n_bytes=n_bytes,
        n_tokens=len(tokens),
    )
