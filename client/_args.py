"""Argument checks for :meth:`SiftClient.adapt_and_generate` and :meth:`SiftClient.search`.

Everything a call is given is checked here, before the first embedding, recall, LoRA step or
model load, so a bad argument costs nothing and fails with a typed error naming it: options of
the selection go through the reranker's own :func:`check_options` (one rule for local and
remote selection), generation keyword arguments through a table of known names and ranges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from qdrant_sift.errors import ConfigError, InvalidInputError

__all__ = ["check_generation", "check_positive_int", "check_retrieval"]


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum``; :class:`InvalidInputError` for a non-int or bool."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise InvalidInputError(f"{name} must be an int, got {value!r}")
    out = int(value.__index__())
    if out < minimum:
        raise InvalidInputError(f"{name} must be >= {minimum}, got {out}")
    return out


def check_retrieval(
    *,
    prompt: Any,
    n: Any,
    k: Any,
    both_directions: Any,
    filter_check: Callable[[Any], Any] | None,
    filter: Any,
) -> None:
    """Prompt, n, k, both_directions and filter (translated by the store, or refused)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInputError("prompt must be a non-empty string")
    if isinstance(n, bool) or not hasattr(n, "__index__") or int(n) < 0:
        raise ConfigError(f"n must be an int >= 0, got {n!r}")
    if isinstance(k, bool) or not hasattr(k, "__index__") or int(k) <= 0:
        raise ConfigError(f"k must be an int > 0, got {k!r}")
    if not isinstance(both_directions, bool):
        raise ConfigError(f"both_directions must be a bool, got {both_directions!r}")
    if filter is not None and filter_check is not None:
        filter_check(filter)


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or (
        not isinstance(value, (int, float)) and not hasattr(value, "__float__")
    ):
        raise ConfigError(f"{name} must be a real number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return out


def _positive(name: str, value: Any) -> None:
    if _real(value, name) <= 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


def _unit(name: str, value: Any) -> None:
    if not 0 < _real(value, name) <= 1:
        raise ConfigError(f"{name} must lie in (0, 1], got {value!r}")


def _unit_closed(name: str, value: Any) -> None:
    if not 0 <= _real(value, name) <= 1:
        raise ConfigError(f"{name} must lie in [0, 1], got {value!r}")


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be a bool, got {value!r}")


def _count(minimum: int) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        try:
            check_positive_int(value, name, minimum=minimum)
        except InvalidInputError as exc:
            raise ConfigError(str(exc)) from exc

    return check


def _token_ids(name: str, value: Any) -> None:
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        _count(0)(name, v)


def _real_any(name: str, value: Any) -> None:
    _real(value, name)


def _early_stopping(name: str, value: Any) -> None:
    if not isinstance(value, bool) and value != "never":
        raise ConfigError(f"{name} must be a bool or 'never', got {value!r}")


#: Generation keyword arguments checked by value; other names must be known to transformers.
_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "chat_template": _flag,
    "do_sample": _flag,
    "use_cache": _flag,
    "temperature": _positive,
    "repetition_penalty": _positive,
    "top_p": _unit,
    "typical_p": _unit,
    "min_p": _unit_closed,
    "top_k": _count(0),
    "num_beams": _count(1),
    "num_beam_groups": _count(1),
    "no_repeat_ngram_size": _count(0),
    "min_new_tokens": _count(0),
    "length_penalty": _real_any,
    "early_stopping": _early_stopping,
    "eos_token_id": _token_ids,
    "pad_token_id": _token_ids,
    "bos_token_id": _token_ids,
}
#: Refused: the answer is one sequence, and its length is ``max_new_tokens``.
_REFUSED = {
    "max_length": "use max_new_tokens",
    "num_return_sequences": "adapt_and_generate answers with one sequence",
    "input_ids": "the prompt is the input",
    "attention_mask": "the prompt is the input",
}


def check_generation(max_new_tokens: Any, progress: Any, kwargs: Mapping[str, Any]) -> None:
    """``max_new_tokens`` (int ≥ 1), ``progress`` (callable or None) and every generation
    keyword argument (known to transformers, value in range)."""
    check_positive_int(max_new_tokens, "max_new_tokens")
    if progress is not None and not callable(progress):
        raise InvalidInputError(f"progress must be a callable or None, got {progress!r}")
    if not kwargs:
        return
    known = _known_generation_names()
    for name, value in kwargs.items():
        if name in _REFUSED:
            raise ConfigError(f"generation argument {name!r} is not accepted: {_REFUSED[name]}")
        if name in _CHECKS:
            _CHECKS[name](name, value)
        elif name not in known:
            raise ConfigError(
                f"unknown generation argument {name!r} (not a transformers GenerationConfig "
                "field or generate() parameter)"
            )
    min_new = kwargs.get("min_new_tokens")
    if min_new is not None and int(min_new) > int(max_new_tokens):
        raise ConfigError(
            f"min_new_tokens ({min_new}) must not exceed max_new_tokens ({max_new_tokens})"
        )


def _known_generation_names() -> frozenset[str]:
    import inspect

    from transformers import GenerationConfig, GenerationMixin

    params = set(inspect.signature(GenerationMixin.generate).parameters)
    params -= {"self", "inputs", "kwargs"}
    return frozenset(GenerationConfig().to_dict()) | frozenset(params)
