"""Torch-free input checks shared by the in-process selector and ``RemoteReranker``.

:func:`check_options` is the one rule for the scalar selection options, and :func:`check_shape`
/ :func:`check_kind` / :func:`array_of_numbers` the one rule for array shapes and kinds, so the
remote client refuses what :func:`~qdrant_sift.reranker.select` refuses, with the same class,
before anything is sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from qdrant_sift.errors import ConfigError, InvalidInputError

__all__ = [
    "STRATEGIES",
    "Options",
    "array_of_numbers",
    "check_kind",
    "check_options",
    "check_shape",
]

STRATEGIES: tuple[str, ...] = ("sift", "nearest", "mmr", "random")


@dataclass(frozen=True)
class Options:
    """Checked selection options shared by the single and the batched entry point."""

    n: int
    strategy: str
    lam: float
    alpha: float | None
    unique: bool
    normalize: bool
    diversity: float
    seed: int | None


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _real(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ConfigError(f"{name} must be a real number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return out


def check_options(
    n: Any,
    strategy: Any,
    lam: Any,
    alpha: Any,
    unique: Any,
    normalize: Any,
    diversity: Any,
    seed: Any,
) -> Options:
    """Validate the scalar options; raises :class:`ConfigError` / :class:`InvalidInputError`."""
    if not _is_int(n):
        raise InvalidInputError(f"n must be an int, got {n!r}")
    if n < 0:
        raise InvalidInputError(f"n must be >= 0, got {n}")
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    lam_f = _real(lam, "lam")
    if lam_f <= 0.0:
        raise ConfigError(f"lam (noise variance λ) must be > 0, got {lam!r}")
    alpha_f = None
    if alpha is not None:
        alpha_f = _real(alpha, "alpha")
        if alpha_f <= 0.0:
            raise ConfigError(f"alpha must be > 0 (or None to disable stopping), got {alpha!r}")
    div_f = _real(diversity, "diversity")
    if not 0.0 <= div_f <= 1.0:
        raise ConfigError(f"diversity must lie in [0, 1] (0 = pure relevance), got {diversity!r}")
    if seed is not None and not _is_int(seed):
        raise ConfigError(f"seed must be an int or None, got {seed!r}")
    for flag, name in ((unique, "unique"), (normalize, "normalize")):
        if not isinstance(flag, (bool, np.bool_)):
            raise ConfigError(f"{name} must be a bool, got {flag!r}")
    return Options(
        n=int(n),
        strategy=strategy,
        lam=lam_f,
        alpha=alpha_f,
        unique=bool(unique),
        normalize=bool(normalize),
        diversity=div_f,
        seed=None if seed is None else int(seed),
    )


def check_shape(shape: tuple[int, ...], name: str, *, allow_vector: bool) -> None:
    if allow_vector:
        if len(shape) not in (1, 2):
            raise InvalidInputError(f"{name} must be (d,) or (m, d), got shape {shape}")
        if shape[-1] == 0:
            raise InvalidInputError(f"{name} has dimension d = 0")
        if len(shape) == 2 and shape[0] == 0:
            raise InvalidInputError(f"{name} holds no vectors (shape {shape}); pass at least one")
    elif len(shape) != 2 and not (len(shape) == 1 and shape[0] == 0):
        raise InvalidInputError(
            f"{name} must be 2-D (K, d), got shape {shape}; wrap a single vector as (1, d)"
        )


def check_kind(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind not in "fiu":
        raise InvalidInputError(f"{name} must hold real numbers, got dtype {arr.dtype}")


def array_of_numbers(x: Any, name: str) -> np.ndarray:
    """``np.asarray(x)`` holding real numbers (ragged lists and strings are refused)."""
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{name} is not an array of numbers: {exc}") from exc
    check_kind(arr, name)
    return arr
